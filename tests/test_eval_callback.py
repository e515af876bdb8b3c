"""Tests for llm_embed.eval.callback.ClusteringEvalCallback in a real Lightning Trainer (CPU, seconds).

The LightningModule's encoder embeds texts as seeded noise plus ``signal`` along the label's axis,
and training pulls ``signal`` up, so the baseline and each validation score differ; each logged
value must equal ``evaluate_clustering`` on an encoder with the same ``signal``.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_embed.errors import UserError
from llm_embed.eval import tasks as eval_tasks
from llm_embed.eval.callback import MEAN_KEY, SCORES_FILE, ClusteringEvalCallback, metric_key
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.intervals import EVAL_SEEDS
from llm_embed.eval.tasks import LocalClusteringTask, local_task_metadata

TOPICS = ("sport", "music", "food", "travel")
TASKS = ["TinyTopicsA", "TinyTopicsB"]


def tiny_corpus(per_topic: int, tag: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for i in range(per_topic):
        for topic in TOPICS:
            texts.append(f"{tag} {topic} note {i}")
            labels.append(topic)
    return texts, labels


class TinyTopicsA(LocalClusteringTask):
    metadata = local_task_metadata("TinyTopicsA", "Four made-up topics, for tests.")

    def corpus(self) -> tuple[list[str], list[str]]:
        return tiny_corpus(12, "a")


class TinyTopicsB(LocalClusteringTask):
    metadata = local_task_metadata("TinyTopicsB", "Four made-up topics, other texts, for tests.")

    def corpus(self) -> tuple[list[str], list[str]]:
        return tiny_corpus(10, "b")


def _label_of() -> dict[str, str]:
    out: dict[str, str] = {}
    for texts, labels in (tiny_corpus(12, "a"), tiny_corpus(10, "b")):
        out.update(zip(texts, labels, strict=True))
    return out


class SignalEncoder(nn.Module):
    """Fake llm-embed encoder whose label signal is a trainable parameter; records each call."""

    def __init__(self, signal: float = 0.3, dim: int = 8) -> None:
        super().__init__()
        self.name = "tests/signal-encoder"
        self.signal = nn.Parameter(torch.tensor(float(signal)))
        self.head = nn.Linear(2, 2)  # a submodule, to check per-module modes are restored
        self.label_of = _label_of()
        self.classes = sorted(set(self.label_of.values()))
        self.dim = dim
        self.calls: list[dict[str, Any]] = []

    def encode(
        self, texts: list[str], *, batch_size: int = 32, prompt: str | None = None
    ) -> torch.Tensor:
        signal = float(self.signal.detach())
        self.calls.append(
            {
                "signal": signal,
                "training": self.training,
                "head_training": self.head.training,
                "inference_mode": torch.is_inference_mode_enabled(),
                "batch_size": batch_size,
            }
        )
        rows = []
        for text in texts:
            vec = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim)
            vec[self.classes.index(self.label_of[text]) % self.dim] += signal
            rows.append(vec / np.linalg.norm(vec))
        return torch.from_numpy(np.stack(rows).astype(np.float32))


class TinySystem(pl.LightningModule):
    """Trains ``encoder.signal`` towards 4 with SGD: a deterministic, visible change per step."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SignalEncoder()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.encoder.signal - 4.0) ** 2 + 0.0 * batch[0].sum()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", (self.encoder.signal - 4.0) ** 2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(8, 2)), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)


@pytest.fixture(autouse=True)
def tiny_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "TinyTopicsA", TinyTopicsA)
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "TinyTopicsB", TinyTopicsB)


def expected_scores(signal: float) -> dict[str, float]:
    """What evaluate_clustering gives for an encoder with this signal."""
    return evaluate_clustering(SignalEncoder(signal=signal), TASKS)


def make_trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "logger": CSVLogger(tmp_path, name="run"),
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    }
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def fit(trainer: pl.Trainer, module: pl.LightningModule) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module)


def read_metrics(trainer: pl.Trainer) -> list[dict[str, str]]:
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


def test_callback_logs_baseline_and_validation_scores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = ClusteringEvalCallback(tasks=TASKS, batch_size=16)
    module = TinySystem()
    trainer = make_trainer(tmp_path, [callback])
    with caplog.at_level(logging.INFO, logger="llm_embed.eval.callback"):
        fit(trainer, module)

    # One baseline + one evaluation per validation epoch; the sanity check is skipped.
    assert [(h["stage"], h["step"]) for h in callback.history] == [
        ("baseline", 0),
        ("validation", 2),
        ("validation", 4),
    ]
    # Every encode call ran in eval + inference mode; one signal per evaluation.
    calls = module.encoder.calls
    assert all(c["inference_mode"] and not c["training"] and not c["head_training"] for c in calls)
    assert {c["batch_size"] for c in calls} == {16}
    signals = list(dict.fromkeys(c["signal"] for c in calls))
    assert (
        len(signals) == 3
        and signals[0] == pytest.approx(0.3)
        and signals[0] < signals[1] < signals[2]
    )
    assert (
        module.encoder.training and module.encoder.head.training
    )  # restored after each evaluation

    rows = read_metrics(trainer)
    mteb_rows = [r for r in rows if r.get(MEAN_KEY)]
    assert len(mteb_rows) == 3
    for row, signal, record in zip(mteb_rows, signals, callback.history, strict=True):
        expected = expected_scores(signal)
        assert record["scores"] == pytest.approx(expected, abs=1e-12)
        for name, value in expected.items():
            assert float(row[metric_key(name)]) == pytest.approx(
                value, abs=1e-6
            )  # float32 when logged
        assert float(row[MEAN_KEY]) == pytest.approx(sum(expected.values()) / 2, abs=1e-6)
    assert int(mteb_rows[0]["step"]) == 0
    assert mteb_rows[0]["epoch"] == ""  # the baseline goes straight to the logger, not via self.log
    assert [int(r["epoch"]) for r in mteb_rows[1:]] == [0, 1]
    baseline, last = callback.history[0]["mean_v_measure"], callback.history[-1]["mean_v_measure"]
    assert last > baseline  # the signal grew, so the clusters got cleaner
    # the same history as plain JSON beside the logs, for scripts that do not read TensorBoard
    saved = json.loads((Path(trainer.log_dir) / SCORES_FILE).read_text())
    assert saved == {"tasks": list(TASKS), "history": callback.history}
    for entry in saved["history"]:  # every seed's value is kept, and the score is their mean
        assert entry["seeds"] == list(EVAL_SEEDS) and entry["split"] == "dev"
        for task, values in entry["v_measures"].items():
            assert len(values) == len(EVAL_SEEDS)
            assert entry["scores"][task] == pytest.approx(sum(values) / len(values), abs=1e-12)

    summaries = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("mteb clustering")
    ]
    assert len(summaries) == 3 and all("\n" not in s and "TinyTopicsA" in s for s in summaries)


def test_validation_score_is_monitorable_by_model_checkpoint(tmp_path: Path) -> None:
    callback = ClusteringEvalCallback(tasks=TASKS, baseline=False)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor=MEAN_KEY, mode="max", save_top_k=1
    )
    trainer = make_trainer(tmp_path, [callback, checkpoint], enable_checkpointing=True)
    fit(trainer, TinySystem())
    means = [h["mean_v_measure"] for h in callback.history]
    assert [h["stage"] for h in callback.history] == ["validation", "validation"]
    assert float(checkpoint.best_model_score) == pytest.approx(max(means), abs=1e-6)
    assert Path(checkpoint.best_model_path).is_file()
    assert trainer.callback_metrics[MEAN_KEY].item() == pytest.approx(means[-1], abs=1e-6)


def test_every_n_epochs_and_no_baseline(tmp_path: Path) -> None:
    callback = ClusteringEvalCallback(tasks=["TinyTopicsA"], every_n_epochs=2, baseline=False)
    trainer = make_trainer(tmp_path, [callback], max_epochs=3)
    fit(trainer, TinySystem())
    assert [(h["stage"], h["epoch"]) for h in callback.history] == [("validation", 1)]


def test_evaluate_restores_each_module_mode() -> None:
    module = TinySystem()
    module.encoder.train()
    module.encoder.head.eval()  # e.g. a frozen part kept in eval mode
    scores = ClusteringEvalCallback(tasks=TASKS).evaluate(module)
    assert {t: s.mean for t, s in scores.items()} == pytest.approx(expected_scores(0.3), abs=1e-12)
    assert module.encoder.training and not module.encoder.head.training
    assert all(not c["training"] and c["inference_mode"] for c in module.encoder.calls)


def test_other_ranks_do_not_evaluate_but_log_the_broadcast() -> None:
    callback = ClusteringEvalCallback(tasks=TASKS)
    module = TinySystem()
    shared = {
        "metrics": {
            metric_key("TinyTopicsA"): 0.5,
            metric_key("TinyTopicsB"): 0.25,
            MEAN_KEY: 0.375,
        },
        "error": None,
    }
    broadcasts: list[Any] = []

    def broadcast(obj: Any, src: int = 0) -> Any:
        broadcasts.append(obj)
        return shared

    trainer = SimpleNamespace(
        is_global_zero=False,
        sanity_checking=False,
        current_epoch=0,
        global_step=2,
        loggers=[],
        strategy=SimpleNamespace(broadcast=broadcast),
    )
    logged: dict[str, float] = {}
    module.log = lambda key, value, **kwargs: logged.__setitem__(key, value)  # type: ignore[method-assign]
    callback.on_train_start(trainer, module)  # type: ignore[arg-type]
    callback.on_validation_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert module.encoder.calls == []  # rank > 0 never encodes
    assert len(broadcasts) == 1 and broadcasts[0]["metrics"] is None
    assert logged == shared["metrics"]
    assert callback.history[-1]["scores"] == {"TinyTopicsA": 0.5, "TinyTopicsB": 0.25}


def test_rank_zero_failure_is_shared_then_raised() -> None:
    callback = ClusteringEvalCallback(tasks=["NoSuchTask"])
    sent: list[Any] = []
    trainer = SimpleNamespace(
        is_global_zero=True,
        sanity_checking=False,
        current_epoch=0,
        global_step=2,
        strategy=SimpleNamespace(broadcast=lambda obj, src=0: sent.append(obj) or obj),
    )
    with pytest.raises(UserError, match="unknown task 'NoSuchTask'"):
        callback.on_validation_epoch_end(trainer, TinySystem())  # type: ignore[arg-type]
    assert len(sent) == 1 and "NoSuchTask" in sent[0]["error"]  # the other ranks hear of it


def test_missing_encoder_and_bad_arguments() -> None:
    with pytest.raises(UserError, match="pl_module.encoder"):
        ClusteringEvalCallback(tasks=TASKS).evaluate(pl.LightningModule())
    with pytest.raises(ValueError, match="tasks="):
        ClusteringEvalCallback(tasks=[])
    with pytest.raises(ValueError, match="batch_size=0"):
        ClusteringEvalCallback(batch_size=0)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        ClusteringEvalCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="max_documents=1"):
        ClusteringEvalCallback(max_documents=1)
    assert ClusteringEvalCallback().tasks == [
        "BBCNewsHeadlines",
        "BBCNewsArticles",
        "WordNetNounGlosses",
        "DebianFortunes",
        "KJVBiblePassages",
        "EmojiNames",
    ]
    assert ClusteringEvalCallback().split == "dev"


def test_projector_logs_a_labelled_sample_of_each_task_at_each_evaluation(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    callback = ClusteringEvalCallback(tasks=TASKS, projector_samples=10)
    logger = TensorBoardLogger(tmp_path, name="run", version="")
    calls: list[dict[str, Any]] = []
    logger.experiment.add_embedding = lambda mat, **kw: calls.append({"mat": mat, **kw})
    fit(make_trainer(tmp_path, [callback], logger=logger), TinySystem())
    # baseline + 2 validations, 2 tasks each
    assert [(c["tag"], c["global_step"]) for c in calls] == [
        (f"mteb/{t}", step) for step in (0, 2, 4) for t in TASKS
    ]
    first = calls[0]
    assert first["mat"].shape == (10, 8) and len(first["metadata"]) == 10
    label_of = _label_of()
    texts = callback.projector_texts()[TASKS[0]][0]
    assert first["metadata"] == [label_of[t] for t in texts]  # each vector with its own label
    assert callback.projector_texts()[TASKS[0]] == callback.projector_texts()[TASKS[0]]  # seeded
    too_many = ClusteringEvalCallback(tasks=TASKS, projector_samples=999)
    with pytest.raises(ValueError, match="projector_samples=999 is larger than task TinyTopicsA"):
        fit(make_trainer(tmp_path / "b", [too_many]), TinySystem())


def test_report_split_scores_test_at_start_and_end_only(tmp_path: Path) -> None:
    callback = ClusteringEvalCallback(tasks=TASKS, report_split="test")
    module = TinySystem()
    trainer = make_trainer(tmp_path, [callback])
    fit(trainer, module)
    stages = [(h["stage"], h["split"], h["step"]) for h in callback.history]
    assert stages == [
        ("baseline", "dev", 0),
        ("start", "test", 0),
        ("validation", "dev", 2),
        ("validation", "dev", 4),
        ("trained", "test", 4),
    ]
    # the test entries score the test texts: the same as scoring that split directly
    start, trained = callback.history[1], callback.history[-1]
    assert start["scores"] == pytest.approx(
        evaluate_clustering(SignalEncoder(signal=0.3), TASKS, split="test"), abs=1e-12
    )
    assert trained["mean_v_measure"] > start["mean_v_measure"]
    report = (Path(trainer.log_dir) / "test_report.md").read_text(encoding="utf-8")
    assert "on the test split" in report and "this run, trained" in report
    # the trained run minus its start, per seed
    (line,) = [
        ln for ln in report.splitlines() if ln.startswith("| this run, trained |") and "[" in ln
    ]
    assert "this run, start" in line


def test_report_split_must_differ_from_the_watched_split() -> None:
    with pytest.raises(ValueError, match="report_split='dev'"):
        ClusteringEvalCallback(tasks=TASKS, report_split="dev")


def test_seed_report_averages_training_runs_per_evaluation_seed(tmp_path: Path) -> None:
    """Two runs of one recipe (here: 2 and 3 training batches per epoch), read back from their
    folders: the recipe's row is the per-seed mean of the runs' test scores, and it is paired
    against the start."""
    from llm_embed.eval.seed_report import cli_main

    runs = []
    for batches in (2, 3):
        callback = ClusteringEvalCallback(tasks=TASKS, report_split="test")
        trainer = make_trainer(tmp_path / f"b{batches}", [callback], limit_train_batches=batches)
        fit(trainer, TinySystem())
        runs.append((Path(trainer.log_dir), callback.history[-1]))
    (first, a), (second, b) = runs
    assert a["stage"] == b["stage"] == "trained" and a["v_measures"] != b["v_measures"]
    # the baseline's folder as the callback writes it: its own grid, where it is the "model"
    (first / "test-baseline").mkdir()
    baseline = [{"model": "base", "role": "model", "split": "test", "task": t, "seeds": a["seeds"],
                 "v_measures": [0.1 + 0.01 * i for i in range(len(a["seeds"]))],
                 "v_measure": 0.12} for t in TASKS]  # fmt: skip
    (first / "test-baseline" / "results.json").write_text(json.dumps(baseline), encoding="utf-8")
    out = tmp_path / "report"
    cli_main([str(first), str(second), "--name", "tiny", "--out", str(out)])
    rows = {r["row"]: r for r in json.loads((out / "report.json").read_text(encoding="utf-8"))}
    mean = rows["tiny, mean of 2 training seeds"]["scores"]
    for task in TASKS:
        expected = [
            (x + y) / 2 for x, y in zip(a["v_measures"][task], b["v_measures"][task], strict=True)
        ]
        assert mean[task]["v_measures"] == pytest.approx(expected, abs=1e-12)
    assert rows["tiny, untrained start"]["role"] == "baseline" == rows["base"]["role"]
    assert rows["base"]["scores"][TASKS[0]]["v_measures"] == baseline[0]["v_measures"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| tiny, mean of 2 training seeds |" in report and "Paired differences" in report
    assert "| tiny, mean of 2 training seeds |  |  | base |" in report  # paired against it
    # a run folder without a finished test report is named in one line
    with pytest.raises(UserError, match="has no mteb_scores.json"):
        cli_main([str(first), str(tmp_path), "--out", str(out)])


def test_a_task_prompt_for_a_task_never_scored_is_refused_before_training(tmp_path: Path) -> None:
    callback = ClusteringEvalCallback(tasks=TASKS)
    module = TinySystem()
    # a known task that this run does not score (the default's glosses prompt, a callback on a
    # subset of the suite) is fine; a name that is no task at all is a typo
    module.encoder.task_prompts = {"TinyTopicsA": "clustering", "WordNetNounGlosses": "clustering",
                                   "WordNetNounGloss": "clustering"}  # fmt: skip
    trainer = make_trainer(tmp_path, [callback])
    with pytest.raises(UserError, match="names 'WordNetNounGloss', which no evaluation task is"):
        fit(trainer, module)
    assert callback.history == [] and module.encoder.calls == []  # nothing was scored or trained
    del module.encoder.task_prompts["WordNetNounGloss"]
    fit(make_trainer(tmp_path / "again", [callback]), module)
    assert callback.history
