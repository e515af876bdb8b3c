"""What a killed training run needs to resume exactly: atomic checkpoints, safe loading, replayable randomness.

- :class:`AtomicCheckpointIO` writes each checkpoint atomically (:mod:`llm_embed._fs`: a
  temporary file in the same folder, fsynced and renamed over the old one). Lightning's own
  writer stages the file in the system temp folder and moves it, which is a copy (not atomic)
  when that folder is another file system, so a kill during the copy can leave a truncated
  ``last.ckpt``.
  Overwriting keeps the file it replaces as ``<name>.prev`` until the next save, and
  :func:`read_checkpoint` falls back to it, with a one-line notice, when ``last.ckpt`` is damaged
  (a disk error, a copy cut short): the run then loses one checkpoint interval, not itself.
- :class:`ResumableCheckpoint` is Lightning's ModelCheckpoint, except that a step whose validation
  is due is saved after that validation, not before: Lightning resumes a checkpoint taken between
  a step and its validation without that validation, so a run killed during its final evaluation
  would end without scores.
- :func:`read_checkpoint` loads with ``weights_only=True`` and turns a missing, corrupt or foreign
  file into one-line errors; :func:`check_checkpoint_matches` refuses a checkpoint of another
  LoRA configuration, which non-strict loading would otherwise skip silently.
- :class:`StepSeed` reseeds torch before every training batch from (seed, step, rank), so dropout
  after a resume is what it would have been without the interruption; Lightning does not
  checkpoint RNG states.
- :class:`EpochShuffleSampler` and :class:`ResumableDataLoader` make the shuffle order a function
  of (seed, epoch) and let Lightning checkpoint how far into the epoch the run got, so a resumed
  run continues with the next unseen batch instead of restarting the epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Sampler

from llm_embed._fs import atomic_write, remove_stale_temps
from llm_embed.errors import UserError, first_line

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

log = logging.getLogger(__name__)
RESUME_HINT = "checkpoints/<run>/checkpoints/last.ckpt"
_damaged: set[Path] = set()  # checkpoints found unreadable: never kept as anyone's previous


# -- writing and reading checkpoints --------------------------------------------------------------
def previous_of(path: str | os.PathLike[str]) -> Path:
    """Where a checkpoint's predecessor is kept: ``last.ckpt`` -> ``last.ckpt.prev``."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`llm_embed._fs.atomic_write`: readers see the old or the new file.

    The file it replaces becomes ``<name>.prev`` (a hard link, so both exist at every instant),
    unless it was found damaged.
    """
    remove_stale_temps(path)  # of a writer killed mid-save (one writer per path: rank zero)
    keep = None if Path(path).expanduser().resolve() in _damaged else previous_of(path)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(obj, f)

    atomic_write(path, write, previous=keep)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU with ``weights_only=True``; UserError if it cannot be resumed from.

    A damaged file whose predecessor (``<name>.prev``) loads falls back to it, with a one-line
    notice naming both and the step it resumes from.
    """
    p = Path(path).expanduser()
    try:
        return _read_one(p)
    except UserError:
        prev = previous_of(p)
        if not prev.is_file():
            raise
        try:
            checkpoint = _read_one(prev)
        except UserError:
            raise UserError(
                f"checkpoint {p} and its predecessor {prev} are both damaged: start again without --ckpt_path"
            ) from None
    if p.resolve() not in _damaged:
        _damaged.add(p.resolve())
        if rank_zero_only.rank == 0:
            log.warning(
                "checkpoint %s is damaged or missing; resuming from the one before it, %s (step %s)",
                p, prev, checkpoint.get("global_step"),
            )  # fmt: skip
    return checkpoint


def _read_one(p: Path) -> dict[str, Any]:
    """One checkpoint file, loaded and checked, or a one-line UserError."""
    if not p.is_file():
        raise UserError(
            f"checkpoint {p} not found: pass --ckpt_path {RESUME_HINT} of an earlier run"
        )
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as err:  # truncated zip, random bytes, pickled objects that weights_only refuses
        raise UserError(
            f"checkpoint {p} cannot be loaded ({type(err).__name__}: {first_line(err, 160)}): it is corrupt or not a "
            "safe checkpoint; use another .ckpt of the run, or start again without --ckpt_path"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops"} <= checkpoint.keys():
        raise UserError(
            f"{p} is not a Lightning training checkpoint: pass --ckpt_path {RESUME_HINT}"
        )
    return checkpoint


def check_checkpoint_matches(
    checkpoint: dict[str, Any], module: torch.nn.Module, path: str
) -> None:
    """Raise UserError unless the checkpoint holds exactly the module's trainable weights, same shapes.

    Checkpoints keep only the LoRA weights and load non-strictly, so a checkpoint of another
    LoRA rank or target list would fail deep inside Lightning, and one of another backbone would
    load nothing at all without a word.
    """
    trainable = {n: p.shape for n, p in module.named_parameters() if p.requires_grad}
    saved = {k: v.shape for k, v in checkpoint["state_dict"].items()}
    if saved.keys() != trainable.keys() or any(saved[k] != trainable[k] for k in saved):
        same = sum(1 for k in saved if k in trainable and saved[k] == trainable[k])
        raise UserError(
            f"checkpoint {path} does not fit this model ({same} of {len(trainable)} trainable weights match): "
            "resume with the run's own config, --config checkpoints/<run>/config.yaml"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically in place and always loads with ``weights_only=True``."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        return read_checkpoint(path)


def validation_due(trainer: Trainer) -> bool:
    """Whether the fit loop validates right after the training batch that just ended."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except AttributeError:  # another Lightning: no deferral, ModelCheckpoint's own behaviour
        return False


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that saves a step with a validation only after it has run.

    Lightning resumes a checkpoint written between a training step and its validation as if that
    validation had happened (at ``max_steps`` the run simply ends), so a run killed during its
    final evaluation would resume into a model without scores. Here a save that falls on such a
    step, and every step that validates, is deferred to the end of the validation (Lightning's
    own deferral, as for a monitored metric), so the checkpoint holds the scores too. Every
    ``ModelCheckpoint`` argument keeps its meaning.
    """

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if validation_due(trainer):
            if not self._should_skip_saving_checkpoint(trainer):
                self._defer_save_until_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


# -- randomness that replays ----------------------------------------------------------------------
def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one training step (numpy's SeedSequence hashing)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


class StepSeed(L.Callback):
    """Reseed torch before each training batch, so the step's dropout masks depend on (seed, step) only."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_step, trainer.global_rank))


def install(trainer: Trainer, seed: int | None) -> None:
    """Give a trainer atomic checkpoint writes and, with a seed, per-step reseeding.

    A checkpoint IO the config chose itself (a plugin) is left alone.
    """
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    if isinstance(seed, int) and not isinstance(seed, bool):
        trainer.callbacks.insert(0, StepSeed(seed))


# -- data order that resumes ----------------------------------------------------------------------
class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on (seed, epoch).

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume), so epoch ``e``
    has the same order whether or not the run was interrupted. A shared ``torch.Generator``
    would continue from wherever the killed process left it.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(step_seed(self.seed, self.epoch))
        yield from torch.randperm(self.n, generator=generator).tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning checkpoints: it records the batches it delivered this epoch.

    Lightning saves ``state_dict()`` of every train loader that has one and hands it back on
    resume, before the first ``iter()``; the first pass after that skips the batches the
    interrupted epoch had already used. The skip applies only when the sampler's epoch is the
    saved one (a checkpoint from an epoch's end resumes into a fresh epoch). Skipped batches are
    still collated, which costs little for text pairs. Pair with :class:`EpochShuffleSampler`
    (any sampler whose order is a function of its epoch works).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered = 0  # batches yielded in the current pass
        self._resume: dict[str, int | None] | None = None

    def _epoch(self) -> int | None:
        return getattr(self.sampler, "epoch", None)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches(super().__iter__())

    def _batches(self, inner: Iterator[Any]) -> Iterator[Any]:
        # A generator: this body runs at the first next(), after Lightning's set_epoch().
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None and resume["epoch"] == self._epoch():
            skip = int(resume["batches"] or 0)
        self._delivered = 0
        end = object()
        for _ in range(skip):
            if next(inner, end) is end:
                return
            self._delivered += 1
        for batch in inner:
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int | None]:
        return {"epoch": self._epoch(), "batches": self._delivered}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self._resume = {"epoch": state.get("epoch"), "batches": state.get("batches", 0)}
