"""Train an embedding model: ``python -m llm_embed.fit --config configs/default.yaml``.

Any config value can be overridden on the command line (``--trainer.max_steps 20``,
``--model.lr 1e-4``); ``--print_config`` shows the resolved config. Multi-GPU: ``--trainer.devices 4
--trainer.strategy ddp`` (see the README).

Resume a killed run (even one killed mid-epoch or mid-save) with its own config and last checkpoint::

    python -m llm_embed.fit --config checkpoints/<run>/config.yaml --ckpt_path checkpoints/<run>/checkpoints/last.ckpt

Checkpoints are written atomically and loaded with ``weights_only=True``; the data order and the
dropout masks replay, so the resumed run ends where an uninterrupted one would (``llm_embed.resume``).
A run that fails before its first checkpoint leaves no run folder behind.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from llm_embed.cli import check_config_files, run_cli
from llm_embed.errors import UserError

log = logging.getLogger("llm_embed.fit")  # not __name__: that is "__main__" under python -m

# --ckpt_path values that Lightning resolves itself
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")


def _new_dirs(path: Path) -> Path | None:
    """The outermost missing folder on the way to ``path`` (None if ``path`` exists)."""
    top = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        top = folder
    return top


def cli_main(args: list[str] | None = None) -> None:
    """Parse the config, build model/data/trainer and fit; the resolved config lands in the run folder."""
    check_config_files(sys.argv[1:] if args is None else args)
    from lightning.pytorch.cli import LightningCLI

    from llm_embed import resume
    from llm_embed.data.datamodule import PairDataModule
    from llm_embed.module import EmbeddingModule

    class FitCLI(LightningCLI):
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

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ValueError as err:  # the constructors' one-line checks (lr=-1, on_bad_line=...)
                raise UserError(
                    f"bad config value: {err} (fix it in the config or on the command line)"
                ) from None

    cli = FitCLI(
        EmbeddingModule,
        PairDataModule,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
    )
    ckpt_path = cli.config.get("ckpt_path")
    if cli.checkpoint is not None:
        resume.check_checkpoint_matches(cli.checkpoint, cli.model, ckpt_path)
        cli.checkpoint = None  # Lightning reads the file again; keep one copy in memory at most
    resume.install(cli.trainer, cli.config.get("seed_everything"))
    log_dir = cli.trainer.log_dir
    created = _new_dirs(Path(log_dir)) if log_dir and cli.trainer.is_global_zero else None
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except BaseException:
        # Bad pairs, a NaN at the first step, ...: a run folder without a checkpoint is only clutter.
        if created is not None and created.is_dir() and not any(created.rglob("*.ckpt")):
            shutil.rmtree(created, ignore_errors=True)
        raise
    encoder = cli.model.encoder
    if encoder.num_truncated:
        log.info(
            "%d texts were longer than max_text_tokens=%d and were cut to it (training, validation "
            "and evaluation together); raise model.encoder.init_args.max_text_tokens to keep more",
            encoder.num_truncated,
            encoder.max_text_tokens,
        )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
