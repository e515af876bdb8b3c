"""The strict task-talk rule drops positives about "the teacher" or "a question", not content."""

from __future__ import annotations

import json

import pytest
from cli_errors import check_error

from llm_embed._cli import run_cli
from llm_embed.data.filters import talks_about_the_task
from llm_embed.data.meta_filter import main, split_task_talk


@pytest.mark.parametrize(
    "positive",
    [
        "The teacher explains that the bottle burst inwards.",
        "A question like: why did the bottle burst?",
        "The answer would be that it burst inwards.",
        "In simpler words, it means to burst inwards.",
        "You would ask: what broke?",
        "I'd respond that it burst.",
    ],
)
def test_task_talk_is_caught(positive):
    assert talks_about_the_task("the bottle imploded", positive)


@pytest.mark.parametrize(
    "positive",
    [
        "The glass container collapsed inwards under pressure.",
        "His questionable answers annoyed the court.",  # "questionable", "answers": other words
        "Teachers often grade papers at night.",  # no article before it: content, not a persona
    ],
)
def test_content_is_kept(positive):
    assert not talks_about_the_task("the bottle imploded", positive)


def test_words_the_source_already_has_do_not_count():
    assert not talks_about_the_task("the teacher graded the essay", "The teacher marked the paper.")
    assert talks_about_the_task("the teacher graded the essay", "A question: who graded it?")


def test_cli_writes_the_kept_pairs_in_order(tmp_path, capsys):
    pairs = [
        {"anchor": "run fast", "positive": "move quickly on foot", "instruction": 1},
        {"anchor": "run fast", "positive": "The teacher runs fast.", "instruction": 2},
        {"anchor": "a cold wind", "positive": "a chilly breeze", "instruction": 0},
    ]
    src, out = tmp_path / "p.jsonl", tmp_path / "kept.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    main(["--pairs", str(src), "--out", str(out)])
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert (kept, [pairs[1]]) == split_task_talk(pairs) == ([pairs[0], pairs[2]], [pairs[1]])
    assert "kept 2 of 3 pairs (dropped by instruction: 2: 1)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["overwrite", "missing", "all dropped"])
def test_cli_bad_input_is_one_line(tmp_path, capsys, case):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"anchor": "a", "positive": "b c d e"}) + "\n")
    talk = tmp_path / "talk.jsonl"
    talk.write_text(json.dumps({"anchor": "run", "positive": "The teacher runs."}) + "\n")
    pairs, out, match = {
        "overwrite": (src, src, "is the input file"),
        "missing": (tmp_path / "none.jsonl", tmp_path / "out.jsonl", "not found"),
        "all dropped": (talk, tmp_path / "out.jsonl", "talks about the task: no pair to write"),
    }[case]
    code = run_cli(lambda: main(["--pairs", str(pairs), "--out", str(out)]))
    check_error(code, capsys.readouterr().err, match, command="data.meta_filter")
    assert src.read_text().count("\n") == 1 and not (tmp_path / "out.jsonl").exists()
