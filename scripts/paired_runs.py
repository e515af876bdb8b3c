"""Paired differences on one split: an ``evaluate`` results.json against a fit run's own scores.

A lever that changes only how a trained run is scored (``--calibrate-on-texts``, a prompt) is
compared with the scores the run's callback logged on the same split and seeds, per evaluation
seed:

    python -m llm_embed.evaluate --model checkpoints/default-s1 --split dev --calibrate-on-texts \\
        --out docs/results/levers/calibrate-on-texts-s1
    python scripts/paired_runs.py checkpoints/default-s1 docs/results/levers/calibrate-on-texts-s1

The run's entry is its last ``validation`` entry for ``dev`` and its ``trained`` entry for ``test``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm_embed.eval.intervals import SeedScores, mean_over_tasks
from llm_embed.eval.results import read_records, record_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="fit run folder (its mteb_scores.json)")
    parser.add_argument("results", type=Path, help="evaluate --out folder (its results.json)")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    args = parser.parse_args()
    stage = "validation" if args.split == "dev" else "trained"
    history = json.loads((args.run / "mteb_scores.json").read_text(encoding="utf-8"))["history"]
    entry = [h for h in history if h["stage"] == stage and h.get("split") == args.split][-1]
    run = {t: SeedScores(tuple(entry["seeds"]), tuple(v)) for t, v in entry["v_measures"].items()}
    records = [r for r in read_records(args.results / "results.json") if r["split"] == args.split]
    other = {r["task"]: record_scores(r) for r in records}
    print(f"| task | {args.run.name} | {args.results.name} | difference [95% interval] |")
    print("| --- | ---: | ---: | ---: |")
    rows = [(t, run[t], other[t]) for t in run]
    rows.append(("mean", mean_over_tasks(run), mean_over_tasks({t: other[t] for t in run})))
    for task, mine, theirs in rows:
        diff = theirs.minus(mine)
        star = "*" if diff.excludes_zero() else ""
        print(f"| {task} | {mine.format()} | {theirs.format()} | "
              f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]{star} |")  # fmt: skip


if __name__ == "__main__":
    main()
