"""V-measure of one model's vectors cut short (Matryoshka-style) and quantized, from ONE encoding pass.

The model's own ``Encoder.encode`` embeds each suite task once; every view is then scored through
the same mteb path as ``evaluate`` (``evaluate_clustering``): the first ``d`` dimensions,
renormalised (what ``--truncate-dim d`` gives), and the full vectors quantized by
sentence-transformers' ``quantize_embeddings`` as ``encode --precision`` writes them (int8 with
ranges over the task's texts; binary as +-1 per bit), which k-means then reads as numbers.

    python -m benchmarks.compact_vectors --model checkpoints/recipe/weighted-mean-tau-0.05-s0 \
        --dims 640,256,128,64 --out docs/results/compact/weighted-mean-tau-0.05-s0.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import report_scores, scores_table, write_scores
from llm_embed._machine import describe_machine
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.tasks import OFFLINE_SUITE
from llm_embed.inference.embed_file import quantize
from llm_embed.inference.load import load_model


class CachedView:
    """Looks like an encoder to mteb: a view (``transform``) of vectors embedded once per text."""

    def __init__(self, encoder: Any, cache: dict[str, torch.Tensor], transform) -> None:
        self.encoder, self.cache, self.transform = encoder, cache, transform
        self.name = encoder.name

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, prompt=None, **_: Any):
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.encoder.encode(missing, batch_size=batch_size), strict=True))
        return self.transform(torch.stack([self.cache[t] for t in texts]))


def truncated(d: int):
    return lambda v: F.normalize(v[:, :d], dim=-1)


def quantized(precision: str):
    def view(v: torch.Tensor) -> torch.Tensor:
        q = quantize(v.numpy(), precision)  # int8 ranges: these texts
        if precision in ("binary", "ubinary"):
            packed = (q.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else q
            bits = np.unpackbits(packed, axis=1)[:, : v.shape[1]]  # "binary" stores bytes - 128
            return torch.from_numpy(bits.astype(np.float32) * 2 - 1)
        return torch.from_numpy(q.astype(np.float32))

    return view


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="anything evaluate's --model takes")
    parser.add_argument("--dims", default="256,128,64", help="leading dimensions to keep")
    parser.add_argument("--precisions", default="int8,binary")
    parser.add_argument("--tasks", default=",".join(OFFLINE_SUITE))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.compact_vectors", *(argv or sys.argv[1:])])
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    encoder = load_model(args.model)
    tasks, cache = args.tasks.split(","), {}
    full = encoder.embed_dim
    views = [("float32", full, "float32", lambda v: v)]
    views += [(f"first {d}", d, "float32", truncated(d)) for d in map(int, args.dims.split(",")) if d < full]
    views += [(p, full, p, quantized(p)) for p in args.precisions.split(",") if p]
    rows = []
    for label, dim, precision, transform in views:
        scores = evaluate_clustering(CachedView(encoder, cache, transform), tasks)
        bytes_per = dim * 4 if precision == "float32" else (dim if "int8" in precision else dim // 8)
        mean = report_scores(f"{label:<10} {bytes_per:>5} B", scores)
        rows.append({"view": label, "dims": dim, "precision": precision, "bytes": bytes_per,
                     **scores, "mean": mean})  # fmt: skip
    record = {"model": args.model, "command": command, "machine": machine, "rows": rows}
    write_scores(args.out, record, markdown)

def markdown(record: dict[str, Any]) -> str:
    """One line per view: its bytes per vector, V-measure per task and the mean."""
    lines = [
        f"# Shorter and compact vectors: {record['model']}",
        "",
        f"Reproduce: `{record['command']}` (machine: {record['machine']}). One encoding pass; "
        "`first d`: the leading d dimensions renormalised (`--truncate-dim d`); `int8`/`binary`: "
        "`encode --precision` of the full vectors (int8 ranges over each task's texts).",
        "",
        *scores_table(record["rows"], [("vectors", "view"), ("bytes", "bytes")], ("dims", "precision")),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
