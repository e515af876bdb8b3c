"""Drop the pairs whose positive talks about the task instead of the anchor's content.

The generator's rule filter (:mod:`llm_embed.data.filters`) rejects a positive that names "the
sentence" or "a teacher would"; still, about a fifth of the committed LLM-written positives are
of the form "The teacher ...", "A question like ..." or "The answer would be ...". This pass
applies the stricter rule (:func:`~llm_embed.data.filters.talks_about_the_task`) to a pairs file
that exists, so no pair is regenerated:

    python -m llm_embed.data.meta_filter --pairs data/pairs/P.jsonl --out data/pairs/P.strict.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from llm_embed._cli import run_cli
from llm_embed.data.filters import talks_about_the_task
from llm_embed.data.pairs import read_pairs, write_pairs
from llm_embed.errors import UserError


def split_task_talk(pairs: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """``(kept, dropped)``: the pairs whose positive does not / does talk about the task, each in
    their original order."""
    kept: list[dict] = []
    dropped: list[dict] = []
    for p in pairs:
        (dropped if talks_about_the_task(p["anchor"], p["positive"]) else kept).append(p)
    return kept, dropped


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llm_embed.data.meta_filter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pairs", type=Path, required=True, help="JSONL pairs file to filter")
    parser.add_argument("--out", type=Path, required=True, help="JSONL file for the kept pairs")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.pairs.resolve():
        raise UserError(f"--out {args.out} is the input file: give another path")
    pairs = read_pairs(args.pairs)
    kept, dropped = split_task_talk(pairs)
    if not kept:
        raise UserError(f"every positive in {args.pairs} talks about the task: no pair to write")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(args.out, kept)
    counts = Counter(str(p.get("instruction", "?")) for p in dropped)
    by = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(f"kept {len(kept)} of {len(pairs)} pairs (dropped by instruction: {by or 'none'}) -> {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
