"""Train an embedding model: ``python -m llm_embed.fit --config configs/default.yaml``.

Any config value can be overridden on the command line (``--trainer.max_steps 20``,
``--model.lr 1e-4``); ``--print_config`` shows the resolved config. Resume an interrupted run
with ``--ckpt_path checkpoints/<run>/checkpoints/last.ckpt``. Multi-GPU: ``--trainer.devices 4
--trainer.strategy ddp`` (see the README).
"""

from __future__ import annotations

import sys

from llm_embed.cli import run_cli


def cli_main(args: list[str] | None = None) -> None:
    """Parse the config, build model/data/trainer and fit; the resolved config lands in the run folder."""
    from lightning.pytorch.cli import LightningCLI

    from llm_embed.data.datamodule import PairDataModule
    from llm_embed.module import EmbeddingModule

    class FitCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--ckpt_path",
                type=str | None,
                default=None,
                help="Resume from this checkpoint (e.g. checkpoints/<run>/checkpoints/last.ckpt).",
            )

    cli = FitCLI(
        EmbeddingModule,
        PairDataModule,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
