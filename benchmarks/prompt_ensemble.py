"""Score prompt ensembles (MetaEOL-style) of one model: the mean of its vectors under several prompts.

Each prompt costs one encoding pass over the suite (timed); every ensemble is then scored from the
cached vectors through the same mteb path as ``evaluate`` (``evaluate_clustering``), so a
k-prompt ensemble shows its quality beside its cost (k passes). Each pass also keeps the
last-token vector (hooks of :mod:`benchmarks.layer_sweep`), so the one-pass ``weighted_mean_last``
pooling is scored too.

    python -m benchmarks.prompt_ensemble --model checkpoints/recipe/weighted-mean-tau-0.05-s0 \
        --prompts clustering,prompteol,summary,classification \
        --out docs/results/prompt-ensemble/weighted-mean-tau-0.05-s0.json
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import report_scores, scores_table, write_scores
from benchmarks.layer_sweep import Sweep
from llm_embed._machine import describe_machine
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.tasks import OFFLINE_SUITE
from llm_embed.inference.load import load_model

POOLINGS = ("weighted_mean", "last")


class Ensemble:
    """Looks like an encoder to mteb: the normalised mean of cached (prompt, pooling) vectors."""

    def __init__(self, sweep: Sweep, parts: Sequence[tuple[str, int]]) -> None:
        self.sweep, self.parts = sweep, list(parts)
        self.name = sweep.encoder.name

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, prompt=None, **_: Any):
        views = []
        for name, cell in self.parts:
            vectors = self.sweep.vectors(list(texts), name, batch_size)[:, self.sweep.slices[cell]]
            views.append(F.normalize(vectors, dim=-1))
        return F.normalize(torch.stack(views).mean(0), dim=-1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="anything evaluate's --model takes")
    parser.add_argument("--prompts", default="clustering,prompteol,summary,classification")
    parser.add_argument("--tasks", default=",".join(OFFLINE_SUITE))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.prompt_ensemble", *(argv or sys.argv[1:])])
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    prompts, tasks = args.prompts.split(","), args.tasks.split(",")
    sweep = Sweep(load_model(args.model), [-1], POOLINGS)
    wm, last = POOLINGS.index("weighted_mean"), POOLINGS.index("last")
    rows: list[dict[str, Any]] = []

    def score(label: str, parts: list[tuple[str, int]], passes: int) -> None:
        start = time.perf_counter()
        scores = evaluate_clustering(Ensemble(sweep, parts), tasks)
        seconds = time.perf_counter() - start  # the first use of a prompt includes its pass
        mean = report_scores(f"{label:<45} ({seconds:.0f} s)", scores)
        rows.append({"ensemble": label, "passes": passes, **scores, "mean": mean,
                     "seconds": round(seconds, 1)})  # fmt: skip

    for p in prompts:  # one pass each, timed inside its first score
        score(f"{p} (weighted_mean)", [(p, wm)], 1)
        score(f"{p} (last)", [(p, last)], 1)
        score(f"{p} (weighted_mean_last)", [(p, wm), (p, last)], 1)
    for k in range(2, len(prompts) + 1):
        for combo in itertools.combinations(prompts, k):
            score(" + ".join(combo) + " (weighted_mean)", [(p, wm) for p in combo], k)
    record = {"model": args.model, "command": command, "machine": machine, "rows": rows}
    write_scores(args.out, record, markdown)


def markdown(record: dict[str, Any]) -> str:
    """One line per ensemble: passes over the texts, V-measure per task and the mean."""
    lines = [
        f"# Prompt ensembles: {record['model']}",
        "",
        f"Reproduce: `{record['command']}` (machine: {record['machine']}). "
        "`passes`: encoding passes over the texts, the ensemble's encode-time cost relative to one "
        "prompt. `weighted_mean_last`: the mean of the normalised weighted-mean and last-token "
        "vectors of one pass.",
        "",
        *scores_table(record["rows"], [("ensemble", "ensemble"), ("passes", "passes")], ("seconds",)),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
