"""Export a trained run (adapter merged) or a base model for sentence-transformers and transformers.

Examples::

    python -m llm_embed.export --model checkpoints/run1 --out exports/run1
    python -m llm_embed.export --model smollm2-135m-instruct --pooling mean --prompt none --out exports/base

The folder is a plain Hugging Face model (merged weights, tokenizer) and a sentence-transformers
model at once; ``llm_embed.json`` holds the pooling and prompt and ``README.md`` says how to load
it. Load it with ``llm_embed.inference.export_folder.load_sentence_transformer(path)``. Logic lives
in ``llm_embed.inference.export_folder.export_model``.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

from llm_embed._cli import add_model_options, command_parser, model_options, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    p = command_parser("python -m llm_embed.export", __doc__)
    add_model_options(p)
    p.add_argument(
        "--out", required=True, help="folder to write (must not exist unless --overwrite)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out once the new export is complete"
    )
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`llm_embed.inference.export_folder.export_model`."""
    args = parse(build_parser(), argv)
    from llm_embed.inference.export_folder import export_model

    export_model(
        args.model,
        args.out,
        **model_options(args),
        overwrite=args.overwrite,
        command=shlex.join(["python", "-m", "llm_embed.export", *(sys.argv[1:] if argv is None else argv)]),
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
