"""The recipe study: fit each row of ``configs/recipe/rows.yaml`` and tabulate its V-measures.

Every row is one change (a few ``fit`` overrides) layered over the study's base
(``configs/default.yaml`` + ``configs/recipe/screen.yaml``), trained with the same data order and
scored by the run's own ``ClusteringEvalCallback`` after training (the same path as ``evaluate``).
Zero-shot and baseline rows run ``llm_embed.evaluate`` instead. Finished runs are read back, not
rerun, so an interrupted study continues where it stopped.

    python -m benchmarks.recipe_study                          # every row, seed 0
    python -m benchmarks.recipe_study --only base,tau-0.05 --seeds 0,1,2
    python -m benchmarks.recipe_study --render                 # tables and chart from results.json

Writes ``docs/results/recipe/``: ``results.json`` (one record per row and seed, with the command),
``results.md`` (mean and spread per task, difference to the base row) and ``results.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llm_embed._machine import matmul_peak
from llm_embed.eval.callback import SCORES_FILE  # the run's own scores, written by its callback

BASE_CONFIGS = ("configs/default.yaml", "configs/recipe/screen.yaml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last silently,
    so a row missing its ``- name:`` line would quietly take over the row above it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {repeated[0]!r} is repeated", node.start_mark
            )
        return super().construct_mapping(node, deep)


def load_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows by name: ``{"change": str, "fit": [overrides]}`` or ``{"change", "evaluate": [args]}``,
    a ``from:`` row resolved into its full overrides (:func:`_resolve`)."""
    try:
        rows = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)["rows"]  # noqa: S506
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        raise SystemExit(
            f"error: {path} line {mark.line + 1}: {err.problem}; give each row its own "
            "'- name:' entry"
        ) from None
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {path} repeats a row name; give each row its own name")
    by_name = {r["name"]: r for r in rows}
    return {name: _resolve(name, by_name, path, ()) for name in by_name}


def _flags(args: Sequence[Any], where: str) -> dict[str, str]:
    """``[--flag, value, ...]`` as an ordered mapping (what ``from:`` merges)."""
    flags = [str(a) for a in args[::2]]
    if len(args) % 2 or not all(f.startswith("--") for f in flags):
        raise SystemExit(f"error: {where}: 'fit' must be '--flag, value' pairs to use 'from:'")
    return dict(zip(flags, map(str, args[1::2]), strict=True))


def _resolve(
    name: str, rows: dict[str, dict[str, Any]], path: Path, seen: tuple[str, ...]
) -> dict[str, Any]:
    """The row with its ``from:`` row's configs and overrides folded in.

    ``from: parent`` states a row as one change to another row: the parent's ``configs`` come
    first, and each of the row's own ``fit`` flags replaces the parent's value in place or
    follows them, so the command is what writing the parent's overrides out in full gives.
    """
    row = rows[name]
    parent_name = row.get("from")
    if parent_name is None:
        return row
    where = f"{path} row {name!r}"
    if parent_name not in rows:
        raise SystemExit(f"error: {where}: 'from: {parent_name}' names no row; use a row's name")
    chain = (*seen, name)  # the rows being resolved, this one last
    if parent_name in chain:
        raise SystemExit(f"error: {where}: 'from:' rows form a cycle; point it at an earlier row")
    parent = _resolve(parent_name, rows, path, chain)
    if "fit" not in row or "fit" not in parent:
        raise SystemExit(f"error: {where}: 'from:' joins two 'fit' rows only")
    merged = _flags(parent["fit"], f"{path} row {parent_name!r}") | _flags(row["fit"], where)
    return {
        **row,
        "configs": [*parent.get("configs", []), *row.get("configs", [])],
        "fit": [a for pair in merged.items() for a in pair],
    }


def fit_command(
    row: dict[str, Any], run_dir: Path, seed: int, base_configs: Sequence[str] = BASE_CONFIGS
) -> list[str]:
    """The ``fit`` call of one row and seed (its logger writes into ``run_dir``)."""
    configs = [a for c in (*base_configs, *row.get("configs", [])) for a in ("--config", c)]
    return [
        sys.executable, "-m", "llm_embed.fit", *configs, *map(str, row["fit"]),
        "--seed_everything", str(seed),
        "--trainer.logger.init_args.save_dir", str(run_dir.parent),
        "--trainer.logger.init_args.name", run_dir.name,
    ]  # fmt: skip


def evaluate_command(row: dict[str, Any], run_dir: Path, seed: int) -> list[str]:
    """The ``evaluate`` call of one row; ``{seed}`` in its arguments (a trained row's run) is filled."""
    args = [str(a).replace("{seed}", str(seed)) for a in row["evaluate"]]
    return [sys.executable, "-m", "llm_embed.evaluate", *args, "--out", str(run_dir)]


def read_scores(row: dict[str, Any], run_dir: Path) -> dict[str, float] | None:
    """The finished run's final scores, or None when it has not finished."""
    if "evaluate" in row:
        path = run_dir / "results.json"
        if not path.is_file():
            return None
        return {r["task"]: r["v_measure"] for r in json.loads(path.read_text())}
    path = run_dir / SCORES_FILE
    if not path.is_file() or not (run_dir / "model").is_dir():  # model/ is written last
        return None
    history = [h for h in json.loads(path.read_text())["history"] if h["stage"] == "validation"]
    return dict(history[-1]["scores"]) if history else None


def run_row(
    name: str, row: dict[str, Any], seed: int, runs: Path, base_configs: Sequence[str]
) -> dict[str, Any]:
    """Fit (or evaluate) one row with one seed unless finished; its record for results.json."""
    run_dir = runs / f"{name}-s{seed}"
    if "evaluate" in row:
        cmd = evaluate_command(row, run_dir, seed)
    else:
        cmd = fit_command(row, run_dir, seed, base_configs)
    scores = read_scores(row, run_dir)
    minutes = None
    if scores is None:
        if run_dir.exists():  # an interrupted run of this study: start it again from scratch
            shutil.rmtree(run_dir)
        print(f"== {name} seed {seed}: {shlex.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        subprocess.run(cmd, check=True)
        minutes = round((time.monotonic() - start) / 60, 2)
        scores = read_scores(row, run_dir)
        if scores is None:
            raise SystemExit(
                f"error: {run_dir} has no final scores after the run; see its log above"
            )
    shown = ["python", *cmd[1:]]
    return {"row": name, "seed": seed, "change": row["change"], "scores": scores,
            "mean": statistics.fmean(scores.values()), "minutes": minutes,
            "command": shlex.join(shown)}  # fmt: skip


def _per_seed(row: dict[str, Any]) -> bool:
    """A row runs once per seed when it trains, or scores the run of each seed (``{seed}``)."""
    return "fit" in row or any("{seed}" in str(a) for a in row.get("evaluate", []))


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Records by (row, seed), the new ones replacing the old; a rerun keeps its first timing."""
    merged = {(r["row"], r["seed"]): r for r in old}
    for r in new:
        prev = merged.get((r["row"], r["seed"]))
        if r["minutes"] is None and prev is not None:
            r["minutes"] = prev.get("minutes")
            r["gflops"] = prev.get("gflops")
        merged[(r["row"], r["seed"])] = r
    return list(merged.values())


def summarise(records: list[dict], order: list[str]) -> list[dict[str, Any]]:
    """One line per row: per-task mean and spread (sample SD) over its seeds."""
    lines = []
    for name in order:
        recs = [r for r in records if r["row"] == name]
        if not recs:
            continue
        tasks = list(recs[0]["scores"])
        stats = {}
        for task in [*tasks, "mean"]:
            values = [r["mean"] if task == "mean" else r["scores"][task] for r in recs]
            sd = statistics.stdev(values) if len(values) > 1 else None
            stats[task] = (statistics.fmean(values), sd)
        lines.append({"row": name, "change": recs[0]["change"], "seeds": len(recs),
                      "tasks": tasks, "stats": stats})  # fmt: skip
    return lines


def render(records: list[dict], rows: dict[str, dict], out: Path, base: str) -> None:
    """results.md (table + commands) and results.png (per-task bars) from the records."""
    lines = summarise(records, list(rows))
    if not lines:
        return
    tasks = lines[0]["tasks"]
    ref = next((ln for ln in lines if ln["row"] == base), None)

    def cell(line: dict, task: str) -> str:
        m, sd = line["stats"].get(task, (None, None))
        if m is None:
            return ""
        text = f"{m:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")
        if ref is not None and line is not ref and task in ref["stats"]:
            text += f" ({m - ref['stats'][task][0]:+.4f})"
        return text

    md = [
        "# Recipe study",
        "",
        "V-measure under mteb's clustering protocol on the offline suite (all 2,225 BBC headlines, "
        "a seeded 500 of the full articles, 2,000 WordNet noun glosses). Each row names its changes "
        f"from `{base}` (in brackets: the difference to it); ± is the sample SD over seeds. "
        "Reproduce a row with `python -m benchmarks.recipe_study --only ROW [--seeds 0,1,2]`. "
        "Each timing stands beside the fp32 matmul rate measured just before that run; a low rate "
        "means other work shared the CPU, so such a timing is no budget.",
        "",
        "| row | change | seeds | " + " | ".join(tasks) + " | mean |",
        "|---|---|---:|" + "---:|" * (len(tasks) + 1),
    ]
    for ln in lines:
        values = " | ".join(cell(ln, t) for t in [*tasks, "mean"])
        md.append(f"| {ln['row']} | {ln['change']} | {ln['seeds']} | {values} |")
    md += ["", "## Commands and timings", ""]
    for r in sorted(
        records, key=lambda r: (list(rows).index(r["row"]) if r["row"] in rows else 1e9, r["seed"])
    ):
        timing = (
            f"{r['minutes']} min at {r['gflops']:.0f} GFLOP/s fp32 matmul"
            if r.get("minutes") is not None and r.get("gflops")
            else "timing not recorded"
        )
        if r.get("note"):  # e.g. other jobs shared the CPU: the timing is no budget
            timing += f"; {r['note']}"
        md.append(f"- `{r['row']}` seed {r['seed']} ({timing}): `{r['command']}`")
    (out / "results.md").write_text("\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(lines) + 2), 4.5))
    width = 0.8 / (len(tasks) + 1)
    for i, task in enumerate([*tasks, "mean"]):
        xs = [j + i * width for j in range(len(lines))]
        ys = [ln["stats"][task][0] if task in ln["stats"] else 0 for ln in lines]
        errs = [ln["stats"][task][1] or 0 if task in ln["stats"] else 0 for ln in lines]
        ax.bar(xs, ys, width, yerr=errs, label=task, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(lines))])
    ax.set_xticklabels([ln["row"] for ln in lines], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("V-measure")
    ax.set_ylim(0.2, None)
    ax.legend(fontsize=7, ncol=4)
    ax.set_title("Recipe study (one change per row)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the chosen rows and seeds, write results.json/md/png; returns the records."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=Path, default=Path("configs/recipe/rows.yaml"))
    parser.add_argument("--only", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--runs", type=Path, default=Path("checkpoints/recipe"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/recipe"))
    parser.add_argument("--base", default="base", help="the row the others are compared with")
    parser.add_argument("--render", action="store_true", help="only redraw from results.json")
    parser.add_argument(
        "--base-configs", default=",".join(BASE_CONFIGS), help="comma-separated fit configs"
    )
    args = parser.parse_args(argv)
    base_configs = args.base_configs.split(",")
    rows = load_rows(args.rows)
    only = args.only.split(",") if args.only else list(rows)
    unknown = [n for n in only if n not in rows]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}; pick from {list(rows)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    records = json.loads(results.read_text()) if results.is_file() else []
    if not args.render:
        for name in only:
            for seed in seeds if _per_seed(rows[name]) else [0]:
                gflops = matmul_peak() / 1e9  # before each run: the load on a machine changes
                print(
                    f"machine: {gflops:.0f} GFLOP/s fp32 matmul, {os.cpu_count()} CPUs", flush=True
                )
                record = run_row(name, rows[name], seed, args.runs, base_configs)
                if record["minutes"] is not None:
                    record["gflops"] = round(gflops, 1)
                records = merge(records, [record])
                results.write_text(json.dumps(records, indent=1) + "\n")
    render(records, rows, args.out, args.base)
    print(f"wrote {args.out}/results.md")
    return records


if __name__ == "__main__":
    main()
