"""Export a trained run (adapter merged) or a base model for sentence-transformers and transformers.

Examples::

    python -m llm_embed.export --model checkpoints/run1 --out exports/run1
    python -m llm_embed.export --model smollm2-135m-instruct --pooling mean --prompt none --out exports/base

The folder is a plain Hugging Face model (merged weights, tokenizer) and a sentence-transformers
model at once; ``llm_embed.json`` holds the pooling and prompt and ``README.md`` says how to load
it. Load it with ``llm_embed.exporting.load_sentence_transformer(path)``. Logic lives in
``llm_embed.exporting.export_model``.
"""

from __future__ import annotations

import argparse
import sys

from llm_embed.cli import doc_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("python -m llm_embed.export", __doc__)
    p.add_argument(
        "--model", required=True, help="run folder (checkpoints/<run>), its model/, or a decoder"
    )
    p.add_argument(
        "--out", required=True, help="folder to write (must not exist unless --overwrite)"
    )
    p.add_argument("--pooling", help="override the pooling (default: the run's, or last)")
    p.add_argument(
        "--prompt", help="override the prompt name or template (default: the run's, or clustering)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out once the new export is complete"
    )
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`llm_embed.exporting.export_model`."""
    args = build_parser().parse_args(argv)
    from llm_embed.exporting import export_model

    export_model(
        args.model, args.out, pooling=args.pooling, prompt=args.prompt, overwrite=args.overwrite
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
