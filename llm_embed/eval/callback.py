"""``ClusteringEvalCallback``: MTEB clustering V-measure of ``pl_module.encoder`` during training.

Runs once before training (the baseline, logged at the current global step, usually 0) and after
every ``every_n_epochs``-th validation epoch. Only global rank 0 evaluates. After a validation
evaluation, rank 0 broadcasts the scores and every rank logs the same values with
``pl_module.log``, so ``ModelCheckpoint(monitor="mteb/mean_v_measure", mode="max")`` works on all
ranks (with ``rank_zero_only=True`` the key would be missing on ranks > 0, and their
ModelCheckpoint would fail). The broadcast is called by all ranks, never by rank 0 alone.

Example:
    >>> trainer = lightning.Trainer(callbacks=[ClusteringEvalCallback(max_documents=1000)])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from llm_embed._fs import atomic_write_text
from llm_embed.errors import UserError
from llm_embed.eval.clustering import score_clustering
from llm_embed.eval.intervals import EVAL_SEEDS, SeedScores, check_seeds, mean_over_tasks
from llm_embed.eval.tasks import (
    LOCAL_TASKS,
    OFFLINE_SUITE,
    check_max_documents,
    check_split,
    get_tasks,
)

logger = logging.getLogger(__name__)

MEAN_KEY = "mteb/mean_v_measure"
SCORES_FILE = "mteb_scores.json"


def metric_key(task_name: str) -> str:
    """The logged key of one task's V-measure, e.g. ``mteb/BBCNewsHeadlines/v_measure``."""
    return f"mteb/{task_name}/v_measure"


class ClusteringEvalCallback(pl.Callback):
    """Evaluate the LightningModule's ``encoder`` on MTEB clustering tasks (rank 0 only).

    Args:
        tasks: Local or real MTEB clustering task names.
        split: The tasks' ``dev`` split (default: every choice a run informs is made on it),
            ``test`` (reported, never chosen on) or ``all``.
        seeds: Evaluation seeds; each score is the mean over them of one embedding pass.
        batch_size: Texts per ``encoder.encode`` call.
        max_documents: Cap on documents per task (seeded subsample); None = task default.
        every_n_epochs: Evaluate after every n-th validation epoch.
        baseline: Also evaluate once at the start of training, before any update.
        projector_samples: Also log this many texts of each task (a seeded sample) with their
            labels to TensorBoard's embedding projector at each evaluation, to watch the
            clusters form; 0 = off.
        report_split: Also score this split (``test``) at the start and at the end of training,
            never in between: it is reported, not watched. None = off.
        report_baseline: A packaged sentence-transformers model scored on ``report_split``
            beside the run (cached across runs); the end of training writes
            ``<log_dir>/test_report.md``: the run, its start and the baseline, with paired
            differences over the evaluation seeds. None = the run and its start alone.

    Attributes:
        history: One dict per evaluation: ``step``, ``epoch``, ``stage`` ("baseline" or
            "validation"), ``scores`` (task -> mean V-measure over the seeds),
            ``mean_v_measure``, ``seeds`` and ``v_measures`` (task -> one value per seed).
    """

    def __init__(
        self,
        # A real list default so LightningCLI's --help shows the tasks; copied below, never mutated.
        tasks: list[str] = list(OFFLINE_SUITE),  # noqa: B006
        split: str = "dev",
        seeds: list[int] = list(EVAL_SEEDS),  # noqa: B006
        batch_size: int = 32,
        max_documents: int | None = None,
        every_n_epochs: int = 1,
        baseline: bool = True,
        projector_samples: int = 0,
        report_split: str | None = None,
        report_baseline: str | None = None,
    ) -> None:
        super().__init__()
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise ValueError(f"tasks={tasks!r} is invalid; give a non-empty list of task names")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid; use an int >= 1")
        check_max_documents(max_documents)
        check_split(split)
        self.split = split
        self.seeds = list(check_seeds(seeds))
        if report_split is not None:
            check_split(report_split)
            if report_split == split:
                raise ValueError(
                    f"report_split={report_split!r} is the split watched during training; "
                    "use test (or None)"
                )
        self.report_split = report_split
        self.report_baseline = report_baseline
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise ValueError(f"every_n_epochs={every_n_epochs!r} is invalid; use an int >= 1")
        self.tasks = tasks
        self.batch_size = batch_size
        self.max_documents = max_documents
        self.every_n_epochs = every_n_epochs
        self.baseline = baseline
        if isinstance(projector_samples, bool) or not isinstance(projector_samples, int) or projector_samples < 0:
            raise ValueError(
                f"projector_samples={projector_samples!r} is invalid; use an int >= 0 (0 = off)"
            )
        self.projector_samples = projector_samples
        self._samples: dict[str, tuple[list[str], list[str]]] | None = None
        self.history: list[dict[str, Any]] = []

    def projector_texts(self) -> dict[str, tuple[list[str], list[str]]]:
        """Each task's seeded projector sample (texts, labels), read once; ValueError if too few."""
        if self._samples is None:
            import random

            from llm_embed.eval.maps import task_texts

            samples = {}
            for task in self.tasks:
                texts, labels = task_texts(task, split=self.split)
                if len(texts) < self.projector_samples:
                    raise ValueError(
                        f"projector_samples={self.projector_samples} is larger than task {task}'s "
                        f"{len(texts)} texts; use at most {len(texts)}"
                    )
                keep = sorted(random.Random(0).sample(range(len(texts)), self.projector_samples))
                samples[task] = ([texts[i] for i in keep], [labels[i] for i in keep])
            self._samples = samples
        return self._samples

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the encoder's per-task prompts and the projector sample against the tasks before
        training starts: a prompt for a task that is never scored is a typo, not a choice."""
        prompts = getattr(getattr(pl_module, "encoder", None), "task_prompts", None) or {}
        for name in sorted(set(prompts) - set(self.tasks)):  # a known task scored elsewhere is fine
            try:
                get_tasks([name])
            except UserError:
                raise UserError(
                    f"model.encoder.init_args.task_prompts names {name!r}, which no evaluation "
                    f"task is (local tasks: {', '.join(LOCAL_TASKS)}): fix the name or drop it"
                ) from None
        if self.projector_samples and trainer.is_global_zero:
            self.projector_texts()

    def evaluate(
        self, pl_module: pl.LightningModule, split: str | None = None
    ) -> dict[str, SeedScores]:
        """Scores of ``pl_module.encoder`` on ``split`` (default: the watched one) in eval mode
        under inference mode; modes restored after."""
        encoder = getattr(pl_module, "encoder", None)
        if encoder is None:
            raise UserError(
                f"ClusteringEvalCallback needs pl_module.encoder; {type(pl_module).__name__} has none"
            )
        # Restore each submodule's own mode (e.g. a frozen backbone kept in eval beside LoRA).
        calibrate = getattr(pl_module, "calibrate", None)
        if callable(calibrate):  # the module's dim_scale from training texts, before scoring
            calibrate()
        modes = [(m, m.training) for m in encoder.modules()] if hasattr(encoder, "modules") else []
        if hasattr(encoder, "eval"):
            encoder.eval()
        merged = encoder.merged_adapter() if hasattr(encoder, "merged_adapter") else nullcontext()
        try:
            with merged, torch.inference_mode():
                scores = score_clustering(
                    encoder,
                    self.tasks,
                    split=split or self.split,
                    seeds=self.seeds,
                    batch_size=self.batch_size,
                    max_documents=self.max_documents,
                )
                self._projections = {
                    task: (encoder.encode(texts, batch_size=self.batch_size), labels)
                    for task, (texts, labels) in (
                        self.projector_texts().items()
                        if self.projector_samples and split in (None, self.split)
                        else []
                    )
                }
                return scores
        finally:
            for module, training in modes:
                module.training = training

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> dict[str, float]:
        """Evaluate the watched split, record it in ``history``, log it; returns the metrics dict."""
        per_seed = self._score(trainer, pl_module, stage, self.split)
        metrics = {metric_key(name): s.mean for name, s in per_seed.items()}
        metrics[MEAN_KEY] = sum(s.mean for s in per_seed.values()) / len(per_seed)
        for task, (vectors, labels) in getattr(self, "_projections", {}).items():
            for lightning_logger in trainer.loggers:
                add = getattr(getattr(lightning_logger, "experiment", None), "add_embedding", None)
                if callable(add):
                    add(vectors, metadata=labels, tag=f"mteb/{task}", global_step=trainer.global_step)
        self._projections = {}
        return metrics

    def _score(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, split: str
    ) -> dict[str, SeedScores]:
        """Score ``split``, append it to ``history`` as ``stage`` and log a one-line summary."""
        start = time.monotonic()
        per_seed = self.evaluate(pl_module, split=split)
        scores = {name: s.mean for name, s in per_seed.items()}
        self._record(
            trainer,
            stage,
            scores,
            sum(scores.values()) / len(scores),
            {name: list(s.values) for name, s in per_seed.items()},
            split=split,
        )
        logger.info(
            "mteb clustering (%s, step %d, %s split, %d seeds): mean V-measure %s | %s | %.1f s",
            stage,
            trainer.global_step,
            split,
            len(self.seeds),
            mean_over_tasks(per_seed).format(),
            ", ".join(f"{name} {value.format()}" for name, value in per_seed.items()),
            time.monotonic() - start,
        )
        return per_seed

    def _record(
        self,
        trainer: pl.Trainer,
        stage: str,
        scores: dict[str, float],
        mean: float,
        v_measures: dict[str, list[float]] | None = None,
        split: str | None = None,
    ) -> None:
        """Append to ``history``; rank 0 also rewrites ``<log_dir>/mteb_scores.json`` with it."""
        entry = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "stage": stage,
            "split": split or self.split,
            "scores": dict(scores),
            "mean_v_measure": mean,
        }
        if v_measures is not None:  # rank 0's record (the others get the means alone)
            entry.update(seeds=list(self.seeds), v_measures=v_measures)
        self.history.append(entry)
        if trainer.is_global_zero and trainer.log_dir is not None:
            # Plain numbers a script can read without TensorBoard (the recipe study does).
            path = Path(trainer.log_dir) / SCORES_FILE
            atomic_write_text(
                path, json.dumps({"tasks": self.tasks, "history": self.history}, indent=1)
            )

    def state_dict(self) -> dict[str, Any]:
        """The history rides in each checkpoint, so a resumed run's score file keeps every row."""
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def report_rows(self, trainer: pl.Trainer) -> list[Any]:
        """The report table's rows: the baseline model (scored or cached), the start, the run."""
        from llm_embed.eval.results import Row, record_scores

        rows = []
        if self.report_baseline is not None:
            from llm_embed.eval.grid import EvalConfig, evaluate_grid

            records = evaluate_grid(
                EvalConfig(
                    model=self.report_baseline,
                    kind="sentence-transformers",
                    tasks=list(self.tasks),
                    split=self.report_split,
                    seeds=list(self.seeds),
                    max_documents=self.max_documents,
                    out=str(Path(trainer.log_dir) / f"{self.report_split}-baseline"),
                    progress=False,
                    map_samples=0,
                )
            )
            scores = {r["task"]: record_scores(r) for r in records}
            rows.append(Row(self.report_baseline, "baseline", "native", "none", scores))
        for stage, role in (("start", "baseline"), ("trained", "model")):
            entry = next(
                (h for h in reversed(self.history) if h["stage"] == stage and "v_measures" in h),
                None,
            )
            if entry is not None:
                scores = {
                    t: SeedScores(tuple(entry["seeds"]), tuple(v))
                    for t, v in entry["v_measures"].items()
                }
                rows.append(Row(f"this run, {stage}", role, "", "", scores))
        return rows

    def write_report(self, trainer: pl.Trainer) -> Path | None:
        """``<log_dir>/test_report.md``: the report split's table with paired differences."""
        from llm_embed.eval.plan import DocCaps
        from llm_embed.eval.results import provenance, render_markdown

        if trainer.log_dir is None:
            return None
        text = render_markdown(
            self.report_rows(trainer),
            self.tasks,
            split=self.report_split,
            seeds=self.seeds,
            caps=DocCaps(self.max_documents),
            provenance=provenance(),
        )
        path = Path(trainer.log_dir) / f"{self.report_split}_report.md"
        atomic_write_text(path, text)
        logger.info("%s split report (also in %s):\n%s", self.report_split, path, text)
        return path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the report split once at the end of training and write its report (rank 0)."""
        if self.report_split is None or not trainer.is_global_zero:
            return
        if not any(h["stage"] == "trained" and h["step"] == trainer.global_step for h in self.history):
            self._score(trainer, pl_module, "trained", self.report_split)
        self.write_report(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The report, if ``on_train_end`` did not run: Lightning skips it when a resumed run
        starts at ``max_steps`` (killed after its final checkpoint, before the end)."""
        if self.report_split is None or not trainer.is_global_zero:
            return
        if not (Path(trainer.log_dir) / f"{self.report_split}_report.md").is_file() or not any(
            h["stage"] == "trained" and h["step"] == trainer.global_step for h in self.history
        ):
            self.on_train_end(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Baseline before any update; rank 0 logs straight to the loggers (self.log is not allowed here).

        A resumed run has its baseline in the restored history already (it is of step 0).
        """
        resumed = any(h["stage"] == "baseline" for h in self.history)
        if not self.baseline or resumed or not trainer.is_global_zero:
            return
        metrics = self._run(trainer, pl_module, "baseline")
        for lightning_logger in trainer.loggers:
            lightning_logger.log_metrics(metrics, step=trainer.global_step)
        if self.report_split is not None:
            self._score(trainer, pl_module, "start", self.report_split)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate on rank 0, share the result with every rank, log it on every rank."""
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        outcome: dict[str, Any] = {"metrics": None, "error": None}
        if trainer.is_global_zero:
            try:
                outcome["metrics"] = self._run(trainer, pl_module, "validation")
            except Exception as e:  # re-raised below on every rank, so none hangs
                outcome["error"] = e
        # Every rank calls broadcast (a no-op without DDP); a rank-0 failure reaches all ranks.
        shared = trainer.strategy.broadcast(
            {
                "metrics": outcome["metrics"],
                "error": None if outcome["error"] is None else str(outcome["error"]),
            },
            src=0,
        )
        if outcome["error"] is not None:
            raise outcome["error"]
        if shared["error"] is not None:
            raise UserError(f"clustering evaluation failed on rank 0: {shared['error']}")
        metrics: dict[str, float] = shared["metrics"]
        if not trainer.is_global_zero:
            scores = {k.split("/")[1]: v for k, v in metrics.items() if k != MEAN_KEY}
            self._record(trainer, "validation", scores, metrics[MEAN_KEY])
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)
