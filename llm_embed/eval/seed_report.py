"""One recipe over several training seeds: its report split beside its start and the baseline.

Each ``fit`` run with ``ClusteringEvalCallback(report_split="test", report_baseline=...)`` keeps,
in its run folder, the test scores of its start and of the trained model per evaluation seed
(``mteb_scores.json``) and the baseline's records (``test-baseline/results.json``). This command
reads several such runs of one recipe (training seeds 0, 1, 2, ...) and writes one table:

- the recipe's score is, per evaluation seed, the mean over the training seeds; its interval
  and its paired differences are taken over the evaluation seeds, as for a single run;
- each training seed's own row follows, so the spread between training seeds shows;
- the start and the baseline are the rows the differences are taken against.

Example::

    python -m llm_embed.eval.seed_report checkpoints/default-s0 checkpoints/default-s1 \\
        checkpoints/default-s2 --name default --out docs/results/default-seeds

Writes ``<out>/report.md`` and ``<out>/report.json`` (every per-seed value). Nothing is scored
again: the numbers are the runs' own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_embed._cli import command_parser, parse, run_cli
from llm_embed._fs import atomic_write_text
from llm_embed.errors import UserError
from llm_embed.eval.callback import SCORES_FILE
from llm_embed.eval.intervals import SeedScores, mean_of
from llm_embed.eval.results import Row, paired_lines, read_records, record_scores

# The stages of a run's history that hold each split's start and trained scores.
STAGES = {"test": ("start", "trained"), "dev": ("baseline", "validation")}


def run_scores(run: Path, split: str) -> tuple[dict[str, SeedScores], dict[str, SeedScores]]:
    """A run's (start, trained) scores on ``split``: the first start entry and the last trained one."""
    path = run / SCORES_FILE
    if not path.is_file():
        raise UserError(f"{run} has no {SCORES_FILE}: give the folder of a finished fit run")
    history = json.loads(path.read_text(encoding="utf-8"))["history"]
    start_stage, trained_stage = STAGES[split]

    def scores(entry: Mapping[str, Any]) -> dict[str, SeedScores]:
        seeds = tuple(entry["seeds"])
        return {t: SeedScores(seeds, tuple(v)) for t, v in entry["v_measures"].items()}

    entries = [h for h in history if h.get("split") == split and "v_measures" in h]
    starts = [h for h in entries if h["stage"] == start_stage]
    trained = [h for h in entries if h["stage"] == trained_stage]
    if not starts or not trained:
        raise UserError(
            f"{run}/{SCORES_FILE} has no {start_stage} and {trained_stage} scores on the {split} "
            "split: the run did not finish, or its callback did not score that split"
        )
    return scores(starts[0]), scores(trained[-1])


def baseline_scores(run: Path, split: str) -> tuple[str, dict[str, SeedScores]] | None:
    """The baseline model's name and scores kept in ``<run>/<split>-baseline/results.json``."""
    # the callback scores the baseline as the one model of its own folder (role "model")
    records = [r for r in read_records(run / f"{split}-baseline" / "results.json")
               if r.get("split") == split]  # fmt: skip
    if not records:
        return None
    return records[-1]["model"], {r["task"]: record_scores(r) for r in records}


def seed_rows(runs: Sequence[Path], split: str, name: str) -> tuple[list[Row], list[str]]:
    """The table's rows (baseline, start, the recipe's mean, one per run) and its tasks."""
    if len(runs) < 2:
        raise UserError(f"give at least 2 run folders (training seeds) of {name}, not {len(runs)}")
    per_run = [run_scores(run, split) for run in runs]
    tasks = list(per_run[0][1])
    for run, (_, trained) in zip(runs, per_run, strict=True):
        if list(trained) != tasks:
            raise UserError(
                f"{run} scored other tasks ({', '.join(trained)}); compare like with like"
            )
    rows = []
    baseline = baseline_scores(runs[0], split)
    if baseline is not None:
        rows.append(Row(baseline[0], "baseline", "", "", baseline[1]))
    # the start is one function for every training seed (untrained LoRA), so its scores agree;
    # the mean over runs is kept in case a run's start was measured on other weights
    start = {t: mean_of([s[t] for s, _ in per_run]) for t in tasks}
    rows.append(Row(f"{name}, untrained start", "baseline", "", "", start))
    mean = {t: mean_of([trained[t] for _, trained in per_run]) for t in tasks}
    rows.append(Row(f"{name}, mean of {len(runs)} training seeds", "model", "", "", mean))
    for run, (_, trained) in zip(runs, per_run, strict=True):
        rows.append(Row(f"{name}, {run.name}", "model", "", "", trained))
    return rows, tasks


def render(rows: Sequence[Row], tasks: Sequence[str], runs: Sequence[Path], split: str) -> str:
    """Markdown: the scores (mean ± half the 95% interval over evaluation seeds) and the paired
    differences of the recipe's mean against the baseline and the start."""
    seeds = next(iter(rows[0].scores.values())).seeds
    lines = [
        f"# {rows[-len(runs) - 1].model}: the {split} split",
        "",
        f"V-measure via mteb on the {split} split; mean ± half the 95% interval over evaluation "
        f"seeds {', '.join(map(str, seeds))}. The recipe's row is, per evaluation seed, the mean "
        f"over the training runs {', '.join(r.name for r in runs)}; each run's own row follows. "
        "Made by `python -m llm_embed.eval.seed_report " + " ".join(str(r) for r in runs) + "`.",
        "",
        "| row | " + " | ".join(tasks) + " | mean |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    for row in rows:
        mean = row.mean(tasks)
        cells = [row.model] + [row.scores[t].format() for t in tasks]
        lines.append("| " + " | ".join([*cells, "–" if mean is None else mean.format()]) + " |")
    spread = []
    for task in [*tasks, "mean"]:
        values = [
            (r.mean(tasks) if task == "mean" else r.scores[task]).mean for r in rows[-len(runs) :]
        ]
        spread.append(f"{max(values) - min(values):.4f}")
    lines += ["", "Range of the training runs' means (max − min): "
              + ", ".join(f"{t} {s}" for t, s in zip([*tasks, "mean"], spread, strict=True)) + "."]  # fmt: skip
    lines += paired_lines([r for r in rows if r.role == "baseline"] + [rows[-len(runs) - 1]], tasks)
    return "\n".join(lines) + "\n"


def cli_main(argv: list[str] | None = None) -> None:
    parser = command_parser("python -m llm_embed.eval.seed_report", __doc__)
    parser.add_argument(
        "runs", type=str, nargs="+", help="run folders of one recipe, one per training seed"
    )
    parser.add_argument("--name", type=str, default="recipe", help="the recipe's name in the table")
    parser.add_argument("--split", type=str, default="test", help="test (reported) or dev")
    parser.add_argument(
        "--out", type=str, required=True, help="folder for report.md and report.json"
    )
    args = parse(parser, argv)
    if args.split not in STAGES:
        raise UserError(
            f"--split {args.split!r} is not kept per run; use one of {', '.join(STAGES)}"
        )
    runs = [Path(r) for r in args.runs]
    rows, tasks = seed_rows(runs, args.split, args.name)
    text = render(rows, tasks, runs, args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    data = [{"row": r.model, "role": r.role, "scores": {t: s.to_dict() for t, s in r.scores.items()}}
            for r in rows]  # fmt: skip
    atomic_write_text(out / "report.json", json.dumps(data, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
