"""Resume: atomic checkpoints, safe loading, data order and dropout that replay, SIGKILL anywhere.

The end-to-end tests train the tiny model through ``python -m llm_embed.fit``: once straight
through, and, for each kill point (mid-epoch, during the final evaluation, during a checkpoint
write, and with the last checkpoint damaged afterwards), once killed with SIGKILL (the process
kills itself at a fixed point, so the test does not depend on timing) and once resumed with the
README's command. The resumed run must end with the same LoRA weights, losses and V-measures as
the uninterrupted one: equal to float32 rounding (rtol 1e-5, atol 1e-6; in practice bit-identical
on one machine).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import SESSION_SCORE_CACHE

from llm_embed.errors import UserError
from llm_embed.train.resume import (
    AtomicCheckpointIO,
    EpochShuffleSampler,
    ResumableDataLoader,
    check_checkpoint_matches,
    previous_of,
    read_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


KILL_ENV = "LLM_EMBED_TEST_KILL"
# The uninterrupted run and every killed and resumed run share one score cache: the same weights
# then give the same scores by construction. Scored afresh in another process, a k-means round on
# a near-tie can flip with the BLAS threads' summation order (seen under load: 2.6e-6 on the
# mean), which says nothing about resuming.
SHARED_SCORES = {"LLM_EMBED_SCORE_CACHE": SESSION_SCORE_CACHE}


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally, no atexit


class KillAt(L.Callback):
    """SIGKILL this process at ``$LLM_EMBED_TEST_KILL``: ``train:S`` (as step S starts),
    ``term:S`` (SIGTERM instead, as step S starts),
    ``validation:S`` (inside the validation after step S), ``save:S`` (halfway through writing
    the checkpoint of step S) or ``end:S`` (training done at step S, its last checkpoint written,
    the test report and the model not yet).

    Read from the environment, so the killed run and its resumption share one saved config.
    """

    def __init__(self) -> None:
        where, _, step = os.environ.get(KILL_ENV, "").partition(":")
        self.where, self.step = where, int(step or -1)

    def setup(self, trainer, pl_module, stage) -> None:
        if self.where != "save":
            return
        save = torch.save

        def torn_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("global_step") == self.step:
                f.write(b"PK\x03\x04" + b"\0" * 1000)
                f.flush()
                _kill()
            return save(obj, f, *args, **kwargs)

        torch.save = torn_save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.where == "train" and trainer.global_step == self.step:
            _kill()
        if self.where == "term" and trainer.global_step == self.step:  # a scheduler's polite stop
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "validation" and trainer.global_step == self.step:
            _kill()

    def on_train_end(self, trainer, pl_module) -> None:  # after the final checkpoint, before the
        if self.where == "end" and trainer.global_step == self.step:  # report and the model save
            _kill()


# -- atomic writes and safe reads --------------------------------------------------------------
def _fake_checkpoint(value: float) -> dict:
    return {"state_dict": {"w": torch.full((4,), value)}, "loops": {}, "global_step": int(value)}


KILL_MID_WRITE = """
import os, signal, sys, torch
from llm_embed.train.resume import AtomicCheckpointIO

def torn_save(obj, f, *args, **kwargs):  # half a file, then the kernel's SIGKILL
    f.write(b"PK\\x03\\x04" + b"\\0" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = torn_save
AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "loops": {}}, sys.argv[1])
"""


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path, run_python):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_fake_checkpoint(1.0), path)
    proc = run_python("-c", KILL_MID_WRITE, str(path), timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.full((4,), 1.0))
    assert len(list(path.parent.glob(".last.ckpt.*.tmp"))) == 1  # the torn temp file, beside it
    AtomicCheckpointIO().save_checkpoint(_fake_checkpoint(2.0), path)  # the next save clears it
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.prev"]
    assert read_checkpoint(path)["global_step"] == 2
    assert read_checkpoint(previous_of(path))["global_step"] == 1  # kept until the next save


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    import logging

    path = tmp_path / "last.ckpt"
    for step in (1, 2):
        AtomicCheckpointIO().save_checkpoint(_fake_checkpoint(float(step)), path)
    path.write_bytes(path.read_bytes()[:300])  # a copy cut short
    notices: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = notices.append
    logging.getLogger("llm_embed.train.resume").addHandler(handler)
    try:
        assert read_checkpoint(path)["global_step"] == 1
        assert read_checkpoint(path)["global_step"] == 1  # Lightning reads it a second time
    finally:
        logging.getLogger("llm_embed.train.resume").removeHandler(handler)
    assert len(notices) == 1, [n.getMessage() for n in notices]  # once, on one line
    message = notices[0].getMessage()
    assert "last.ckpt is damaged" in message and "last.ckpt.prev (step 1)" in message
    assert "\n" not in message
    # the damaged file never becomes the next save's "previous"
    AtomicCheckpointIO().save_checkpoint(_fake_checkpoint(3.0), path)
    assert read_checkpoint(previous_of(path))["global_step"] == 1
    assert read_checkpoint(path)["global_step"] == 3

    both = tmp_path / "both.ckpt"
    both.write_bytes(b"junk")
    previous_of(both).write_bytes(b"junk")
    with pytest.raises(UserError, match="both damaged") as err:
        read_checkpoint(both)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        (b"", "cannot be loaded"),
        (b"\x00garbage" * 50, "cannot be loaded"),
        ("truncated", "cannot be loaded"),
        ("not-lightning", "not a Lightning training checkpoint"),
        ("pickled-object", "cannot be loaded"),
    ],
)
def test_read_checkpoint_errors(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    if content == "truncated":
        torch.save(_fake_checkpoint(1.0), path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "not-lightning":
        torch.save({"w": torch.zeros(2)}, path)
    elif content == "pickled-object":
        torch.save({"state_dict": {}, "loops": {}, "evil": Path("/")}, path)  # weights_only refuses
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)


def test_checkpoint_must_fit_the_model():
    module = torch.nn.Linear(2, 3)
    module.bias.requires_grad_(False)
    good = {"state_dict": {"weight": torch.zeros(3, 2)}}
    check_checkpoint_matches(good, module, "x.ckpt")
    for bad in ({"weight": torch.zeros(4, 2)}, {"other": torch.zeros(3, 2)}, {}):
        with pytest.raises(UserError, match="does not fit this model"):
            check_checkpoint_matches({"state_dict": bad}, module, "x.ckpt")


# -- data order ------------------------------------------------------------------------------------
def _loader(n: int = 22, batch_size: int = 4) -> ResumableDataLoader:
    data = list(range(n))
    return ResumableDataLoader(
        data, batch_size=batch_size, sampler=EpochShuffleSampler(n, seed=3), drop_last=True
    )


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [b.tolist() for b in loader]


def test_shuffle_depends_on_seed_and_epoch_only():
    a, b = _loader(), _loader()
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 1) == _epoch(b, 1) != _epoch(b, 0)
    assert _epoch(a, 0) == _epoch(b, 0)  # no hidden generator state carried between epochs
    assert sorted(sum(_epoch(a, 2), [])) != list(range(20))  # shuffled, full batches only


def test_loader_resumes_mid_epoch_and_into_the_next_epoch():
    full = _loader()
    epoch1 = _epoch(full, 1)
    killed = _loader()
    killed.sampler.set_epoch(1)
    it = iter(killed)
    seen = [next(it).tolist() for _ in range(2)]
    state = killed.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    assert seen + _epoch(resumed, 1) == epoch1
    assert _epoch(resumed, 1) == epoch1  # the skip applies to the first pass only

    end_of_epoch = _loader()
    end_of_epoch.load_state_dict({"epoch": 1, "batches": len(epoch1)})
    # a checkpoint from an epoch's end skips nothing
    assert _epoch(end_of_epoch, 2) == _epoch(full, 2)


def test_ddp_rewrap_keeps_the_loader_and_splits_the_epochs_permutation():
    """Under DDP Lightning rebuilds the loader around a DistributedSamplerWrapper; it must stay resumable."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DataLoader

    with _replace_dunder_methods(DataLoader, "dataset"):  # as Lightning calls train_dataloader()
        loader = _loader(n=20, batch_size=2)
    order = EpochShuffleSampler(20, seed=3)
    order.set_epoch(4)
    permutation = list(order)
    for rank in range(2):
        wrapped = DistributedSamplerWrapper(
            loader.sampler, num_replicas=2, rank=rank, shuffle=False
        )
        ranked = _update_dataloader(loader, wrapped)
        assert isinstance(ranked, ResumableDataLoader)
        _set_sampler_epoch(ranked, 4)  # forwarded to the EpochShuffleSampler inside
        assert sum((b.tolist() for b in ranked), []) == permutation[rank::2]


# -- end to end: SIGKILL anywhere, resume, same result ---------------------------------------------
def _write_config(tmp_path: Path, tiny_model_dir: str, save_dir: Path) -> Path:
    callbacks = [
        {"class_path": "test_resume.KillAt"},
        {
            "class_path": "llm_embed.eval.callback.ClusteringEvalCallback",
            "init_args": {
                "tasks": ["WordNetNounGlosses"],
                "max_documents": 60,
                "report_split": "test",
            },
        },
        {
            "class_path": "llm_embed.train.resume.ResumableCheckpoint",
            "init_args": {"every_n_train_steps": 2, "save_last": True, "save_top_k": 0},
        },
    ]
    config = {
        "seed_everything": 0,
        "model": {
            "encoder": {
                "class_path": "llm_embed.encoder.Encoder",
                "init_args": {
                    "backbone": tiny_model_dir,
                    "pooling": "last",
                    "prompt": "clustering",
                },
            },
            "lora": {
                "class_path": "peft.LoraConfig",
                "init_args": {
                    "r": 4,
                    "lora_alpha": 8,
                    "lora_dropout": 0.2,  # dropout on: the resumed run must replay its masks
                    "target_modules": ["q_proj", "v_proj", "o_proj"],
                    "task_type": "FEATURE_EXTRACTION",
                },
            },
            "lr": 5.0e-3,
            "warmup_steps": 2,
            "calibration_texts": 8,  # a saved scale that a resume must not lose
        },
        "data": {
            "pairs_file": str(tmp_path / "pairs.jsonl"),
            "batch_size": 4,
            "val_size": 4,
            "seed": 0,
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 9,  # 7 batches per epoch: the run crosses into a second epoch
            "val_check_interval": 3,  # validations after steps 3, 6 and 9 (the final one)
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(save_dir), "name": "run", "version": ""},
            },
            "callbacks": callbacks,
        },
    }
    path = tmp_path / f"{save_dir.name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _final_scalars(run_dir: Path) -> dict[str, tuple[int, float]]:
    """Each tag's value at its last step (the latest write wins when a step was logged twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            last = max(acc.Scalars(tag), key=lambda e: (e.step, e.wall_time))
            if tag not in out or last.step >= out[tag][0]:
                out[tag] = (last.step, last.value)
    return out


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory, run_python) -> tuple[Path, Path]:
    """(work folder with pairs.jsonl, the uninterrupted run's folder)."""
    work = tmp_path_factory.mktemp("resume")
    pairs = [
        {"anchor": f"text number {i} about topic {i % 5}", "positive": f"topic {i % 5}: text {i}"}
        for i in range(32)
    ]
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    straight = work / "straight"
    config = _write_config(work, tiny_model_dir, straight)
    proc = run_python("-m", "llm_embed.fit", "--config", str(config), cwd=work, env=SHARED_SCORES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, straight / "run"


def test_the_data_module_resumes_mid_epoch(tmp_path):
    pairs = [{"anchor": f"a {i}", "positive": f"p {i}"} for i in range(32)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    from llm_embed.data.datamodule import PairDataModule

    data = PairDataModule(pairs_file=str(tmp_path / "pairs.jsonl"), batch_size=4, val_size=4)
    data.setup("fit")
    loader = data.train_dataloader()
    hint = "PairDataModule.train_dataloader must return a ResumableDataLoader over an EpochShuffleSampler"
    assert isinstance(loader, ResumableDataLoader), hint
    assert isinstance(loader.sampler, EpochShuffleSampler), hint


# kill point -> the step of the checkpoint the resume starts from
KILLS = {
    "train:5": 4,  # mid-epoch: 4 of 7 batches done
    "validation:9": 8,  # during the final evaluation: step 9 is saved only after it
    "save:8": 6,  # halfway through writing step 8's checkpoint: step 6's stays
    "damaged": 3,  # killed at train:5, then last.ckpt (step 4) cut short: its predecessor
    "end:9": 9,  # after the final checkpoint, before the report and the model: resumes at the end
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    kill, straight_run, tiny_model_dir, run_python
):
    from safetensors.torch import load_file

    work, straight = straight_run
    killed = work / kill.replace(":", "-")
    config = _write_config(work, tiny_model_dir, killed)
    env = {KILL_ENV: "train:5" if kill == "damaged" else kill, **SHARED_SCORES}
    proc = run_python("-m", "llm_embed.fit", "--config", str(config), cwd=work, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = killed / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert not (run / "model").exists()
    if kill == "damaged":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:
        assert read_checkpoint(last)["global_step"] == KILLS[kill]

    # The README's resume command: the run's saved config plus --ckpt_path.
    resume = ("--config", str(run / "config.yaml"), "--ckpt_path", str(last))
    proc = run_python("-m", "llm_embed.fit", *resume, cwd=work, env=SHARED_SCORES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not resumable" not in proc.stderr  # Lightning's warning for loaders that restart
    if kill == "damaged":
        notice = [ln for ln in proc.stderr.splitlines() if "is damaged" in ln]
        assert len(notice) == 1 and f"(step {KILLS[kill]})" in notice[0], proc.stderr[-3000:]

    a = load_file(straight / "model" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "model" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    print(f"{kill}: max |resumed - uninterrupted| over LoRA weights:",
          max((a[k] - b[k]).abs().max().item() for k in a))  # fmt: skip
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # training moved the weights

    sa, sb = _final_scalars(straight), _final_scalars(run)
    assert sa["train/loss"][0] == 8 and sa["val/loss"][0] == 8  # the last step, the last validation
    for tag in ("train/loss", "val/loss", "mteb/mean_v_measure"):
        assert sb[tag][0] == sa[tag][0], (tag, sa[tag], sb[tag])
        assert sb[tag][1] == pytest.approx(sa[tag][1], rel=1e-5, abs=1e-6), tag
    # every evaluation, the step-0 baseline included, is in the resumed run's score file once
    ha = json.loads((straight / "mteb_scores.json").read_text())["history"]
    hb = json.loads((run / "mteb_scores.json").read_text())["history"]
    assert [(h["stage"], h["step"]) for h in ha] == [
        ("baseline", 0), ("start", 0), ("validation", 3), ("validation", 6), ("validation", 9),
        ("trained", 9),
    ]  # fmt: skip
    assert [(h["stage"], h["step"]) for h in hb] == [(h["stage"], h["step"]) for h in ha]
    for x, y in zip(ha, hb, strict=True):
        assert y["mean_v_measure"] == pytest.approx(x["mean_v_measure"], abs=1e-6)
    # the saved model is the uninterrupted run's: its calibration scale and its test report too
    scale_a = json.loads((straight / "model" / "encoder.json").read_text())["dim_scale"]
    scale_b = json.loads((run / "model" / "encoder.json").read_text())["dim_scale"]
    assert scale_a is not None and scale_b == pytest.approx(scale_a, rel=1e-5, abs=1e-7)
    def table(report: Path) -> list[str]:  # the rows; the header says when it was rendered
        return [ln for ln in report.read_text().splitlines() if ln.startswith("|")]

    assert table(run / "test_report.md") == table(straight / "test_report.md")


def test_sigterm_exits_non_zero_with_the_resume_command_and_the_resume_matches(
    straight_run, tiny_model_dir, run_python
):
    from safetensors.torch import load_file

    work, straight = straight_run
    stopped = work / "sigterm"
    config = _write_config(work, tiny_model_dir, stopped)
    proc = run_python("-m", "llm_embed.fit", "--config", str(config), cwd=work,
                      env={KILL_ENV: "term:5", **SHARED_SCORES})  # fmt: skip
    run = stopped / "run"
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: fit was stopped by SIGTERM at step"), last_line
    assert f"--config {run}/config.yaml --ckpt_path {run}/checkpoints/last.ckpt" in last_line
    assert "Traceback" not in proc.stderr and not (run / "model").exists()

    proc = run_python("-m", "llm_embed.fit", "--config", str(run / "config.yaml"),
                      "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=work,
                      env=SHARED_SCORES)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(straight / "model" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "model" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


def test_a_resume_with_edited_pairs_is_refused(tiny_model_dir, tmp_path, run_python):
    """Pairs edited between a kill and its resume would give a new train/validation split and new
    batches, silently; the checkpoint records them and the resume refuses in one line."""
    from cli_errors import check_proc

    pairs = [
        {"anchor": f"text number {i} about topic {i % 5}", "positive": f"topic {i % 5}: text {i}"}
        for i in range(32)
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    config = _write_config(tmp_path, tiny_model_dir, tmp_path / "edited")
    proc = run_python("-m", "llm_embed.fit", "--config", str(config), cwd=tmp_path,
                      env={KILL_ENV: "train:5", **SHARED_SCORES})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = tmp_path / "edited" / "run"
    pairs[7]["positive"] = "an edited positive"
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    proc = run_python("-m", "llm_embed.fit", "--config", str(run / "config.yaml"),
                      "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path,
                      env=SHARED_SCORES)  # fmt: skip
    check_proc(proc, "changed since this run's checkpoint was saved", "32 pairs then, 32 now")
    assert not (run / "model").exists()
