"""Generate the training pairs of a config without training: ``python -m llm_embed.synth --config cfg.yaml``.

Takes the ``data:`` section of a fit config (its other sections are ignored) or a file holding only
that section, so the pairs a run trains on and the pairs made here share one cache entry.
``--config`` works as in ``fit``: ``--config=x`` and several overlays, later ones winning. Any
value can be overridden (``--data.num_source 500``, ``--data.generator.init_args.batch_size 64``).
Killing it and starting again continues where it stopped. At the end it prints the filter report
that is also stored in the manifest beside the pairs.

Examples::

    python -m llm_embed.synth --config configs/default.yaml        # the committed default pairs
    python -m llm_embed.synth --config configs/default.yaml --data.num_source 200 --data.cache_dir data/cache
"""

from __future__ import annotations

import sys
from typing import Any

from llm_embed._cli import command_parser, require_section, run_cli

# Sections of a fit config (LightningCLI) that synth reads past.
FIT_SECTIONS = ("seed_everything", "trainer", "model", "optimizer", "lr_scheduler", "ckpt_path")


def datamodule_from_config(argv: list[str], prog: str = "python -m llm_embed.synth") -> Any:
    """The PairDataModule of a fit config's ``data:`` section (its other sections ignored)."""
    require_section(argv, "data", "give a fit config or a synth config")
    from llm_embed.data.datamodule import PairDataModule

    parser = command_parser(prog, __doc__)
    for section in FIT_SECTIONS:
        parser.add_argument(f"--{section}", type=Any, default=None, help="(fit config; ignored)")
    parser.add_class_arguments(PairDataModule, "data", sub_configs=True)
    return parser.instantiate_classes(parser.parse_args(argv)).data


def cli_main(argv: list[str] | None = None) -> None:
    """Parse ``--config`` (+ overrides) into a PairDataModule and call :func:`~llm_embed.data.datamodule.generate_pairs`."""
    from llm_embed.data.datamodule import generate_pairs

    argv = list(sys.argv[1:] if argv is None else argv)
    print(generate_pairs(datamodule_from_config(argv)))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
