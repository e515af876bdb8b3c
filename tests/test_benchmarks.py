"""Every benchmark runs end to end at a tiny size, so the scripts cannot rot.

The numbers at this size mean nothing (a 2-layer random model on a busy CPU); the real ones are
in docs/performance.md with the commands that produced them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    """``benchmarks`` is a folder of scripts beside the package, not installed: import it from the checkout."""
    monkeypatch.syspath_prepend(str(ROOT))


def test_encode_benchmark_quick(capsys):
    from benchmarks import encode

    result = encode.main(["--quick"])  # on a CPU the OpenVINO row is there by default
    names = [r["encoder"] for r in result["rows"]]
    assert names == ["llm-embed", "sentence-transformers", "llm-embed openvino"]
    assert result["max_abs_diff"] < 1e-4  # same tokens, same pooling: the same embeddings
    assert result["speedup"] > 0 and all(0 < r["of matmul peak"] < 1 for r in result["rows"])
    assert result["rows"][2]["min cosine to float32"] > 0.99999  # the float32 numbers
    assert 0 < result["padding_share"] < 1 and 0 < result["prefix_share"] < 1
    out = capsys.readouterr().out
    assert "llm-embed / sentence-transformers throughput" in out and "levers not built" in out


def test_encode_benchmark_fast_paths_and_weighted_mean_agree_with_sentence_transformers(capsys):
    from benchmarks import encode

    result = encode.main(["--quick", "--paths", "bf16,int8", "--pooling", "weighted_mean"])
    rows = {r["encoder"]: r for r in result["rows"]}
    assert list(rows) == ["llm-embed", "sentence-transformers", "llm-embed bf16", "llm-embed int8"]
    assert result["max_abs_diff"] < 1e-4  # sentence-transformers' weightedmean is our weighted_mean
    for name in ("llm-embed bf16", "llm-embed int8"):  # approximations: close, not equal
        assert 0.9 < rows[name]["min cosine to float32"] < 1.0
        assert rows[name]["vs sentence-transformers"] > 0
    with pytest.raises(SystemExit):
        encode.main(["--quick", "--paths", "fp8"])
    assert "unknown --paths ['fp8']" in capsys.readouterr().err


def test_encode_benchmark_suite_scores_each_path_and_reuses_vectors(tiny_model_dir, monkeypatch):
    from benchmarks import encode
    from llm_embed.encoder import Encoder

    calls: list[int] = []
    real = Encoder.encode

    def counting(self, texts, **kwargs):
        calls.append(len(texts))
        return real(self, texts, **kwargs)

    monkeypatch.setattr(Encoder, "encode", counting)
    suite = encode.suite_delta(
        tiny_model_dir, ["openvino"], seeds=(42, 43), tasks=["WordNetNounGlosses"]
    )
    assert set(suite["scores"]) == {"float32", "openvino"}
    assert set(suite["scores"]["openvino"]) == {42, 43}
    # the same float32 numbers: the same clusters, whatever the seed
    assert abs(suite["delta_mean"]["openvino"]["WordNetNounGlosses"]) < 1e-3
    assert suite["speedup"]["openvino"] > 0
    # per path one pass over the dev texts: the second seed reuses every vector
    assert len(calls) == 2 and calls[0] == calls[1]


def test_train_step_benchmark_quick(capsys):
    from benchmarks import train_step

    result = train_step.main(["--quick"])
    rows = {(r["batch"], r["GradCache"].startswith("yes")): r for r in result["rows"]}
    assert set(rows) == {(4, False), (8, False), (4, True), (8, True)}
    assert all(isinstance(r["step s"], float) and r["step s"] > 0 for r in rows.values())
    assert "memory vs no cache" in capsys.readouterr().out

    capped = train_step.main(["--quick", "--max-plain-batch", "4"])
    plain8 = [r for r in capped["rows"] if r["batch"] == 8 and r["GradCache"] == "no"]
    assert [r["step s"] for r in plain8] == ["not run"]  # left out, not killed by the OOM killer
    assert all(isinstance(r["step s"], float) for r in capped["rows"] if r["GradCache"] != "no")


def test_loop_overhead_benchmark_quick(capsys):
    from benchmarks import loop_overhead

    result = loop_overhead.main(["--quick"])
    assert [r["loop"] for r in result["rows"]] == ["plain PyTorch", "Lightning"]
    assert math.isfinite(result["overhead"])
    assert "Lightning overhead" in capsys.readouterr().out


def test_gpu_check_script_runs_tiny_on_cpu():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## training (bf16-mixed, GradCache" in proc.stdout and "MFU" in proc.stdout
    assert (
        "summary: GradCache training" in proc.stdout
        and "summary: plain training" in proc.stdout
        and "tokens/s" in proc.stdout
    )


@pytest.mark.parametrize("name", ["encode", "train_step", "loop_overhead"])
def test_benchmarks_document_their_commands(name):
    text = (ROOT / "benchmarks" / f"{name}.py").read_text()
    assert f"python -m benchmarks.{name}" in text
    assert f"python -m benchmarks.{name}" in (ROOT / "docs" / "performance.md").read_text()


def test_profile_step_quick(capsys):
    from benchmarks import profile_step

    result = profile_step.main(["--quick"])
    assert set(result["phases"]) == set(profile_step.PHASES)
    assert all(v > 0 for v in result["phases"].values()) and result["cpu_s"] > 0
    assert len(result["top"]) == 5 and result["top"][0]["calls"] >= 1
    assert "self CPU" in capsys.readouterr().out


def test_recipe_study_runs_rows_once_and_tabulates_them(tiny_model_dir, tmp_path, capsys):
    from benchmarks import recipe_study

    source = tmp_path / "source.txt"
    source.write_text(
        "\n".join(f"sentence {i} talks about topic {i % 5} at length" for i in range(40))
    )
    evals = tmp_path / "eval.yaml"
    evals.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: llm_embed.eval.callback.ClusteringEvalCallback\n"
        "      init_args: {tasks: [BBCNewsHeadlines], max_documents: 60, baseline: false}\n"
    )
    tiny = [
        "--model.encoder.init_args.backbone", tiny_model_dir, "--model.lora.init_args.r", "4",
        "--model.encoder.init_args.pooling", "last",  # 2 tiny steps move a last token enough
        "--data.source", str(source), "--data.num_source", "40", "--data.batch_size", "8",
        "--data.val_size", "8", "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    rows = tmp_path / "rows.yaml"
    rows.write_text(
        json.dumps(
            {
                "rows": [
                    {"name": "base", "change": "tiny base", "fit": tiny},
                    {
                        "name": "tau",
                        "change": "tau 0.05",
                        "fit": [*tiny, "--model.temperature", "0.05"],
                    },
                    {
                        "name": "zero-shot",
                        "change": "untrained",
                        "evaluate": [
                            "--model",
                            tiny_model_dir,
                            "--tasks",
                            "BBCNewsHeadlines",
                            "--max-documents",
                            "60",
                            "--no-progress",
                        ],
                    },
                ]
            }
        )
    )
    configs = ",".join(str(ROOT / "configs" / c) for c in ("default.yaml", "augment-pairs.yaml"))
    args = ["--rows", str(rows), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
            "--base-configs", f"{configs},{evals}"]  # fmt: skip
    records = recipe_study.main([*args, "--only", "base", "--seeds", "0,1"])
    assert sorted((r["row"], r["seed"]) for r in records) == [("base", 0), ("base", 1)]
    assert all(set(r["scores"]) == {"BBCNewsHeadlines"} and r["minutes"] > 0 for r in records)
    assert records[0]["scores"] != records[1]["scores"]  # another seed, another LoRA init
    # a record's numbers come back from its run folder alone (the saved model, its calibration)
    from llm_embed.eval.grid import EvalConfig, evaluate_grid

    base0 = next(r for r in records if r["seed"] == 0)
    (rescored,) = evaluate_grid(
        EvalConfig(model=str(tmp_path / "runs" / "base-s0"), tasks="BBCNewsHeadlines",
                   max_documents=60, out=str(tmp_path / "rescored"), map_samples=0,
                   progress=False)  # fmt: skip
    )
    assert rescored["split"] == "dev" and len(rescored["v_measures"]) == 5
    assert rescored["v_measure"] == pytest.approx(base0["scores"]["BBCNewsHeadlines"], abs=1e-6)
    capsys.readouterr()
    records = recipe_study.main([*args, "--only", "zero-shot,tau,base"])  # base seed 0 is read back
    out = capsys.readouterr().out
    assert "== tau seed 0" in out and "== base" not in out
    assert sorted((r["row"], r["seed"]) for r in records) == [
        ("base", 0), ("base", 1), ("tau", 0), ("zero-shot", 0)
    ]  # fmt: skip
    table = (tmp_path / "out" / "results.md").read_text()
    base, tau = (
        next(ln for ln in table.splitlines() if ln.startswith(f"| {n} |")) for n in ("base", "tau")
    )
    assert "±" in base and "| 2 |" in base  # two seeds: a spread
    assert "±" not in tau and ("(+" in tau or "(-" in tau)  # one seed: the difference to base
    assert (tmp_path / "out" / "results.png").stat().st_size > 0


def test_layer_sweep_cells_equal_their_own_encoder(tiny_model_dir):
    """Each sweep cell (one pass, hooked layers) gives the vectors of Encoder(layer=L, pooling=P)."""
    import torch

    from benchmarks.layer_sweep import CellView, Sweep
    from llm_embed.encoder import Encoder

    texts = ["a cat sat on the mat", "stocks fell sharply", "to move fast", "very"]
    layers, poolings = [1, 2, -1], ["last", "weighted_mean"]
    sweep = Sweep(Encoder(tiny_model_dir), layers, poolings)
    for i, (layer, pooling) in enumerate(sweep.cells):
        got = CellView(sweep, i).encode(texts, batch_size=3)
        want = Encoder(tiny_model_dir, layer=layer, pooling=pooling).encode(texts, batch_size=3)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    distinct = [CellView(sweep, i).encode(texts) for i in range(len(sweep.cells))]
    assert not torch.allclose(distinct[0], distinct[2])  # layers differ: the hooks see each layer


def test_recipe_study_evaluate_row_scores_the_run_of_its_own_seed(tmp_path):
    from benchmarks.recipe_study import evaluate_command

    row = {
        "change": "x",
        "evaluate": ["--model", "checkpoints/recipe/base-s{seed}", "--tasks", "T"],
    }
    cmd = evaluate_command(row, tmp_path / "row-s2", 2)
    assert cmd[cmd.index("--model") + 1] == "checkpoints/recipe/base-s2"
    assert cmd[-2:] == ["--out", str(tmp_path / "row-s2")]
    from benchmarks.recipe_study import _per_seed

    assert _per_seed(row) and _per_seed({"fit": []})  # each seed's run is scored
    assert not _per_seed({"evaluate": ["--model", "gemma3-270m"]})  # one untrained model: once


def test_prompt_ensemble_views_are_the_encoders_own_path_with_per_prompt_calibration(
    tiny_model_dir, tmp_path
):
    """A one-prompt ensemble is that prompt's calibrated encoder; more prompts enter the mean."""
    import json

    import torch

    from benchmarks.prompt_ensemble import Ensemble, calibration_anchors, prompt_views
    from llm_embed.encoder import Encoder

    pairs = tmp_path / "pairs.jsonl"
    anchor_texts = [
        f"to move {w} across the room" for w in ("fast", "slowly", "calmly", "loudly", "far")
    ]
    pairs.write_text(
        "".join(json.dumps({"anchor": a, "positive": a.upper()}) + "\n" for a in anchor_texts)
    )
    anchors = calibration_anchors("unused", 4, pairs)
    assert len(anchors) == 4 and set(anchors) <= set(anchor_texts)
    assert calibration_anchors("unused", 4, pairs) == anchors  # seeded
    texts = ["a cat sat on the mat", "stocks fell sharply", "to move fast"]
    encoder = Encoder(tiny_model_dir, pooling="weighted_mean")
    encoder.calibrate(anchors)
    views = prompt_views(encoder, ["clustering", "prompteol"], anchors)
    for prompt in ("clustering", "prompteol"):
        want = Encoder(tiny_model_dir, pooling="weighted_mean", prompt=prompt)
        want.calibrate(anchors)
        got = Ensemble([views[prompt]], "tiny").encode(texts, batch_size=2)
        torch.testing.assert_close(got, want.encode(texts, batch_size=2), atol=1e-5, rtol=1e-5)
    assert views["prompteol"].dim_scale is not None
    assert not torch.allclose(views["prompteol"].dim_scale, views["clustering"].dim_scale)
    two = Ensemble([views["clustering"], views["prompteol"]], "tiny").encode(texts)
    one = Ensemble([views["clustering"]], "tiny").encode(texts)
    assert not torch.allclose(two, one)  # the second prompt's pass enters the mean
    assert views["clustering"].seconds > 0


def test_prompt_ensemble_calibrates_on_the_runs_own_training_anchors(tmp_path):
    """Without --calibration-pairs the anchors come from the run's config: its training split."""
    import json

    import pytest
    import yaml

    from benchmarks.prompt_ensemble import calibration_anchors
    from llm_embed.data.datamodule import split_pairs
    from llm_embed.errors import UserError

    anchors = [f"to move {i} steps across the room" for i in range(12)]
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"anchor": a, "positive": a.upper()} for a in anchors]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"lr": 1e-4}, "data": {"pairs_file": str(pairs), "val_size": 4, "seed": 3, "batch_size": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    train, val = split_pairs(rows, 4, 3)
    got = calibration_anchors(str(run), 100)
    assert sorted(got) == sorted(r["anchor"] for r in train)
    assert not set(got) & {r["anchor"] for r in val}  # held-out anchors never calibrate
    assert calibration_anchors(str(run), 5) == calibration_anchors(str(run), 5)
    with pytest.raises(UserError, match="--calibration-pairs"):
        calibration_anchors(str(tmp_path / "nowhere"), 5)


def test_compact_vector_views_equal_what_encode_and_truncate_dim_give(tiny_model_dir):
    import numpy as np
    import torch

    from benchmarks.compact_vectors import CachedView, quantized, truncated
    from llm_embed.encoder import Encoder
    from llm_embed.inference.embed_file import quantize

    texts = ["a cat sat on the mat", "stocks fell sharply", "to move fast", "rain tomorrow"]
    encoder = Encoder(tiny_model_dir)
    full = encoder.encode(texts)
    cache: dict = {}
    got = CachedView(encoder, cache, truncated(8)).encode(texts)
    torch.testing.assert_close(got, Encoder(tiny_model_dir, truncate_dim=8).encode(texts))
    assert len(cache) == 4  # embedded once, shared by every view
    q = CachedView(encoder, cache, quantized("int8")).encode(texts)
    np.testing.assert_array_equal(q.numpy(), quantize(full.numpy(), "int8"))
    signs = CachedView(encoder, cache, quantized("binary")).encode(texts)
    assert set(signs.unique().tolist()) <= {-1.0, 1.0} and signs.shape == full.shape
    torch.testing.assert_close(signs, torch.where(full > 0, 1.0, -1.0))


def test_recipe_rows_refuse_a_repeated_key(tmp_path, capsys):
    """A row that lost its '- name:' line would silently replace the row above it."""
    from benchmarks.recipe_study import load_rows

    rows = tmp_path / "rows.yaml"
    rows.write_text(
        "rows:\n"
        "  - name: a\n    change: first\n    fit: [--x, '1']\n"
        "    change: second\n    fit: [--x, '2']\n"
    )
    with pytest.raises(SystemExit, match="line 2: the key 'change' is repeated"):
        load_rows(rows)
    assert set(load_rows(ROOT / "configs" / "recipe" / "rows.yaml")) >= {
        "weighted-mean-tau-0.05-packed",
        "weighted-mean-tau-0.05-steps-50",
    }


def test_recipe_row_from_another_row_writes_the_parents_overrides_out(tmp_path):
    """``from:`` folds the parent in: its configs first, a flag given again replaced in place."""
    from benchmarks.recipe_study import fit_command, load_rows

    rows = tmp_path / "rows.yaml"
    rows.write_text(
        "rows:\n"
        "  - name: a\n    change: a\n    configs: [a.yaml]\n    fit: [--x, '1', --y, '2']\n"
        "  - name: b\n    change: b\n    from: a\n    fit: [--z, '3']\n"
        "  - name: c\n    change: c\n    configs: [c.yaml]\n    from: b\n    fit: [--x, '9']\n"
    )
    c = load_rows(rows)["c"]
    assert c["configs"] == ["a.yaml", "c.yaml"]
    assert c["fit"] == ["--x", "9", "--y", "2", "--z", "3"]
    cmd = fit_command(c, tmp_path / "c-s0", 0, base_configs=["base.yaml"])
    configs = ["--config", "base.yaml", "--config", "a.yaml", "--config", "c.yaml"]
    assert cmd[3:11] == [*configs, "--x", "9"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("  - name: a\n    change: a\n    from: zz\n    fit: []\n", "'from: zz' names no row"),
        ("  - name: a\n    change: a\n    from: a\n    fit: []\n", "form a cycle"),
        (
            "  - name: a\n    change: a\n    from: b\n    fit: []\n"
            "  - name: b\n    change: b\n    from: a\n    fit: []\n",
            "form a cycle",
        ),
        (
            "  - name: a\n    change: a\n    fit: [--x]\n  - name: b\n    change: b\n    from: a\n"
            "    fit: []\n",
            "'--flag, value' pairs",
        ),
        (
            "  - name: a\n    change: a\n    evaluate: [--model, m]\n"
            "  - name: b\n    change: b\n    from: a\n    fit: []\n",
            "joins two 'fit' rows only",
        ),
    ],
)
def test_recipe_row_from_refuses_what_it_cannot_join(tmp_path, rows, message):
    from benchmarks.recipe_study import load_rows

    path = tmp_path / "rows.yaml"
    path.write_text("rows:\n" + rows)
    with pytest.raises(SystemExit, match=message):
        load_rows(path)


def test_recipe_rows_still_generate_the_commands_their_records_ran():
    """Each committed record's row, as written now, gives the command it ran.

    This compares command strings only; that a record's numbers come back from its run folder
    is a separate check (the scores need the trained run)."""
    import shlex

    from benchmarks.recipe_study import evaluate_command, fit_command, load_rows

    rows = load_rows(ROOT / "configs" / "recipe" / "rows.yaml")
    records = json.loads((ROOT / "docs" / "results" / "recipe" / "results.json").read_text())
    assert len(records) > 50
    for rec in records:
        row = rows[rec["row"]]
        run_dir = Path("checkpoints/recipe") / f"{rec['row']}-s{rec['seed']}"
        make = fit_command if "fit" in row else evaluate_command
        cmd = make(row, run_dir, rec["seed"])
        assert shlex.join(["python", *cmd[1:]]) == rec["command"], rec["row"]
