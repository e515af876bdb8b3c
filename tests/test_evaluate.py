"""The evaluate command (``llm_embed.evaluate`` -> ``llm_embed.eval.grid``) on a tiny random Llama.

Two in-memory local tasks stand in for the offline suite, so every test runs the real mteb
scoring in well under a second per (configuration, task). The packaged all-MiniLM-L6-v2 is used
where it is installed (skipped otherwise).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_errors import check_error, check_proc
from mteb_reference import mteb_bootstrap_v_measure

from llm_embed._cli import run_cli
from llm_embed.encoder import Encoder
from llm_embed.errors import UserError
from llm_embed.eval import grid as eval_grid
from llm_embed.eval import tasks as eval_tasks
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.plan import DocCaps
from llm_embed.eval.results import VERSIONED
from llm_embed.eval.tasks import LocalClusteringTask, local_task_metadata
from llm_embed.evaluate import cli_main
from llm_embed.prompts import PROMPTS

TOPICS = ("sport", "music", "food")
COLORS = ("red", "green", "blue", "black")
# Filler words around the label word, so a random tiny model separates the labels only partly
# (V-measure strictly between 0 and 1: a mismatch in embeddings or sampling would show).
FILLER = "the a man cat sat on mat stocks fell team won new phone today car driving quickly".split()


def make_corpus(labels: tuple[str, ...], per_label: int) -> tuple[list[str], list[str]]:
    """Seeded texts of five filler words with the label word inserted; labels interleaved."""
    rng = random.Random(0)
    texts, out = [], []
    for _ in range(per_label):
        for label in labels:
            words = rng.sample(FILLER, 5)
            words.insert(rng.randrange(6), label)
            texts.append(" ".join(words))
            out.append(label)
    return texts, out


def topic_corpus() -> tuple[list[str], list[str]]:
    return make_corpus(TOPICS, 12)


def color_corpus() -> tuple[list[str], list[str]]:
    return make_corpus(COLORS, 8)


class TinyTopics(LocalClusteringTask):
    metadata = local_task_metadata("TinyTopics", "Three made-up topics, for tests.")

    def corpus(self) -> tuple[list[str], list[str]]:
        return topic_corpus()


class TinyColors(LocalClusteringTask):
    metadata = local_task_metadata("TinyColors", "Four colours, for tests.")

    def corpus(self) -> tuple[list[str], list[str]]:
        return color_corpus()


@pytest.fixture(autouse=True)
def tiny_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "TinyTopics", TinyTopics)
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "TinyColors", TinyColors)


def evaluate(args: list[str]) -> int:
    """The CLI in-process: exit code as ``python -m llm_embed.evaluate`` would return it."""
    return run_cli(lambda: cli_main([*args, "--no-progress"]))


def read(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


# --- the score is mteb's V-measure of the one encoder path ---------------------------------------


@pytest.mark.parametrize("seed", [42, 7])
def test_cli_v_measure_equals_sklearn_on_encoder_embeddings(tiny_model_dir, tmp_path, seed):
    out = tmp_path / "out"
    args = [
        "--model",
        tiny_model_dir,
        "--tasks",
        "TinyTopics",
        "--pooling",
        "mean",
        "--split",
        "all",
        "--seeds",
        str(seed),
    ]
    assert evaluate([*args, "--prompt", "clustering", "--batch-size", "8", "--out", str(out)]) == 0
    (record,) = read(out)
    texts, labels = topic_corpus()
    encoder = Encoder(tiny_model_dir, pooling="mean", prompt="clustering")
    embeddings = encoder.encode(texts, batch_size=8).numpy()
    expected = mteb_bootstrap_v_measure(embeddings, labels, seed=seed, size=len(texts))
    assert 0.0 < expected < 1.0
    assert record["v_measure"] == pytest.approx(expected, abs=1e-9)
    assert record["pooling"] == "mean" and record["prompt"] == "clustering"
    assert record["prompt_template"] == PROMPTS["clustering"]
    assert record["model"] == tiny_model_dir and record["adapter"] is None
    assert record["seeds"] == [seed] and record["v_measures"] == [record["v_measure"]]
    assert record["split"] == "all" and record["max_documents"] is None
    assert set(record["versions"]) == {*VERSIONED}
    assert record["versions"]["mteb"] and record["git_revision"] and record["date"]


def test_openvino_backend_gives_the_pytorch_score_and_is_recorded(tiny_model_dir, tmp_path):
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--pooling", "mean"]
    assert evaluate([*args, "--out", str(tmp_path / "torch")]) == 0
    assert evaluate([*args, "--inference-backend", "openvino", "--out", str(tmp_path / "ov")]) == 0
    (exact,), (fast,) = read(tmp_path / "torch"), read(tmp_path / "ov")
    assert exact["inference_backend"] == "torch" and fast["inference_backend"] == "openvino"
    assert fast["v_measure"] == pytest.approx(exact["v_measure"], abs=1e-6)



def test_layer_scores_that_hidden_layer_and_is_recorded(tiny_model_dir, tmp_path, capsys):
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--pooling", "mean", "--split", "all", "--seeds", "3"]
    assert evaluate([*args, "--out", str(tmp_path / "last")]) == 0
    assert evaluate([*args, "--layer", "1", "--out", str(tmp_path / "one")]) == 0
    (last,), (one,) = read(tmp_path / "last"), read(tmp_path / "one")
    assert last["layer"] is None and one["layer"] == 1
    texts, labels = topic_corpus()
    vectors = Encoder(tiny_model_dir, pooling="mean", layer=1).encode(texts).numpy()
    assert one["v_measure"] == pytest.approx(
        mteb_bootstrap_v_measure(vectors, labels, seed=3, size=len(texts)), abs=1e-9
    )
    assert one["v_measure"] != pytest.approx(last["v_measure"], abs=1e-6)
    assert "@layer 1" in (tmp_path / "one" / "results.md").read_text()
    capsys.readouterr()
    code = evaluate([*args, "--layer", "99", "--out", str(tmp_path / "bad")])
    check_error(code, capsys.readouterr().err.strip(), "layer=99 is out of range", command="evaluate")


@pytest.mark.usefixtures("minilm_installed")
def test_layer_of_a_sentence_transformers_model_is_refused(tmp_path, capsys):
    args = ["--model", "st:all-minilm-l6-v2", "--tasks", "TinyTopics", "--layer", "2"]
    code = evaluate([*args, "--out", str(tmp_path)])
    check_error(code, capsys.readouterr().err.strip(), "its layer is its own", command="evaluate")


# --- grid: files, one record per (configuration, task), one model load, resume ------------------


def test_grid_writes_all_files_with_one_load_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    loads, calls = [], []
    real_load, real_eval = eval_grid.load_encoder, eval_grid.score_clustering

    def counting_load(*a, **kw):
        loads.append(a[0].label)
        return real_load(*a, **kw)

    def counting_eval(*a, **kw):
        calls.append(a[1])
        return real_eval(*a, **kw)

    monkeypatch.setattr(eval_grid, "load_encoder", counting_load)
    monkeypatch.setattr(eval_grid, "score_clustering", counting_eval)
    out = tmp_path / "grid"
    poolings, prompts = ["last", "mean", "eos"], ["none", "clustering"]
    args = [
        "--model", tiny_model_dir, "--tasks", "TinyTopics,TinyColors", "--max-documents", "24",
        "--poolings", ",".join(poolings), "--prompts", ",".join(prompts), "--out", str(out),
    ]  # fmt: skip
    assert evaluate(args) == 0
    records = read(out)
    assert len(records) == len(poolings) * len(prompts) * 2 == len(calls)
    cells = {(r["pooling"], r["prompt"], r["task"]) for r in records}
    assert cells == {
        (p, q, t) for p in poolings for q in prompts for t in ("TinyTopics", "TinyColors")
    }
    assert {r["max_documents"] for r in records} == {24}
    assert loads == [tiny_model_dir]  # the backbone is loaded once for the grid

    # eos pooling after a swap is the same as an encoder built with it
    (eos_rec,) = [
        r
        for r in records
        if (r["pooling"], r["prompt"], r["task"]) == ("eos", "none", "TinyTopics")
    ]
    direct = evaluate_clustering(
        Encoder(tiny_model_dir, pooling="eos", prompt="none"), ["TinyTopics"], max_documents=24
    )
    assert eos_rec["v_measure"] == pytest.approx(direct["TinyTopics"], abs=1e-9)

    md = (out / "results.md").read_text(encoding="utf-8")
    assert "at most 24 documents" in md
    assert "| model | pooling | prompt | TinyTopics | TinyColors | mean |" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "pooling" not in ln]
    assert len(table) == len(poolings) * len(prompts)
    assert sum(ln.startswith("| **") for ln in table) == 1  # best configuration of the one model
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files behind

    # full resume: nothing loaded, nothing evaluated, records unchanged
    loads.clear()
    calls.clear()
    assert evaluate(args) == 0
    assert loads == [] and calls == [] and read(out) == records

    # partial resume: only the missing cells run
    kept = [r for r in records if not (r["pooling"] == "mean" and r["task"] == "TinyColors")]
    (out / "results.json").write_text(json.dumps(kept), encoding="utf-8")
    assert evaluate(args) == 0
    assert sorted(calls) == [["TinyColors"]] * len(prompts) and len(loads) == 1
    assert len(read(out)) == len(records)

    # other settings are new cells, kept beside the old ones
    calls.clear()
    other = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--max-documents", "20"]
    assert evaluate([*other, "--pooling", "last", "--prompt", "none", "--out", str(out)]) == 0
    assert calls == [["TinyTopics"]] and len(read(out)) == len(records) + 1
    assert "at most 20 documents" in (out / "results.md").read_text(encoding="utf-8")


def test_trained_run_folder_and_adapter_give_the_same_record(tiny_model_dir, tmp_path):
    run = tmp_path / "checkpoints" / "run1"
    Encoder(tiny_model_dir, pooling="weighted_mean", prompt="summary").save(run / "model")
    out = tmp_path / "out"
    assert evaluate(["--model", str(run), "--tasks", "TinyTopics", "--out", str(out)]) == 0
    (as_model,) = read(out)
    assert as_model["model"] == tiny_model_dir  # the backbone named in encoder.json
    assert Path(as_model["adapter"]).resolve() == (run / "model").resolve()
    assert (as_model["pooling"], as_model["prompt"]) == ("weighted_mean", "summary")
    out2 = tmp_path / "out2"
    assert evaluate(["--model", tiny_model_dir, "--adapter", str(run / "model"), "--tasks", "TinyTopics", "--out", str(out2)]) == 0  # fmt: skip
    (as_adapter,) = read(out2)
    assert as_adapter["v_measure"] == pytest.approx(as_model["v_measure"], abs=1e-9)
    assert "run1" in (out2 / "results.md").read_text(encoding="utf-8")


def test_saved_task_prompts_score_as_the_callback_does(tiny_model_dir, tmp_path):
    """A run saved with per-task prompts is scored with them (as its callback scored it, through
    the encoder's own ``task_prompts``), by its export too; ``--prompt`` sets every task's."""
    from llm_embed.inference.export_folder import export_model

    run = tmp_path / "checkpoints" / "run1"
    encoder = Encoder(tiny_model_dir, prompt="none", task_prompts={"TinyColors": "summary"})
    encoder.save(run / "model")
    tasks = ["--tasks", "TinyTopics,TinyColors"]
    assert evaluate(["--model", str(run), *tasks, "--out", str(tmp_path / "a")]) == 0
    records = read(tmp_path / "a")
    templates = {r["task"]: r["prompt_template"] for r in records}
    assert templates == {"TinyTopics": "{text}", "TinyColors": PROMPTS["summary"]}
    callback = evaluate_clustering(Encoder.load(run / "model"), ["TinyTopics", "TinyColors"])
    assert {r["task"]: r["v_measure"] for r in records} == pytest.approx(callback, abs=1e-9)
    export_model(str(run), tmp_path / "export")
    assert evaluate(["--model", str(tmp_path / "export"), *tasks, "--out", str(tmp_path / "b")]) == 0
    assert [r["v_measure"] for r in read(tmp_path / "b")] == pytest.approx([r["v_measure"] for r in records], abs=1e-6)
    out = tmp_path / "c"
    assert evaluate(["--model", str(run), *tasks, "--prompt", "none", "--out", str(out)]) == 0
    assert {r["prompt_template"] for r in read(out)} == {"{text}"}


def test_exported_folder_gives_the_record_of_its_run(tiny_model_dir, tmp_path):
    """An export is scored through llm-embed's own encoder, with the run's pooling and prompt."""
    from llm_embed.inference.export_folder import export_model

    run = tmp_path / "checkpoints" / "run1"
    Encoder(tiny_model_dir, pooling="weighted_mean", prompt="summary").save(run / "model")
    export = tmp_path / "exports" / "run1"
    export_model(str(run), export)
    args = ["--tasks", "TinyTopics"]
    assert evaluate(["--model", str(run), *args, "--out", str(tmp_path / "a")]) == 0
    assert evaluate(["--model", str(export), *args, "--out", str(tmp_path / "b")]) == 0
    (as_run,), (as_export,) = read(tmp_path / "a"), read(tmp_path / "b")
    assert as_export["model"] == str(export)
    assert (as_export["pooling"], as_export["prompt"]) == ("weighted_mean", "summary")
    assert as_export["v_measure"] == pytest.approx(as_run["v_measure"], abs=1e-6)


def test_task_prompts_and_user_templates(tiny_model_dir, tmp_path):
    user = tmp_path / "prompts.yaml"
    user.write_text('topic: "Topic of: {text}"\n', encoding="utf-8")
    per_task = tmp_path / "tasks.yaml"
    per_task.write_text("TinyColors: topic\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics,TinyColors", "--prompt", "none"]
    args += ["--prompts-file", str(user), "--task-prompts", str(per_task), "--out", str(out)]
    assert evaluate(args) == 0
    templates = {r["task"]: r["prompt_template"] for r in read(out)}
    assert templates == {"TinyTopics": "{text}", "TinyColors": "Topic of: {text}"}
    assert {r["prompt"] for r in read(out)} == {"per-task"}
    per_task.write_text("TinyColour: topic\n", encoding="utf-8")  # a typo in a task name
    assert evaluate(args) == 2


# --- bad input: one line, exit code 2, before any model is loaded ---------------------------------


def test_per_task_caps_are_recorded_resumed_and_described(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    real_eval = eval_grid.score_clustering

    def counting_eval(*a, **kw):
        calls.append((a[1][0], kw["max_documents"]))
        return real_eval(*a, **kw)

    monkeypatch.setattr(eval_grid, "score_clustering", counting_eval)
    out = tmp_path / "caps"
    base = ["--model", tiny_model_dir, "--tasks", "TinyTopics,TinyColors", "--out", str(out)]
    assert evaluate([*base, "--max-documents", "30"]) == 0
    assert evaluate([*base, "--max-documents", "30,TinyColors=20"]) == 0
    # the second run re-scores only TinyColors, at its own cap
    assert calls == [("TinyTopics", 30), ("TinyColors", 30), ("TinyColors", 20)]
    records = read(out)
    assert [(r["task"], r["max_documents"]) for r in records] == [
        ("TinyTopics", 30), ("TinyColors", 30), ("TinyColors", 20),
    ]  # fmt: skip
    direct = evaluate_clustering(
        Encoder(tiny_model_dir, pooling="last", prompt="clustering"),
        ["TinyColors"],
        max_documents=20,
    )
    assert records[2]["v_measure"] == pytest.approx(direct["TinyColors"], abs=1e-9)
    md = (out / "results.md").read_text()
    assert "TinyTopics at most 30, TinyColors at most 20 documents" in md
    row = [line for line in md.splitlines() if line.startswith("| **")]
    assert len(row) == 1 and f"{records[2]['v_measure']:.4f}" in row[0]


def test_doc_caps_parse():
    caps = DocCaps.parse("500, BBCNewsArticles=200,WordNetNounGlosses=all")
    assert caps("BBCNewsHeadlines") == 500 and caps("BBCNewsArticles") == 200
    assert caps("WordNetNounGlosses") is None
    assert DocCaps.parse({"BBCNewsArticles": 200})("X") is None
    assert DocCaps.parse(None) == DocCaps() == DocCaps.parse("")
    assert (
        DocCaps.parse(40)
        .describe(["A", "B"])
        .startswith("each task subsampled to at most 40")
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pooling", "nope"], "pooling 'nope' is unknown"),
        (["--poolings", "last,nope"], "pooling 'nope' is unknown"),
        (["--prompt", "nope"], "prompt 'nope' is unknown"),
        (["--tasks", "NoSuchClusteringTask"], "unknown task 'NoSuchClusteringTask'"),
        (["--adapter", "/no/such/run"], "adapter folder '/no/such/run' not found"),
        (["--max-documents", "abc"], "max_documents 'abc' is invalid"),
        (["--max-documents", "1"], "max_documents=1 is invalid"),
        (["--max-documents", "30,TinyTopics=1"], "max_documents=1 for TinyTopics is invalid"),
        (["--max-documents", "30,Elsewhere=20"], "max_documents names tasks not evaluated"),
        (["--batch-size", "0"], "batch_size=0 is invalid"),
        (["--pooling", "last", "--poolings", "mean"], "not both"),
        (["--inference-backend", "onnx"], "inference_backend='onnx' is unknown"),
        (["--seeds", "-1"], "seeds='-1' is invalid"),
        (["--seeds", "3,3"], "seeds='3,3' is invalid"),
        (["--seeds", "x"], "seeds='x' is invalid"),
        (["--split", "train"], "split"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tiny_model_dir, tmp_path, capsys, monkeypatch, extra, message
):
    monkeypatch.setattr(
        eval_grid, "load_encoder", lambda *a: pytest.fail("model loaded on bad input")
    )
    code = evaluate(
        ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--out", str(tmp_path), *extra]
    )
    err = capsys.readouterr().err.strip()
    check_error(code, err, message, command="evaluate")
    assert "\n" not in err


def test_adapter_of_another_backbone_is_refused(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run-other"
    (run / "model").mkdir(parents=True)
    (run / "model" / "encoder.json").write_text(json.dumps({"backbone": "some-other-model"}))
    code = evaluate(["--model", tiny_model_dir, "--adapter", str(run), "--tasks", "TinyTopics"])
    err = capsys.readouterr().err.strip()
    check_error(code, err, "was trained on backbone 'some-other-model'", command="evaluate")
    assert "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate(["--model", tiny_model_dir, "--adapter", str(empty)]) == 2
    assert "holds no encoder.json" in capsys.readouterr().err


def test_module_entry_point_exits_2_with_one_line(run_python):
    proc = run_python("-m", "llm_embed.evaluate", "--model", "x", "--pooling", "nope", timeout=120)
    check_proc(proc, "pooling 'nope' is unknown")
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]


# --- the sentence-transformers baseline goes through the same path --------------------------------


@pytest.mark.usefixtures("minilm_installed")
def test_st_encoder_on_packaged_minilm(tmp_path, tiny_model_dir):
    from llm_embed.inference.st_encoder import STEncoder

    st = STEncoder("all-minilm-l6-v2")
    assert st.name == "all-minilm-l6-v2" and st.embed_dim == 384 and st.pooling_mode == "mean"
    emb = st.encode(["A man is driving a car.", "Someone drives an automobile.", "Stocks fell."])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(emb.norm(dim=-1).numpy(), np.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    # a prompt template wraps the text, exactly as for llm-embed encoders
    wrapped = st.encode(["A man is driving a car."], prompt="clustering")
    direct = st.encode([PROMPTS["clustering"].replace("{text}", "A man is driving a car.")])
    np.testing.assert_allclose(wrapped.numpy(), direct.numpy(), atol=1e-6)
    # truncate_dim: sentence-transformers' own, renormalised; out of range is one line
    short = STEncoder("all-minilm-l6-v2", truncate_dim=64)
    cut = short.encode(["A man is driving a car."])
    assert short.embed_dim == 64 and cut.shape == (1, 64)
    np.testing.assert_allclose(
        cut.numpy(), torch.nn.functional.normalize(emb[:1, :64], dim=-1).numpy(), atol=1e-5
    )
    with pytest.raises(UserError, match="truncate_dim=999 is out of range .* use 1..384"):
        STEncoder("all-minilm-l6-v2", truncate_dim=999)

    # as a baseline row beside a model, through the same evaluate_clustering path
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--baseline", "all-minilm-l6-v2"]
    assert evaluate([*args, "--out", str(out)]) == 0
    base = [r for r in read(out) if r["role"] == "baseline"]
    assert [(r["model"], r["kind"], r["pooling"], r["prompt"]) for r in base] == [
        ("all-minilm-l6-v2", "sentence-transformers", "native", "none")
    ]
    assert base[0]["v_measure"] == pytest.approx(
        evaluate_clustering(st, ["TinyTopics"], task_prompts={"TinyTopics": "{text}"})[
            "TinyTopics"
        ],
        abs=1e-9,
    )
    assert 0.0 < base[0]["v_measure"] <= 1.0
    assert "| **all-minilm-l6-v2** |" in (out / "results.md").read_text(encoding="utf-8")


def test_options_come_from_config_files_and_print_config(tiny_model_dir, tmp_path, capsys):
    """jsonargparse gives evaluate ``--config`` (later files win) and ``--print_config``, as fit has."""
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text(f"model: {tiny_model_dir}\ntasks: TinyTopics\npooling: mean\n")
    overlay.write_text("pooling: nope\nmax_documents: 30\n")
    assert evaluate([f"--config={base}", "--config", str(overlay), "--out", str(tmp_path)]) == 2
    assert "pooling 'nope' is unknown" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli_main(["--config", str(base), "--batch-size", "8", "--print_config"])
    printed = capsys.readouterr().out
    assert done.value.code == 0
    assert "pooling: mean" in printed and "batch_size: 8" in printed and "max_documents" in printed


def test_truncate_dim_is_part_of_each_record_and_row(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    base = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--out", str(out)]
    assert evaluate(base) == 0
    assert evaluate([*base, "--truncate-dim", "8"]) == 0  # a new cell, not a resumed one
    records = read(out)
    assert sorted((r["truncate_dim"] or 0) for r in records) == [0, 8]
    full, cut = sorted(records, key=lambda r: r["truncate_dim"] or 0)
    assert full["v_measure"] != cut["v_measure"]
    want = Encoder(tiny_model_dir, truncate_dim=8)
    assert cut["v_measure"] == pytest.approx(evaluate_clustering(want, ["TinyTopics"])["TinyTopics"])
    assert "last @8d" in (out / "results.md").read_text(encoding="utf-8")


def test_evaluate_draws_a_map_per_task_and_can_skip_them(tiny_model_dir, tmp_path):
    from llm_embed.eval.maps import task_texts

    out = tmp_path / "out"
    assert evaluate(["--model", tiny_model_dir, "--tasks", "TinyTopics,TinyColors", "--out", str(out)]) == 0
    for task in ("TinyTopics", "TinyColors"):
        png = out / f"map-{task}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    texts, labels = task_texts("TinyTopics")
    assert texts and len(texts) == len(labels) and len(set(labels)) >= 2
    none = tmp_path / "none"
    assert evaluate(["--model", tiny_model_dir, "--tasks", "TinyTopics", "--map-samples", "0",
                     "--out", str(none)]) == 0  # fmt: skip
    assert not list(none.glob("map-*.png"))
    assert evaluate(["--model", tiny_model_dir, "--map-samples", "-1", "--out", str(none)]) == 2


# --- packaged baselines: scored once, reused while documents and versions match ------------------


@pytest.mark.usefixtures("minilm_installed")
def test_packaged_baseline_scores_are_cached_and_never_trusted_stale(
    tiny_model_dir, tmp_path, monkeypatch, capfd
):
    from llm_embed.eval import score_cache

    calls = []
    real_eval = eval_grid.score_clustering

    def counting_eval(encoder, tasks, **kw):
        calls.append((encoder.name, tasks[0]))
        return real_eval(encoder, tasks, **kw)

    monkeypatch.setattr(eval_grid, "score_clustering", counting_eval)
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--baseline", "all-minilm-l6-v2"]
    assert evaluate([*args, "--out", str(tmp_path / "a")]) == 0
    minilm_calls = [c for c in calls if "minilm" in c[0].lower()]
    assert len(minilm_calls) == 1
    first = [r for r in read(tmp_path / "a") if r["role"] == "baseline"]
    assert len(first) == 1 and first[0]["documents_sha256"]

    # a fresh output folder: the baseline comes from the cache, in one log line
    calls.clear()
    capfd.readouterr()
    assert evaluate([*args, "--out", str(tmp_path / "b")]) == 0
    assert [c for c in calls if "minilm" in c[0].lower()] == []
    assert len(calls) == 1  # the decoder goes through scoring again ...
    log = capfd.readouterr().err
    assert "loaded all-minilm-l6-v2" not in log
    assert log.count("reused the cached scores from") == 1  # the baseline's record
    # ... and its V-measures come from the encoder score cache (same weights and settings)
    assert log.count("reused the cached scores of these weights and settings") == 1
    (again,) = [r for r in read(tmp_path / "b") if r["role"] == "baseline"]
    assert again["v_measures"] == first[0]["v_measures"]
    table = (tmp_path / "b" / "results.md").read_text(encoding="utf-8")
    assert "Paired differences" in table and "all-minilm-l6-v2" in table

    # other documents (a changed corpus) or a corrupt cache: scored again
    for spoil in ("documents", "corrupt"):
        calls.clear()
        if spoil == "documents":
            monkeypatch.setattr(TinyTopics, "corpus", lambda self: make_corpus(TOPICS, 10))
        else:
            score_cache.cache_path().write_text("{not json", encoding="utf-8")
        assert evaluate([*args, "--out", str(tmp_path / spoil)]) == 0
        assert len([c for c in calls if "minilm" in c[0].lower()]) == 1, spoil


def test_paired_table_marks_differences_whose_interval_excludes_zero():
    from llm_embed.eval.intervals import SeedScores
    from llm_embed.eval.results import Row, paired_lines

    seeds = (1, 2, 3)
    base = Row("minilm", "baseline", "native", "none", {"T": SeedScores(seeds, (0.5, 0.6, 0.55))})
    good = Row("m", "model", "mean", "p", {"T": SeedScores(seeds, (0.6, 0.71, 0.64))})
    same = Row("n", "model", "mean", "p", {"T": SeedScores(seeds, (0.51, 0.59, 0.55))})
    lines = paired_lines([base, good, same], ["T"])
    good_line = next(line for line in lines if line.startswith("| m |"))
    same_line = next(line for line in lines if line.startswith("| n |"))
    assert good_line.count("*") == 2 and "+0.1000" in good_line  # the task and the mean
    assert "*" not in same_line


def test_calibration_on_the_clustered_texts_is_the_encoders_own_calibration_on_them(
    tiny_model_dir, tmp_path
):
    from llm_embed.eval.mteb_adapter import calibrated

    texts, _ = topic_corpus()
    encoder = Encoder(tiny_model_dir, pooling="mean", prompt="none").eval()
    plain = encoder.encode(texts).numpy()
    encoder.calibrate(texts)  # the encoder's own fit, on these texts
    want = encoder.encode(texts).numpy()
    assert calibrated(plain) == pytest.approx(want, abs=1e-5)
    # from vectors made under another calibration (training anchors), the same result
    encoder.calibrate(texts[::3])
    assert calibrated(encoder.encode(texts).numpy(), encoder.dim_scale) == pytest.approx(want, abs=1e-5)

    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--pooling", "mean"]
    assert evaluate([*args, "--out", str(tmp_path / "a")]) == 0
    assert evaluate([*args, "--calibrate-on-texts", "--out", str(tmp_path / "a")]) == 0
    plain_rec, own_rec = read(tmp_path / "a")
    assert (plain_rec["calibrate_on_texts"], own_rec["calibrate_on_texts"]) == (False, True)
    assert plain_rec["v_measures"] != own_rec["v_measures"]
    assert "calibrated on the task's texts" in (tmp_path / "a" / "results.md").read_text()


@pytest.mark.parametrize("bad", [None, "0.5", float("nan")])
def test_a_record_without_a_numeric_score_is_named_in_one_line(tiny_model_dir, tmp_path, capsys, bad):
    args = ["--model", tiny_model_dir, "--tasks", "TinyTopics", "--out", str(tmp_path)]
    assert evaluate(args) == 0
    path = tmp_path / "results.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    records[0]["v_measure"] = bad
    path.write_text(json.dumps(records), encoding="utf-8")
    before = path.read_bytes()
    capsys.readouterr()
    code = evaluate(args)
    err = capsys.readouterr().err.strip()
    check_error(code, err, "results.json record 0", "not a number", "delete that record",
                command="evaluate")  # fmt: skip
    assert path.read_bytes() == before  # nothing rewritten


def test_concurrent_writers_into_one_folder_keep_each_others_records(tiny_model_dir, tmp_path):
    """Two evaluate runs into one --out: each merges its records under a lock, none is lost
    (the second run read results.json before the first one wrote its record)."""
    from llm_embed.eval.results import read_records, write_records

    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--out", str(out), "--seeds", "0", "--map-samples", "0"]
    assert evaluate([*args, "--tasks", "TinyTopics"]) == 0
    (topics,) = read(out)
    path = out / "results.json"
    stale = read_records(path)  # what a second run loaded before the first one finished
    path.unlink()
    assert evaluate([*args, "--tasks", "TinyColors"]) == 0
    write_records(path, stale)  # the slower run writes its (older) view last
    assert sorted(r["task"] for r in read(out)) == ["TinyColors", "TinyTopics"]
    write_records(path, [{**topics, "v_measure": 0.5}])  # a record with a known key replaces its own
    assert [r["v_measure"] for r in read(out) if r["task"] == "TinyTopics"] == [0.5]


def test_a_model_that_gives_nan_is_refused_and_no_record_is_written(nan_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = evaluate(["--model", str(nan_model_dir), "--tasks", "TinyTopics", "--out", str(out)])
    check_error(code, capsys.readouterr().err.strip(), "non-finite vectors", command="evaluate")
    assert not (out / "results.json").exists()
