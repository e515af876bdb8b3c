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
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from llm_embed._cli import run_cli
from llm_embed._fs import atomic_write_text
from llm_embed.data.filters import talks_about_the_task
from llm_embed.data.pairs import read_pairs
from llm_embed.errors import UserError


def keep_on_topic(pairs: Sequence[dict]) -> list[dict]:
    """The pairs whose positive does not talk about the task, in their original order."""
    return [p for p in pairs if not talks_about_the_task(p["anchor"], p["positive"])]


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
    kept = keep_on_topic(pairs)
    dropped = Counter(
        str(p.get("instruction", "?")) for p in pairs if talks_about_the_task(p["anchor"], p["positive"])
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in kept))
    by = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
    print(f"kept {len(kept)} of {len(pairs)} pairs (dropped by instruction: {by or 'none'}) -> {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
