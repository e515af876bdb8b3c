"""Cluster a corpus into a report you can open: ``python -m llm_embed.cluster --model M --input texts.txt --out DIR``.

Examples::

    python -m llm_embed.cluster --model checkpoints/run1 --input tickets.txt --out clusters/
    python -m llm_embed.cluster --model gemma3-270m --input docs.jsonl --field body --k 12 --out clusters/
    python -m llm_embed.cluster --model checkpoints/run1 --input sample.jsonl --labels topic --out clusters/
    python -m llm_embed.cluster --model checkpoints/run1 --input tickets.txt --method hdbscan --out clusters/

The texts (``.txt``, one per line, or ``.jsonl``) are embedded through ``encode``'s resumable
chunk store into ``DIR/embeddings.npy`` (kept: a second run on the same model, options and input,
say with another ``--k``, reuses it). Without ``--k``, k-means tries every k of ``--k-range`` and
keeps the best silhouette, printing the curve. ``DIR`` receives:

- ``assignments.parquet`` and ``assignments.jsonl``: id, text, cluster, distance to the centre
  (and the label, with ``--labels``);
- ``clusters.json``: sizes, the top terms of each cluster (class-based TF-IDF), the three texts
  nearest each centre, the silhouette curve, the V-measure against ``--labels``;
- ``report.html``: one self-contained page with the 2-D UMAP map (hover a point to read its
  text) and a table per cluster. It opens from disk, without a server or a network.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from llm_embed._cli import add_model_options, command_parser, model_options, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    from llm_embed.analysis.cluster_corpus import METHODS

    p = command_parser("python -m llm_embed.cluster", __doc__)
    add_model_options(p)
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl file")
    p.add_argument("--out", required=True, help="output folder of the report")
    p.add_argument(
        "--k", type=int | None, default=None, help="number of clusters (default: by silhouette)"
    )
    p.add_argument(
        "--k-range",
        default="2..20",
        help="the k tried when --k is not given, as LOW..HIGH (default: 2..20)",
    )
    p.add_argument(
        "--method",
        default="kmeans",
        choices=list(METHODS),
        help="kmeans or hdbscan (default: kmeans)",
    )
    p.add_argument(
        "--min-cluster-size",
        type=int,
        default=5,
        help="hdbscan: the fewest texts that make a cluster (default: 5)",
    )
    p.add_argument(
        "--labels",
        help="JSONL key of a known label per text: the report gives the V-measure against it",
    )
    p.add_argument("--field", default="text", help="JSONL key of the text (default: text)")
    p.add_argument("--id-field", help="JSONL key of an id (default: the line number)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and UMAP (default: 0)")
    p.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass (default: 32)"
    )
    p.add_argument(
        "--chunk-size", type=int, default=4096, help="texts per resumable chunk (default: 4096)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`llm_embed.analysis.cluster_corpus.cluster_corpus`."""
    args = parse(build_parser(), argv)
    from llm_embed.analysis.cluster_corpus import cluster_corpus

    summary = cluster_corpus(
        args.model,
        args.input,
        args.out,
        k=args.k,
        k_range=args.k_range,
        method=args.method,
        min_cluster_size=args.min_cluster_size,
        labels=args.labels,
        field=args.field,
        id_field=args.id_field,
        seed=args.seed,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        **model_options(args),
    )
    print(summary)


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
