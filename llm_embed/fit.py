"""Train an embedding model: ``python -m llm_embed.fit --config configs/default.yaml``.

Any config value can be overridden on the command line (``--trainer.max_steps 20``,
``--model.lr 1e-4``); ``--print_config`` shows the resolved config. Multi-GPU: ``--trainer.devices 4
--trainer.strategy ddp`` (see the README).

Resume a killed run (mid-epoch, mid-evaluation or mid-save) with its own config and last checkpoint::

    python -m llm_embed.fit --config checkpoints/<run>/config.yaml --ckpt_path checkpoints/<run>/checkpoints/last.ckpt

Checkpoints are written atomically and loaded with ``weights_only=True``, a damaged one falls
back to its predecessor; the data order and the dropout masks replay, so the resumed run ends
where an uninterrupted one would (``llm_embed.train.resume``).
A run that fails before its first checkpoint leaves no run folder behind. Logic lives in
``llm_embed.train.launch``.
"""

from __future__ import annotations

import sys

from llm_embed._cli import check_config_files, run_cli


def cli_main(args: list[str] | None = None) -> None:
    """Parse the config (LightningCLI) and call :func:`llm_embed.train.launch.fit`."""
    check_config_files(sys.argv[1:] if args is None else args)
    from llm_embed.train.launch import fit, parse_fit

    fit(parse_fit(args))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
