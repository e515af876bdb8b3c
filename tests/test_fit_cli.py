"""The fit CLI end to end: a tiny-model smoke run, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cli_errors import check_proc

ROOT = Path(__file__).resolve().parents[1]


def small_eval_config(tmp_path: Path, max_documents: int = 200) -> str:
    """A second --config that replaces the callbacks: the same suite, capped for speed."""
    cfg = tmp_path / "small_eval.yaml"
    cfg.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: llm_embed.eval.callback.ClusteringEvalCallback\n"
        f"      init_args: {{tasks: [BBCNewsHeadlines, WordNetNounGlosses], max_documents: {max_documents}}}\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, save_top_k: 0}\n"
    )
    return str(cfg)


def tiny_args(tiny_model_dir: str, tmp_path: Path) -> list[str]:
    source = tmp_path / "source.txt"
    source.write_text("\n".join(f"sentence number {i} talks about topic {i % 7} at length" for i in range(80)))
    return [
        "--config", str(ROOT / "configs" / "default.yaml"),
        "--config", str(ROOT / "configs" / "augment-pairs.yaml"),
        "--config", small_eval_config(tmp_path),
        "--model.encoder.init_args.backbone", tiny_model_dir,
        "--model.lora.init_args.r", "4",
        "--data.source", str(source),
        "--data.num_source", "80",
        "--data.batch_size", "8",
        "--data.val_size", "8",
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.max_steps", "3",
        "--trainer.val_check_interval", "3",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "ckpt"),
        "--trainer.enable_progress_bar", "false",
        "--trainer.log_every_n_steps", "1",
    ]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fit_smoke_writes_every_output(tiny_model_dir, tmp_path, monkeypatch, run_python):
    proc = run_python("-m", "llm_embed.fit", *tiny_args(tiny_model_dir, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ckpt" / "default"
    for name in ("config.yaml", "checkpoints/last.ckpt", "model/encoder.json",
                 "model/adapter/adapter_model.safetensors", "model/adapter/adapter_config.json"):
        assert (run / name).is_file(), name
    scalars = read_scalars(run)
    assert "train/loss" in scalars and "train/lr" in scalars and "train/grad_norm" in scalars
    for tag in ("mteb/BBCNewsHeadlines/v_measure", "mteb/WordNetNounGlosses/v_measure", "mteb/mean_v_measure"):
        steps = [s for s, _ in scalars[tag]]
        assert len(steps) == 2 and steps[0] == 0 < steps[1], (tag, steps)  # baseline and after training
        assert all(0.0 <= v <= 1.0 for _, v in scalars[tag])
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    pooling = default["model"]["encoder"]["init_args"]["pooling"]  # the run saves the config's own
    assert json.loads((run / "model" / "encoder.json").read_text())["pooling"] == {"type": pooling}
    # written atomically (no temp file left) and loadable with weights_only=True, callbacks' state included
    from llm_embed.train.resume import read_checkpoint

    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    # the yardstick for every timing: the machine's matmul rate, printed before and after training
    log = proc.stdout + proc.stderr
    assert re.search(r"machine: \d+ GFLOP/s fp32 matmul", log), log[-2000:]
    assert re.search(r"fit took \d+\.\d min \(machine: \d+ GFLOP/s", log), log[-2000:]
    # stderr is a pipe, not a terminal: the training heartbeat's plain lines are in it
    assert re.search(r"step 1/3 \| loss \d+\.\d{4} \| \d+\.\d s/step \| ETA \d+\.\d min", proc.stderr)
    assert re.search(r"step 3/3 \| loss \d", proc.stderr), proc.stderr[-2000:]
    saved = json.loads((run / "mteb_scores.json").read_text())  # the callback's scores, as plain JSON
    assert [h["stage"] for h in saved["history"]] == ["baseline", "validation"]


def test_a_second_training_seed_reuses_the_start_scores(tiny_model_dir, tmp_path, run_python):
    """The untrained start (LoRA B = 0, merged) is the same function for every training seed, so
    the second seed takes its baseline from the score cache and says so; training then differs."""
    runs = {}
    for seed in (0, 1):
        args = [*tiny_args(tiny_model_dir, tmp_path), "--seed_everything", str(seed),
                "--trainer.logger.init_args.name", f"s{seed}"]  # fmt: skip
        proc = run_python("-m", "llm_embed.fit", *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        history = json.loads((tmp_path / "ckpt" / f"s{seed}" / "mteb_scores.json").read_text())
        runs[seed] = (proc.stderr, {h["stage"]: h for h in history["history"]})
    (first_log, first), (second_log, second) = runs[0], runs[1]
    assert "reused the cached scores of these weights" not in first_log
    assert second_log.count("reused the cached scores of these weights") == 2  # both tasks
    assert second["baseline"]["v_measures"] == first["baseline"]["v_measures"]
    assert second["validation"]["v_measures"] != first["validation"]["v_measures"]


assert_one_line_error = check_proc


def test_unknown_config_key(tmp_path, run_python):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text((ROOT / "configs" / "default.yaml").read_text() + "\nmodel_typo: 1\n")
    assert_one_line_error(run_python("-m", "llm_embed.fit", "--config", str(cfg), cwd=tmp_path), "model_typo")


def test_missing_pairs_file(tmp_path, run_python):
    proc = run_python("-m", "llm_embed.fit", "--config", str(ROOT / "configs" / "default.yaml"), "--data.pairs_file", "nope.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, "nope.jsonl")


def test_empty_pairs_file(tmp_path, run_python):
    (tmp_path / "empty.jsonl").write_text("")
    proc = run_python("-m", "llm_embed.fit", "--config", str(ROOT / "configs" / "default.yaml"), "--data.pairs_file", "empty.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, "empty.jsonl")


def test_model_not_found(tmp_path, run_python):
    for model, match in (("./no/such/folder", "not found"), ("no-such-org/no-such-model", "could not load model")):
        proc = run_python("-m", "llm_embed.fit", "--config", str(ROOT / "configs" / "default.yaml"),
                          "--model.encoder.init_args.backbone", model, cwd=tmp_path)
        assert_one_line_error(proc, match)
        assert not (tmp_path / "checkpoints").exists()  # nothing half-written


@pytest.mark.slow
def test_fit_on_the_packaged_model(tmp_path, run_python):
    """The real default backbone (Gemma-3-270M): a few LoRA steps, scored before and after on small caps."""
    args = [
        "--config", str(ROOT / "configs" / "default.yaml"),
        "--config", str(ROOT / "configs" / "augment-pairs.yaml"),
        "--config", small_eval_config(tmp_path, max_documents=300),
        "--data.num_source", "200", "--data.batch_size", "8", "--data.val_size", "8",
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "ckpt"),
        "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
    ]
    proc = run_python("-m", "llm_embed.fit", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scalars = read_scalars(tmp_path / "ckpt" / "default")
    losses = [v for _, v in scalars["train/loss"]]
    assert losses and all(v == v for v in losses)  # finite numbers
    mean = scalars["mteb/mean_v_measure"]
    assert len(mean) == 2 and mean[0][0] == 0 < mean[1][0]
    assert mean[0][1] > 0.2  # the packaged model clusters far above chance (random-init models: < 0.1)


def test_pairs_that_cannot_teach_stop_before_training(tmp_path, run_python, tiny_model_dir):
    lines = [json.dumps({"anchor": f"text {i}", "positive": "the same answer"}) for i in range(80)]
    (tmp_path / "same.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_python("-m", "llm_embed.fit", "--config", str(ROOT / "configs" / "default.yaml"),
                      "--data.pairs_file", "same.jsonl", "--model.encoder.init_args.backbone",
                      tiny_model_dir, cwd=tmp_path)  # fmt: skip
    assert_one_line_error(proc, "every positive is the same text")
    assert "data.check_pairs=false" in proc.stderr
    assert not list((tmp_path / "checkpoints").rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize(
    "text, what", [("- a\n- b\n", "holds a YAML list"), ("3\n", "holds a YAML scalar (int)"), ("", "is empty")]
)
@pytest.mark.parametrize("command", ["llm_embed.fit", "llm_embed.evaluate"])
def test_a_config_that_is_not_a_mapping_says_what_a_config_looks_like(tmp_path, run_python, text, what, command):
    (tmp_path / "c.yaml").write_text(text)
    proc = run_python("-m", command, "--config", "c.yaml", cwd=tmp_path)
    assert_one_line_error(proc, f"config c.yaml {what}: a config maps option names to values")
