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
same command continues from the last finished chunk. Logic lives in ``llm_embed.embed_file``.
"""

from __future__ import annotations

import argparse
import sys

from llm_embed.cli import doc_parser, run_cli
from llm_embed.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("python -m llm_embed.encode", __doc__)
    p.add_argument(
        "--model",
        required=True,
        help="run folder, exported folder, packaged name, local folder or hub id",
    )
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
    p.add_argument("--pooling", help="override the pooling (default: the run's, or last)")
    p.add_argument(
        "--prompt", help="override the prompt name or template (default: the run's, or clustering)"
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass (default: 32)"
    )
    p.add_argument(
        "--chunk-size", type=int, default=4096, help="texts per resumable chunk (default: 4096)"
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line, load the model and call :func:`llm_embed.embed_file.embed_file`."""
    args = build_parser().parse_args(argv)
    from llm_embed.embed_file import embed_file, model_fingerprint, prepare
    from llm_embed.exporting import load_model

    options = {
        "parquet": args.parquet,
        "overwrite": args.overwrite,
        "batch_size": args.batch_size,
        "chunk_size": args.chunk_size,
        "field": args.field,
        "id_field": args.id_field,
        "skip_empty": args.skip_empty,
    }
    stats = prepare(args.input, args.out, **options)  # bad input fails before the model loads
    encoder = load_model(args.model, pooling=args.pooling, prompt=args.prompt)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        encoder.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:  # a bad name, or CUDA missing from this torch
        raise UserError(
            f"device {device!r} is not usable here ({str(err)[:120]}): pass --device cpu"
        ) from None
    embed_file(
        encoder,
        args.input,
        args.out,
        progress=not args.no_progress,
        model_id=model_fingerprint(args.model),
        stats=stats,
        **options,
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
