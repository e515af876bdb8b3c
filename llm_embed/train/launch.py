"""The fit command's library side: LightningCLI for the config, then a resumable, tidy ``Trainer.fit``.

:func:`parse_fit` builds model, data and trainer from configs and flags (LightningCLI, run=False);
a missing or corrupt ``--ckpt_path`` fails there, before a model loads or a file is written.
:func:`fit` checks that the checkpoint fits the model, installs atomic checkpoints and per-step
reseeding (:mod:`llm_embed.train.resume`), trains, and removes the run folder of a run that
failed before its first checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from llm_embed._fs import check_output
from llm_embed._machine import describe_machine
from llm_embed._progress import stderr_is_terminal
from llm_embed.data.datamodule import PairDataModule
from llm_embed.errors import UserError
from llm_embed.module import EmbeddingModule
from llm_embed.train import resume
from llm_embed.train.heartbeat import TrainingHeartbeat

log = logging.getLogger(__name__)

# --ckpt_path values that Lightning resolves itself
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")


class FitCLI(LightningCLI):
    """LightningCLI with ``--ckpt_path`` (read early) and one-line errors for bad constructor values."""

    checkpoint: dict[str, Any] | None = None

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume from this checkpoint (e.g. checkpoints/<run>/checkpoints/last.ckpt).",
        )

    def before_instantiate_classes(self) -> None:
        # A missing or corrupt checkpoint fails here, before a model loads or a file is written.
        # Lightning's aliases and sharded (folder) checkpoints are Lightning's to check.
        ckpt = self.config.get("ckpt_path")
        if ckpt and ckpt not in LIGHTNING_CKPT_ALIASES and not Path(ckpt).expanduser().is_dir():
            self.checkpoint = resume.read_checkpoint(ckpt)
        for save_dir in _logger_dirs(self.config):  # a run folder that cannot be written fails now
            check_output(save_dir, folder=True, what="trainer.logger.init_args.save_dir")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # the constructors' one-line checks (lr=-1, on_bad_line=...)
            raise UserError(
                f"bad config value: {err} (fix it in the config or on the command line)"
            ) from None


def _logger_dirs(config: Any) -> list[str]:
    """The ``save_dir`` of each configured logger."""
    loggers = config.get("trainer.logger")
    dirs = []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = getattr(logger, "init_args", None)
        save_dir = init.get("save_dir") if init is not None and hasattr(init, "get") else None
        if save_dir:
            dirs.append(str(save_dir))
    return dirs


def parse_fit(args: list[str] | None = None) -> FitCLI:
    """Parse configs and flags and build model, data and trainer (nothing trains yet)."""
    return FitCLI(
        EmbeddingModule,
        PairDataModule,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
    )


def _new_dirs(path: Path) -> Path | None:
    """The outermost missing folder on the way to ``path`` (None if ``path`` exists)."""
    top = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        top = folder
    return top


# What a run folder holds once a run has started writing into it.
RUN_FILES = ("model", "checkpoints", "config.yaml", "mteb_scores.json")


def resume_command(log_dir: Path) -> str:
    """The command that continues the run in ``log_dir`` (its own config and last checkpoint)."""
    return (
        f"`python -m llm_embed.fit --config {log_dir}/config.yaml "
        f"--ckpt_path {log_dir}/checkpoints/last.ckpt`"
    )


def check_run_folder(log_dir: Path, ckpt_path: str | None) -> None:
    """A new run never lands on another run's files, and a resume continues its own run.

    A second ``fit`` into a run folder would replace the first run's model, config and scores and
    leave its ``last.ckpt`` beside a new ``last-v1.ckpt``; a checkpoint of another folder would
    continue that run under this config's name. Both stop here, in one line.
    """
    resume_hint = resume_command(log_dir)
    if ckpt_path is None:
        held = [name for name in RUN_FILES if (log_dir / name).exists()]
        if held:
            raise UserError(
                f"{log_dir} already holds a run ({', '.join(held)}): name a new run with "
                "--trainer.logger.init_args.name NAME (or --trainer.logger.init_args.version V), "
                f"move that folder away, or resume it with {resume_hint}"
            )
        return
    ckpt = Path(ckpt_path).expanduser().resolve()
    if ckpt.is_file() and log_dir.resolve() not in ckpt.parents:
        owner = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        raise UserError(
            f"--ckpt_path {ckpt_path} belongs to the run in {owner}, not to this config's run "
            f"({log_dir}): resume it with its own config, `python -m llm_embed.fit --config "
            f"{owner}/config.yaml --ckpt_path {ckpt_path}`"
        )


def fit(cli: FitCLI) -> None:
    """Train what :func:`parse_fit` built; the resolved config lands in the run folder."""
    ckpt_path = cli.config.get("ckpt_path")
    if cli.checkpoint is not None:
        resume.check_checkpoint_matches(cli.checkpoint, cli.model, ckpt_path)
        cli.checkpoint = None  # Lightning reads the file again; keep one copy in memory at most
    log_dir = cli.trainer.log_dir
    if log_dir and ckpt_path not in LIGHTNING_CKPT_ALIASES:
        check_run_folder(Path(log_dir), ckpt_path)
    resume.install(cli.trainer, cli.config.get("seed_everything"))
    if not stderr_is_terminal() and not any(
        isinstance(c, TrainingHeartbeat) for c in cli.trainer.callbacks
    ):  # a log file sees the bar of a terminal as nothing: a line a minute instead
        cli.trainer.callbacks.append(TrainingHeartbeat())
    created = _new_dirs(Path(log_dir)) if log_dir and cli.trainer.is_global_zero else None
    machine = describe_machine() if cli.trainer.is_global_zero else ""
    rank_zero_info(f"machine: {machine}")
    start = time.monotonic()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except BaseException as err:
        # Bad pairs, a NaN at the first step, ...: a run folder without a checkpoint is only clutter.
        if created is not None and created.is_dir() and not any(created.rglob("*.ckpt")):
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(err, SIGTERMException):  # a SystemExit with no code: exit 0 unless caught
            where = f"at step {cli.trainer.global_step}"
            last = Path(log_dir or ".") / "checkpoints" / "last.ckpt"
            fix = (
                f"resume it with {resume_command(Path(log_dir))}"
                if last.is_file()
                else ("no checkpoint was written yet, so start it again")
            )
            print(f"error: fit was stopped by SIGTERM {where}, unfinished: {fix}", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    rank_zero_info(f"fit took {(time.monotonic() - start) / 60:.1f} min (machine: {machine})")
    encoder = cli.model.encoder
    if encoder.num_truncated:
        log.info(
            "%d texts were longer than max_text_tokens=%d and were cut to it (training, validation "
            "and evaluation together); raise model.encoder.init_args.max_text_tokens to keep more",
            encoder.num_truncated,
            encoder.max_text_tokens,
        )
