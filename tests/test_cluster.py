"""``python -m llm_embed.cluster``: a corpus into assignments, cluster terms and an HTML map, on a
tiny random model (the numbers are the real scikit-learn and UMAP code paths)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_errors import check_error
from sklearn.metrics import v_measure_score
from test_evaluate import TOPICS, topic_corpus

from llm_embed._cli import run_cli
from llm_embed.analysis import clusters as cl
from llm_embed.analysis.cluster_page import map_figure
from llm_embed.cluster import cli_main


def cluster(args: list[str]) -> int:
    return run_cli(lambda: cli_main([*args, "--no-progress"]))


@pytest.fixture
def corpus(tmp_path):
    """The topic texts as a labelled JSONL file."""
    texts, labels = topic_corpus()
    path = tmp_path / "topics.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": t, "topic": y}) + "\n" for t, y in zip(texts, labels, strict=True)
        ),
        encoding="utf-8",
    )
    return path


def test_cluster_writes_assignments_terms_and_a_page_with_k_clusters(
    tiny_model_dir, tmp_path, corpus, capsys
):
    out = tmp_path / "report"
    assert cluster(["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out),
                    "--k", "3", "--labels", "topic"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    texts, labels = topic_corpus()
    rows = pq.read_table(out / "assignments.parquet").to_pylist()
    assert [r["text"] for r in rows] == texts and [r["id"] for r in rows] == list(range(1, 37))
    assert {r["cluster"] for r in rows} == {0, 1, 2}
    assert all(r["distance"] >= 0 for r in rows)
    lines = (out / "assignments.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    report = json.loads((out / "clusters.json").read_text(encoding="utf-8"))
    assert report["clusters"] == 3 and sum(report["sizes"].values()) == len(texts)
    assert report["v_measure"] == round(v_measure_score(labels, [r["cluster"] for r in rows]), 4)
    for entry in report["cluster_table"]:
        members = {r["text"] for r in rows if r["cluster"] == entry["cluster"]}
        assert entry["size"] == len(members)
        assert entry["terms"] and len(entry["representatives"]) == min(3, len(members))
        assert set(entry["representatives"]) <= members
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in page and "<script src=" not in page  # self-contained
    assert page.count('<table class="cluster">') == 3
    assert "V-measure against --labels" in printed and str(out / "report.html") in printed


def test_k_is_the_best_silhouette_and_the_curve_is_logged(tiny_model_dir, tmp_path, corpus, caplog):
    out = tmp_path / "report"
    with caplog.at_level(logging.INFO, logger="llm_embed"):
        assert cluster(["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out),
                        "--k-range", "2..5"]) == 0  # fmt: skip
    report = json.loads((out / "clusters.json").read_text(encoding="utf-8"))
    curve = {int(k): v for k, v in report["silhouette"].items()}
    assert sorted(curve) == [2, 3, 4, 5]
    assert report["clusters"] == max(curve, key=curve.get)
    assert all(f"k={k}: silhouette" in caplog.text for k in curve)
    assert "Choosing k" in (out / "report.html").read_text(encoding="utf-8")


def test_a_second_run_reuses_the_embeddings_until_the_input_changes(
    tiny_model_dir, tmp_path, corpus, caplog
):
    out = tmp_path / "report"
    args = ["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out)]
    assert cluster([*args, "--k", "2"]) == 0
    first = np.load(out / "embeddings.npy")
    with caplog.at_level(logging.INFO, logger="llm_embed"):
        assert cluster([*args, "--k", "3"]) == 0
    assert "reused" in caplog.text
    assert json.loads((out / "clusters.json").read_text(encoding="utf-8"))["clusters"] == 3
    corpus.write_text(
        corpus.read_text(encoding="utf-8").replace("sport", "tennis"), encoding="utf-8"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llm_embed"):
        assert cluster([*args, "--k", "3"]) == 0
    assert "reused" not in caplog.text
    assert not np.array_equal(np.load(out / "embeddings.npy"), first)


def test_hdbscan_finds_its_own_clusters(tiny_model_dir, tmp_path, corpus):
    out = tmp_path / "report"
    assert cluster(["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out),
                    "--method", "hdbscan", "--min-cluster-size", "3"]) == 0  # fmt: skip
    report = json.loads((out / "clusters.json").read_text(encoding="utf-8"))
    rows = pq.read_table(out / "assignments.parquet").to_pylist()
    assert report["method"] == "hdbscan" and report["silhouette"] == {}
    assert report["clusters"] == len({r["cluster"] for r in rows} - {cl.NOISE})
    noise = [r for r in rows if r["cluster"] == cl.NOISE]
    assert report.get("noise", 0) == len(noise) and all(r["distance"] is None for r in noise)


def test_top_terms_are_the_words_that_set_a_cluster_apart():
    texts, labels = topic_corpus()
    ids = np.array([TOPICS.index(y) for y in labels])
    terms = cl.top_terms(texts, ids)
    assert [terms[i][0] for i in range(len(TOPICS))] == list(TOPICS)
    assert cl.top_terms(["!!", "??", "..."], np.array([0, 1, 1])) == {0: [], 1: []}


def test_the_map_holds_one_point_per_text():
    texts, labels = topic_corpus()
    ids = np.array([TOPICS.index(y) for y in labels])
    points = np.random.default_rng(0).normal(size=(len(texts), 2))
    figure = map_figure(points, ids, texts, {0: ["sport"]})
    assert sum(len(trace.x) for trace in figure.data) == len(texts)
    assert figure.data[0].name.startswith("cluster 0 (12): sport")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "1"], "--k 1 is invalid"),
        (["--k", "40"], "holds 36 texts: clustering into 40 needs more texts than clusters"),
        (["--k-range", "1..4"], "--k-range '1..4' is invalid"),
        (["--k-range", "36..40"], "clustering into 36 needs more texts than clusters"),
        (["--k-range", "5"], "--k-range '5' is invalid"),
        (["--method", "hdbscan", "--k", "3"], "hdbscan finds its own"),
        (["--min-cluster-size", "1", "--method", "hdbscan"], "--min-cluster-size 1 is invalid"),
        (["--labels", "colour"], "no 'colour' label"),
        (["--method", "spectral"], "bad config or argument"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tiny_model_dir, tmp_path, corpus, capsys, extra, message
):
    out = tmp_path / "report"
    code = cluster(["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    check_error(code, err, message, command="cluster")
    assert "\n" not in err and not out.exists()


def test_labels_need_a_jsonl_file(tiny_model_dir, tmp_path, capsys):
    texts, _ = topic_corpus()
    plain = tmp_path / "topics.txt"
    plain.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    code = cluster(["--model", tiny_model_dir, "--input", str(plain), "--out", str(out),
                    "--labels", "topic"])  # fmt: skip
    check_error(code, capsys.readouterr().err, "is not .jsonl", command="cluster")
    assert not out.exists()
