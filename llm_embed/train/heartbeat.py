"""``TrainingHeartbeat``: one plain log line at least a minute apart while training runs.

Lightning's progress bar redraws a terminal line; sent to a file (``nohup``, CI, a scheduler) it
shows nothing for the whole run, so a slow run cannot be told from a hung one. ``fit`` adds this
callback when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch

from llm_embed._progress import LINE_EVERY_S

log = logging.getLogger("llm_embed.train")


class TrainingHeartbeat(pl.Callback):
    """Logs ``step n/N | loss | s/step | ETA`` after a step once ``every_s`` seconds have passed
    since the last line (and after the first and the last step), on global rank 0."""

    def __init__(self, every_s: float = LINE_EVERY_S) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s={every_s!r} is invalid; use seconds > 0")
        self.every_s = every_s
        self._last: tuple[float, int] | None = None  # (when, global step) of the last line

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = (time.monotonic(), trainer.global_step)
        self._first = True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if not trainer.is_global_zero or self._last is None:
            return
        now, step = time.monotonic(), trainer.global_step
        total = int(trainer.estimated_stepping_batches)
        last = step >= total
        if step == self._last[1] or not (
            self._first or last or now - self._last[0] >= self.every_s
        ):
            return
        per_step = (now - self._last[0]) / (step - self._last[1])
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss_text = f"{float(loss):.4f}" if isinstance(loss, torch.Tensor) else "?"
        log.info(
            "step %d/%d | loss %s | %.1f s/step | ETA %.1f min",
            step, total, loss_text, per_step, max(total - step, 0) * per_step / 60,
        )  # fmt: skip
        self._last, self._first = (now, step), False
