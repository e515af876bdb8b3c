"""Paired differences on one split: an ``evaluate`` results.json against a fit run's own scores.

A lever that changes only how a trained run is scored (``--calibrate-on-texts``, a prompt) is
compared with the scores the run's callback logged on the same split and seeds, per evaluation
seed:

    python -m llm_embed.evaluate --model checkpoints/default-s1 --split dev --calibrate-on-texts \\
        --out docs/results/levers/calibrate-on-texts-s1
    python scripts/paired_runs.py checkpoints/default-s1 docs/results/levers/calibrate-on-texts-s1

A lever that changes training is a second run from the same training seed, compared alike:

    python scripts/paired_runs.py checkpoints/default-s0 checkpoints/levers/lr-2.5e-5-s0

The run's entry is its last ``validation`` entry for ``dev`` and its ``trained`` entry for ``test``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm_embed.eval.intervals import SeedScores, mean_over_tasks
from llm_embed.eval.results import read_records, record_scores


def run_scores(run: Path, stage: str, split: str) -> dict[str, SeedScores]:
    """A fit run's per-seed scores on ``split``: its last entry of ``stage`` in mteb_scores.json."""
    history = json.loads((run / "mteb_scores.json").read_text(encoding="utf-8"))["history"]
    entry = [h for h in history if h["stage"] == stage and h.get("split") == split][-1]
    return {t: SeedScores(tuple(entry["seeds"]), tuple(v)) for t, v in entry["v_measures"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="fit run folder (its mteb_scores.json)")
    parser.add_argument(
        "results",
        type=Path,
        help="evaluate --out folder (its results.json), or a second fit run folder (a lever "
        "trained from the same seed)",
    )
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    args = parser.parse_args()
    stage = "validation" if args.split == "dev" else "trained"
    run = run_scores(args.run, stage, args.split)
    if (args.results / "mteb_scores.json").is_file():
        other = run_scores(args.results, stage, args.split)
    else:
        records = read_records(args.results / "results.json")
        other = {r["task"]: record_scores(r) for r in records if r["split"] == args.split}
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
