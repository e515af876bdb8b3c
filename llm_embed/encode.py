"""Embed a text or JSONL file: ``python -m llm_embed.encode --model checkpoints/run1 --input texts.txt --out emb.npy``.

Examples::

    python -m llm_embed.encode --model checkpoints/run1 --input texts.txt --out emb.npy
    python -m llm_embed.encode --model exports/run1 --input docs.jsonl --field body --id-field doc_id \\
        --out emb.npy --parquet emb.parquet
    python -m llm_embed.encode --model smollm2-135m-instruct --pooling mean --input texts.txt --out emb.npy

``--model`` is a trained run (its pooling and prompt), an exported folder, or a decoder. Rows of
the ``.npy`` follow the input's texts; ``--parquet`` adds a file with columns ``id`` (the line
number, or the ``--id-field`` value) and ``embedding``. The file is validated first, then embedded
in length-sorted batches and written in chunks under ``<out>.parts/``: if the run is killed, the
same command continues from the last finished chunk. Logic lives in ``llm_embed.inference.embed_file``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from llm_embed._cli import (
    add_distributed_options,
    add_model_options,
    command_parser,
    model_options,
    parse,
    run_cli,
)
from llm_embed.inference.embed_file import PRECISIONS

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    p = command_parser("python -m llm_embed.encode", __doc__)
    add_model_options(p)
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl file")
    p.add_argument("--out", required=True, help="output .npy (N x D float32, input order)")
    p.add_argument(
        "--parquet",
        help="also write this Parquet file with id and embedding columns (needs pyarrow)",
    )
    p.add_argument("--field", default="text", help="JSONL key of the text (default: text)")
    p.add_argument("--id-field", help="JSONL key of an id for --parquet (default: the line number)")
    p.add_argument(
        "--skip-empty", action="store_true", help="skip and count empty texts instead of stopping"
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass (default: 32)"
    )
    p.add_argument(
        "--chunk-size", type=int, default=4096, help="texts per resumable chunk (default: 4096)"
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_distributed_options(p)
    p.add_argument(
        "--precision",
        default="float32",
        choices=list(PRECISIONS),
        help="compact vectors (sentence-transformers' quantize_embeddings): int8/uint8 write "
        "<out>.ranges.npy too; binary/ubinary pack one bit per dimension (default: float32)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`llm_embed.inference.embed_file.encode_file`."""
    args = parse(build_parser(), argv)
    from llm_embed.inference.embed_file import encode_file

    encode_file(
        args.model,
        args.input,
        args.out,
        **model_options(args),
        device=args.device,
        progress=not args.no_progress,
        parquet=args.parquet,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        field=args.field,
        id_field=args.id_field,
        skip_empty=args.skip_empty,
        precision=args.precision,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
