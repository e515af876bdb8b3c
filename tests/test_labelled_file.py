"""A user's labelled file as a clustering task: ``evaluate --tasks my.jsonl`` (or .csv, .tsv, .parquet).

The file is scored under the suite's protocol, so the same texts give the same numbers as a
built-in task; a bad file is one line, exit code 2, with nothing written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_errors import check_error
from test_evaluate import TinyTopics, evaluate, read, tiny_tasks, topic_corpus  # noqa: F401

from llm_embed.data.labelled_file import read_labelled_file
from llm_embed.errors import UserError
from llm_embed.eval.tasks import FILE_TASKS, register_task_files


@pytest.fixture(autouse=True)
def _forget_files():
    """Each test registers its own files."""
    before = dict(FILE_TASKS)
    yield
    FILE_TASKS.clear()
    FILE_TASKS.update(before)


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL, CSV, TSV or Parquet file, by the suffix of ``path``."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ","
            )
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def topic_rows(text: str = "text", label: str = "label") -> list[dict]:
    texts, labels = topic_corpus()
    return [{text: t, label: y} for t, y in zip(texts, labels, strict=True)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_labelled_file_scores_as_the_same_texts_as_a_built_in_task(
    tiny_model_dir, tmp_path, suffix
):
    data = write(tmp_path / f"topics{suffix}", topic_rows())
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--pooling", "mean", "--seeds", "0,1", "--map-samples", "0"]
    assert evaluate([*args, "--tasks", f"TinyTopics,{data}", "--out", str(out)]) == 0
    built_in, from_file = read(out)
    assert (built_in["task"], from_file["task"]) == ("TinyTopics", "topics")
    assert from_file["split"] == "dev"
    assert 0.0 < from_file["v_measure"] < 1.0
    assert from_file["v_measures"] == built_in["v_measures"]
    assert from_file["documents_sha256"] == built_in["documents_sha256"]
    assert "topics" in (out / "results.md").read_text(encoding="utf-8")


def test_renamed_columns_and_tsv(tmp_path):
    data = write(tmp_path / "t.tsv", topic_rows("body", "topic"))
    texts, labels = read_labelled_file(data, text_field="body", label_field="topic")
    assert (texts, labels) == topic_corpus()
    with pytest.raises(UserError, match="has no column 'text'.*--text-field"):
        read_labelled_file(data)


def test_an_edited_file_is_scored_again_not_resumed(tiny_model_dir, tmp_path):
    rows = topic_rows()
    data = write(tmp_path / "topics.jsonl", rows)
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--tasks", str(data), "--out", str(out), "--split", "all",
            "--seeds", "0", "--map-samples", "0"]  # fmt: skip
    assert evaluate(args) == 0
    (first,) = read(out)
    write(data, rows[: len(rows) // 2])
    assert evaluate(args) == 0
    (second,) = read(out)
    assert second["documents_sha256"] != first["documents_sha256"]
    assert second["v_measures"] != first["v_measures"]


def _rows_with(**change) -> list[dict]:
    rows = topic_rows()
    rows[3] = {**rows[3], **change}
    return rows


BAD_FILES = {
    "missing column": (
        "x.jsonl",
        lambda p: write(p, [{"body": r["text"], "label": r["label"]} for r in topic_rows()]),
        "has no column 'text' (columns: body, label): rename the column or pass --text-field",
    ),
    "one label": (
        "x.csv",
        lambda p: write(p, [{**r, "label": "same"} for r in topic_rows()]),
        "one label only ('same')",
    ),
    "fewer texts than labels": (
        "x.jsonl",
        lambda p: write(p, [{"text": f"t{i}", "label": f"l{i}"} for i in range(3)]),
        "3 texts for 3 labels",
    ),
    "not utf-8": (
        "x.csv",
        lambda p: p.write_bytes("text,label\ncaf\xe9 au lait,food\n".encode("latin-1")),
        "is not UTF-8 (byte 14, line 2)",
    ),
    "empty text": ("x.jsonl", lambda p: write(p, _rows_with(text="  ")), "line 4): empty text"),
    "null label": (
        "x.parquet",
        lambda p: write(p, _rows_with(label=None)),
        "row 4): the label is empty",
    ),
    "lone surrogate": (
        "x.jsonl",
        lambda p: p.write_text(
            json.dumps({"text": "a\ud800", "label": "y"}) + "\n", encoding="utf-8"
        ),
        "x.jsonl:1: a lone surrogate escape",
    ),
    "CR line ends": (
        "x.csv",
        lambda p: p.write_bytes(b"text,label\rone,a\rtwo,b\rthree,b\r"),
        "CR only",
    ),
    "not parquet": ("x.parquet", lambda p: p.write_text("text,label\n"), "not a readable Parquet"),
    "missing file": ("gone.jsonl", lambda p: None, "labelled file"),
    "suite name": (
        "BBCNewsHeadlines.jsonl",
        lambda p: write(p, topic_rows()),
        "a suite task's name",
    ),
    "too few for the split": (
        "x.jsonl",
        lambda p: write(p, [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(5)]),
        "x (dev split): 2 texts of 2 label(s)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys, case):
    name, make, message = BAD_FILES[case]
    data = tmp_path / name
    make(data)
    out = tmp_path / "out"
    code = evaluate(["--model", tiny_model_dir, "--tasks", str(data), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    check_error(code, err, message, command="evaluate")
    assert "\n" not in err
    assert not out.exists()


def test_two_files_of_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    first = write(tmp_path / "a" / "topics.jsonl", topic_rows())
    second = write(tmp_path / "topics.csv", topic_rows())
    with pytest.raises(UserError, match="would both be task topics"):
        register_task_files([str(first), str(second)])
    assert register_task_files(["TinyTopics", str(first)]) == ["TinyTopics", "topics"]
    assert FILE_TASKS["topics"].texts == tuple(topic_corpus()[0])
