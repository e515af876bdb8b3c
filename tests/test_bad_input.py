"""Bad input to ``python -m llm_embed.fit``: one ``error:`` line naming the problem and the fix, exit 2, nothing half-written.

Each case runs the real CLI in a subprocess on the tiny model. The pairs-file, encoder and module
cases also have unit tests in ``test_data_pairs.py``, ``test_encoder.py`` and ``test_module.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_errors import check_proc

from llm_embed.train.resume import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.yaml")
GOOD = [
    {"anchor": f"text {i} about topic {i % 5}", "positive": f"topic {i % 5}: text {i}"}
    for i in range(24)
]


assert_one_line_error = check_proc


def write_pairs(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good_lines() -> list[bytes]:
    return [json.dumps(p).encode() for p in GOOD]


def tiny_args(tiny_model_dir: str, tmp_path: Path, pairs: Path, *extra: str) -> list[str]:
    """Default config, tiny model, the user's pairs, a checkpoint every step, no evaluation callbacks."""
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, save_top_k: 0, every_n_train_steps: 1}\n"
    )
    return [
        "--config",
        DEFAULT,
        "--config",
        str(callbacks),
        "--model.encoder.init_args.backbone",
        tiny_model_dir,
        "--model.lora.init_args.r",
        "4",
        "--data.pairs_file",
        str(pairs),
        "--data.batch_size",
        "4",
        "--data.val_size",
        "4",
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "ckpt"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]


# -- the config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, matches",
    [
        (
            b"model:\n  lr: [1e-4\ndata: {}\n",
            ("bad.yaml is not valid YAML", "line 3, column 5", "fix the syntax"),
        ),
        (b"trainer:\n\tmax_steps: 3\n", ("bad.yaml is not valid YAML", "line 2", "fix the syntax")),
        (
            b"seed_everything: 0\n# caf\xe9\n",
            ("bad.yaml is not UTF-8", "line 2", "save it as UTF-8"),
        ),
    ],
    ids=["unclosed-bracket", "tab-indent", "latin-1"],
)
def test_malformed_config_file(tmp_path, content, matches, run_python):
    (tmp_path / "bad.yaml").write_bytes(content)
    proc = run_python(
        "-m", "llm_embed.fit", "--config", DEFAULT, "--config", "bad.yaml", cwd=tmp_path
    )
    assert_one_line_error(proc, *matches)
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]


def test_wrongly_typed_config_value(tmp_path, run_python):
    (tmp_path / "typed.yaml").write_text("trainer:\n  max_steps: ten\n")
    proc = run_python(
        "-m", "llm_embed.fit", "--config", DEFAULT, "--config", "typed.yaml", cwd=tmp_path
    )
    assert_one_line_error(proc, "trainer.max_steps", "ten", "see --help")


@pytest.mark.parametrize(
    "flag, value, matches",
    [
        ("--data.on_bad_line", "sometimes", ("on_bad_line='sometimes'", "'skip'")),
        ("--data.seed", "-1", ("seed=-1 is invalid", "2**32 - 1")),
    ],
)
def test_out_of_range_config_value(tiny_model_dir, tmp_path, run_python, flag, value, matches):
    pairs = write_pairs(tmp_path / "pairs.jsonl", good_lines())
    proc = run_python(
        "-m",
        "llm_embed.fit",
        *tiny_args(tiny_model_dir, tmp_path, pairs, flag, value),
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "bad config value", *matches)
    assert not (tmp_path / "ckpt").exists()


# -- the pairs file --------------------------------------------------------------------------------
def test_malformed_pairs_line_stops_and_leaves_no_run_folder(tiny_model_dir, tmp_path, run_python):
    lines = good_lines()
    pairs = write_pairs(tmp_path / "pairs.jsonl", lines[:5] + [b'{"anchor": "x"'] + lines[5:])
    proc = run_python(
        "-m", "llm_embed.fit", *tiny_args(tiny_model_dir, tmp_path, pairs), cwd=tmp_path
    )
    assert_one_line_error(proc, "pairs.jsonl:6: bad JSON", "on_bad_line=skip")
    assert not (tmp_path / "ckpt").exists()  # the logger's folder is removed again


def test_skipped_lines_and_long_texts_are_counted_and_a_foreign_checkpoint_is_refused(
    tiny_model_dir, tmp_path, run_python
):
    lines = good_lines()
    long = json.dumps({"anchor": "word " * 400 + "end", "positive": "a very long text"}).encode()
    bad = [
        b"{not json",
        b'{"anchor": "caf\xe9", "positive": "x"}',
        b'{"anchor": " ", "positive": "x"}',
    ]
    pairs = write_pairs(tmp_path / "pairs.jsonl", lines[:3] + bad + [long] * 8 + lines[3:])
    proc = run_python(
        "-m",
        "llm_embed.fit",
        *tiny_args(tiny_model_dir, tmp_path, pairs, "--data.on_bad_line", "skip"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 3 malformed line(s)" in proc.stderr and "line 4: bad JSON" in proc.stderr
    assert "were longer than max_text_tokens=100 and were cut" in proc.stderr
    last = tmp_path / "ckpt" / "default" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 2

    # resuming with another LoRA shape would load nothing (non-strict) or fail deep inside Lightning
    other = tiny_args(
        tiny_model_dir, tmp_path, pairs, "--data.on_bad_line", "skip", "--ckpt_path", str(last)
    )
    other[other.index("--model.lora.init_args.r") + 1] = "8"
    proc = run_python("-m", "llm_embed.fit", *other, cwd=tmp_path)
    assert_one_line_error(proc, "does not fit this model", "config.yaml")


# -- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_missing_or_corrupt_checkpoint(tmp_path, kind, run_python):
    ckpt = tmp_path / "last.ckpt"
    if kind == "corrupt":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:-300])  # a torn write by a writer that was not atomic
    proc = run_python(
        "-m", "llm_embed.fit", "--config", DEFAULT, "--ckpt_path", str(ckpt), cwd=tmp_path
    )
    match = "not found" if kind == "missing" else "cannot be loaded"
    assert_one_line_error(proc, f"checkpoint {ckpt} {match}")
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["last.ckpt"] if kind == "corrupt" else []
    )


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tiny_model_dir, tmp_path, run_python
):
    pairs = write_pairs(tmp_path / "pairs.jsonl", good_lines())
    # lr 1e30: the first update is finite but enormous; the second forward pass overflows to NaN
    args = tiny_args(
        tiny_model_dir,
        tmp_path,
        pairs,
        "--model.lr",
        "1e30",
        "--model.warmup_steps",
        "0",
        "--trainer.max_steps",
        "4",
    )
    proc = run_python("-m", "llm_embed.fit", *args, cwd=tmp_path)
    assert_one_line_error(proc, "loss became nan at step 1", "lower model.lr")
    run = tmp_path / "ckpt" / "default"
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (run / "model").exists()  # no final model from a failed run


# -- run folders -----------------------------------------------------------------------------------
def test_a_second_fit_never_overwrites_a_run_and_a_resume_keeps_to_its_own(
    tiny_model_dir, tmp_path, run_python
):
    pairs = write_pairs(tmp_path / "pairs.jsonl", good_lines())
    proc = run_python("-m", "llm_embed.fit", *tiny_args(tiny_model_dir, tmp_path, pairs), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ckpt" / "default"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert run / "model" / "encoder.json" in before

    # the same command again: refused in one line naming the way out; the first run untouched
    proc = run_python("-m", "llm_embed.fit", *tiny_args(tiny_model_dir, tmp_path, pairs), cwd=tmp_path)
    assert_one_line_error(proc, "already holds a run", "--trainer.logger.init_args.name", "--ckpt_path")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    # another run's checkpoint under this config's name: refused, naming the checkpoint's own config
    last = run / "checkpoints" / "last.ckpt"
    other = tiny_args(tiny_model_dir, tmp_path, pairs, "--trainer.logger.init_args.name", "other",
                      "--ckpt_path", str(last))  # fmt: skip
    proc = run_python("-m", "llm_embed.fit", *other, cwd=tmp_path)
    assert_one_line_error(proc, "belongs to the run in", f"{run}/config.yaml")
    assert not (tmp_path / "ckpt" / "other").exists()

    # a new name trains beside it
    fresh = tiny_args(tiny_model_dir, tmp_path, pairs, "--trainer.logger.init_args.name", "second")
    proc = run_python("-m", "llm_embed.fit", *fresh, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ckpt" / "second" / "model" / "encoder.json").is_file()
