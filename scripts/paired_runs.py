"""Paired differences on one split: an ``evaluate`` results.json against a fit run's own scores.

A lever that changes only how a trained run is scored (``--calibrate-on-texts``, a prompt) is
compared with the scores the run's callback logged on the same split and seeds, per evaluation
seed:

    python -m llm_embed.evaluate --model checkpoints/default-s1 --split dev --calibrate-on-texts \\
        --out docs/results/levers/calibrate-on-texts-s1
    python scripts/paired_runs.py checkpoints/default-s1 docs/results/levers/calibrate-on-texts-s1

A lever that changes training is a second run from the same training seed, compared alike:

    python scripts/paired_runs.py checkpoints/default-s0 checkpoints/levers/lr-2.5e-5-s0

Comma-separated runs are a recipe over training seeds: per evaluation seed, the mean of its runs.

The run's entry is its last ``validation`` entry for ``dev`` and its ``trained`` entry for ``test``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm_embed.eval.intervals import SeedScores, mean_of, mean_over_tasks
from llm_embed.eval.results import read_records, record_scores


def run_scores(run: Path, stage: str, split: str) -> dict[str, SeedScores]:
    """A fit run's per-seed scores on ``split``: its last entry of ``stage`` in mteb_scores.json."""
    history = json.loads((run / "mteb_scores.json").read_text(encoding="utf-8"))["history"]
    entry = [h for h in history if h["stage"] == stage and h.get("split") == split][-1]
    return {t: SeedScores(tuple(entry["seeds"]), tuple(v)) for t, v in entry["v_measures"].items()}


def scores_of(folder: Path, stage: str, split: str) -> dict[str, SeedScores]:
    """A fit run's scores, or an ``evaluate`` folder's records on ``split``."""
    if (folder / "mteb_scores.json").is_file():
        return run_scores(folder, stage, split)
    records = read_records(folder / "results.json")
    return {r["task"]: record_scores(r) for r in records if r["split"] == split}


def recipe_scores(folders: list[Path], stage: str, split: str) -> dict[str, SeedScores]:
    """Per task and evaluation seed, the mean over the training runs of one recipe."""
    runs = [scores_of(f, stage, split) for f in folders]
    return {t: mean_of([r[t] for r in runs]) for t in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", help="fit run folder (its mteb_scores.json); comma-separated runs: their mean"
    )
    parser.add_argument(
        "results",
        help="evaluate --out folder (its results.json), or a second fit run folder (a lever "
        "trained from the same seed); comma-separated, in the order of the first runs' seeds",
    )
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    args = parser.parse_args()
    stage = "validation" if args.split == "dev" else "trained"
    mine_folders = [Path(p) for p in args.run.split(",")]
    their_folders = [Path(p) for p in args.results.split(",")]
    run = recipe_scores(mine_folders, stage, args.split)
    other = recipe_scores(their_folders, stage, args.split)
    name = lambda folders: "+".join(f.name for f in folders)  # noqa: E731
    print(f"| task | {name(mine_folders)} | {name(their_folders)} | difference [95% interval] |")
    print("| --- | ---: | ---: | ---: |")
    # an evaluate folder may score a few of the run's tasks (one adapted task): compare those
    tasks = [t for t in run if t in other]
    if not tasks:
        raise SystemExit(f"no task in common between {args.run} and {args.results} on {args.split}")
    rows = [(t, run[t], other[t]) for t in tasks]
    if len(tasks) > 1:
        rows.append(("mean", mean_over_tasks({t: run[t] for t in tasks}),
                     mean_over_tasks({t: other[t] for t in tasks})))  # fmt: skip
    for task, mine, theirs in rows:
        diff = theirs.minus(mine)
        star = "*" if diff.excludes_zero() else ""
        print(f"| {task} | {mine.format()} | {theirs.format()} | "
              f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]{star} |")  # fmt: skip


if __name__ == "__main__":
    main()
