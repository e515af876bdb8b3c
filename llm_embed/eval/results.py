"""The results store: one record per (configuration, task) with its provenance, and its renderings.

- ``results.json``: the records (:func:`make_record`); a record whose resume key
  (:data:`KEY_FIELDS`) is already there is not measured again, so an interrupted grid resumes.
- ``results.md``: a table, rows = configurations, columns = tasks + mean, best row per model bold.
- ``results.png``: mean V-measure per configuration as grouped bars, baselines as lines.

Every file is written atomically (:mod:`llm_embed._fs`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_embed._fs import atomic_write, atomic_write_text, wait_lock
from llm_embed.errors import UserError
from llm_embed.eval.intervals import SeedScores, mean_over_tasks
from llm_embed.eval.plan import Cell, DocCaps
from llm_embed.inference.load import ModelSource

RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"
VERSIONED = ("torch", "transformers", "peft", "mteb", "sentence-transformers", "llm-embed")
# The settings that make two records the same measurement (the resume key).
KEY_FIELDS = (
    "model", "adapter", "pooling", "prompt_template", "task", "split", "seeds", "max_documents",
    "truncate_dim", "inference_dtype", "layer", "calibrate_on_texts",
)  # fmt: skip


# The value a key field has in a record written before the field existed.
KEY_DEFAULTS = {"calibrate_on_texts": False}


# -- provenance -----------------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a score (None = not installed)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "llm-embed":
                import llm_embed

                versions[name] = llm_embed.__version__
            else:
                versions[name] = None
    return versions


def git_revision() -> str:
    """The llm-embed checkout's commit (``-dirty`` with uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if rev and dirty else rev or "unknown"


def provenance() -> dict[str, Any]:
    """What made a result: package versions, the git revision and the time (UTC)."""
    from datetime import datetime, timezone

    return {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def make_record(
    source: ModelSource,
    cell: Cell,
    task: str,
    scores: SeedScores,
    *,
    split: str,
    max_documents: int | None,
    batch_size: int,
    seconds: float,
    provenance: Mapping[str, Any],
    truncate_dim: int | None = None,
    inference_dtype: str | None = None,
    inference_backend: str | None = None,
    layer: int | None = None,
    documents_sha256: str | None = None,
    calibrate_on_texts: bool = False,
) -> dict[str, Any]:
    """One results.json record: what was measured, with which settings, by which code.

    ``v_measure`` is the mean over the evaluation seeds; ``v_measures`` keeps each seed's value
    (in ``seeds`` order) and ``ci95`` the 95% interval of the mean.
    """
    return {
        "model": source.model,
        "adapter": source.adapter,
        "kind": source.kind,
        "role": source.role,
        "pooling": cell.pooling,
        "prompt": cell.prompt,
        "prompt_template": cell.template(task),
        "task": task,
        "split": split,
        **scores.to_dict(),
        "max_documents": max_documents,
        "truncate_dim": truncate_dim,
        "inference_dtype": inference_dtype,
        "inference_backend": inference_backend,  # what ran (the timing depends on it)
        "layer": layer,  # the --layer asked for (None: the model's own)
        "documents_sha256": documents_sha256,  # what was scored (None: a real MTEB task)
        "calibrate_on_texts": calibrate_on_texts,
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        **provenance,
    }


def record_key(record: Mapping[str, Any]) -> tuple:
    """The resume key of a record (see ``KEY_FIELDS``; lists, as JSON keeps them, become tuples)."""
    return tuple(
        tuple(v) if isinstance(v := record.get(k, KEY_DEFAULTS.get(k)), list) else v
        for k in KEY_FIELDS
    )


def cell_key(
    source: ModelSource,
    cell: Cell,
    task: str,
    *,
    split: str,
    seeds: Sequence[int],
    max_documents: int | None,
    truncate_dim: int | None = None,
    inference_dtype: str | None = None,
    layer: int | None = None,
    calibrate_on_texts: bool = False,
) -> tuple:
    """The resume key that the record of (``source``, ``cell``, ``task``) will have."""
    values = {
        "model": source.model,
        "adapter": source.adapter,
        "pooling": cell.pooling,
        "prompt_template": cell.template(task),
        "task": task,
        "split": split,
        "seeds": tuple(seeds),
        "max_documents": max_documents,
        "truncate_dim": truncate_dim,
        "inference_dtype": inference_dtype,
        "layer": layer,
        "calibrate_on_texts": calibrate_on_texts,
    }
    return tuple(values[k] for k in KEY_FIELDS)


# -- files ----------------------------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an existing results.json ([] if there is none)."""
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is corrupt ({err}): move it away or pass another --out") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path} is not a list of records: move it away or pass another --out")
    for index, record in enumerate(records):
        values = [record.get("v_measure"), *(record.get("v_measures") or [])]
        if not all(_finite(v) for v in values):
            bad = next(v for v in values if not _finite(v))
            raise UserError(
                f"{path} record {index} ({record.get('model')}, {record.get('task')}) has the "
                f"score {bad!r}, not a number: delete that record (it is scored again) or move "
                "the file away"
            )
    return records


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def write_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Merge ``records`` into ``path`` under a lock: a record replaces the one with its key, and
    the records other writers added meanwhile (a second evaluate into one folder) stay."""
    with wait_lock(path):
        merged = read_records(path) if path.is_file() else []
        where = {record_key(r): i for i, r in enumerate(merged)}
        for record in records:
            key = record_key(record)
            if key in where:
                merged[where[key]] = dict(record)
            else:
                where[key] = len(merged)
                merged.append(dict(record))
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")


def record_scores(record: Mapping[str, Any]) -> SeedScores:
    """A record's per-seed V-measures (a record from before seeds were kept: its one ``seed``)."""
    if "v_measures" in record:
        return SeedScores(tuple(record["seeds"]), tuple(float(v) for v in record["v_measures"]))
    return SeedScores((record["seed"],), (float(record["v_measure"]),))


@dataclass
class Row:
    """One table row: a configuration of one model, with its scores per task."""

    model: str  # ModelSource.label
    role: str
    pooling: str
    prompt: str
    scores: dict[str, SeedScores]

    def mean(self, tasks: Sequence[str]) -> SeedScores | None:
        """The per-seed mean over ``tasks``; None unless every task has a score under one seed set."""
        if not tasks or any(t not in self.scores for t in tasks):
            return None
        try:
            return mean_over_tasks({t: self.scores[t] for t in tasks})
        except ValueError:
            return None


def table_rows(
    records: Sequence[Mapping[str, Any]], *, split: str, seeds: Sequence[int], caps: DocCaps
) -> list[Row]:
    """Group the records with these settings into rows, in first-seen order (latest score wins)."""
    rows: dict[tuple, Row] = {}
    for r in records:
        if (
            r.get("split") != split
            or tuple(r.get("seeds") or ()) != tuple(seeds)
            or r.get("max_documents") != caps(r["task"])
        ):
            continue
        source = ModelSource(
            r.get("kind", "llm"), r["model"], r.get("adapter"), r.get("role", "model")
        )
        pooling = r["pooling"] + (f" @{r['truncate_dim']}d" if r.get("truncate_dim") else "")
        pooling += f" @layer {r['layer']}" if r.get("layer") is not None else ""
        pooling += " (bf16)" if r.get("inference_dtype") == "bfloat16" else ""
        pooling += " (calibrated on the task's texts)" if r.get("calibrate_on_texts") else ""
        key = (source.label, pooling, r["prompt"])
        row = rows.setdefault(key, Row(source.label, source.role, pooling, r["prompt"], {}))
        row.scores[r["task"]] = record_scores(r)
    return list(rows.values())


def md_cell(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(
    rows: Sequence[Row],
    tasks: Sequence[str],
    *,
    split: str,
    seeds: Sequence[int],
    caps: DocCaps,
    provenance: Mapping[str, Any],
) -> str:
    """The results table: rows = configurations, columns = tasks + mean, each the mean over the
    evaluation seeds ± half its 95% interval; best mean per model bold."""
    best: dict[str, float] = {}
    for row in rows:
        m = row.mean(tasks)
        if m is not None and m.mean > best.get(row.model, -math.inf):
            best[row.model] = m.mean
    sampling = caps.describe(tasks)
    versions = ", ".join(f"{k} {v}" for k, v in provenance["versions"].items() if v)
    lines = [
        "# Clustering V-measure",
        "",
        f"V-measure via mteb (k-means, mean of 10 bootstrap rounds) on the {split} split; "
        f"{sampling}; mean ± half the 95% interval over evaluation seeds "
        f"{', '.join(map(str, seeds))}.",
        f"Bold: the best configuration (mean) per model. Rendered {provenance['date']} by code "
        f"{provenance['git_revision']} with {versions}; each record in results.json carries its own.",
        "",
        "| model | pooling | prompt | " + " | ".join(tasks) + " | mean |",
        "|---|---|---|" + "---:|" * (len(tasks) + 1),
    ]
    for row in rows:
        m = row.mean(tasks)
        bold = m is not None and m.mean == best.get(row.model)
        cells = [md_cell(row.model), row.pooling, md_cell(row.prompt)]
        cells += [row.scores[t].format() if t in row.scores else "–" for t in tasks]
        cells.append("–" if m is None else m.format())
        if bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += paired_lines(rows, tasks)
    return "\n".join(lines) + "\n"


def paired_lines(rows: Sequence[Row], tasks: Sequence[str]) -> list[str]:
    """Each model row minus each baseline row, per seed: the mean difference and its 95% interval.

    Both are scored under the same seeds (the same bootstrap samples and k-means starts), so the
    per-seed difference cancels the noise they share; ``*`` marks an interval that excludes zero.
    """
    baselines = [r for r in rows if r.role == "baseline"]
    models = [r for r in rows if r.role != "baseline"]
    if not baselines or not models:
        return []
    lines = [
        "",
        "Paired differences (model − baseline, per evaluation seed): mean [95% interval]; "
        "`*` = the interval excludes zero.",
        "",
        "| model | pooling | prompt | baseline | " + " | ".join(tasks) + " | mean |",
        "|---|---|---|---|" + "---:|" * (len(tasks) + 1),
    ]
    for base in baselines:
        for row in models:
            cells = [md_cell(row.model), row.pooling, md_cell(row.prompt), md_cell(base.model)]
            pairs = [(row.scores.get(t), base.scores.get(t)) for t in tasks]
            pairs.append((row.mean(tasks), base.mean(tasks)))
            for mine, theirs in pairs:
                cells.append("–" if mine is None or theirs is None else _paired(mine, theirs))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _paired(mine: SeedScores, theirs: SeedScores) -> str:
    try:
        diff = mine.minus(theirs)
    except ValueError:  # scored under other seeds: no pairing
        return "–"
    star = "*" if diff.excludes_zero() else ""
    return f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]{star}"


def render_chart(rows: Sequence[Row], tasks: Sequence[str], path: Path, *, subtitle: str) -> None:
    """Grouped bars of mean V-measure (x = pooling, one bar per prompt, one panel per model);
    baseline models are horizontal lines across every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(row, row.mean(tasks)) for row in rows]
    scored = [(row, m.mean) for row, m in scored if m is not None]
    models = list(dict.fromkeys(row.model for row, _ in scored if row.role != "baseline"))
    baselines = [(row, m) for row, m in scored if row.role == "baseline"]
    if not models:  # only baselines: draw them as bars
        models = list(dict.fromkeys(row.model for row, _ in scored))
        baselines = []
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 3.8 * max(len(models), 1)), squeeze=False)
    prompts = list(dict.fromkeys(row.prompt for row, _ in scored if row.model in models))
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(len(prompts), 1)
    for ax, model in zip(axes[:, 0], models, strict=True):
        mine = [(row, m) for row, m in scored if row.model == model]
        poolings = list(dict.fromkeys(row.pooling for row, _ in mine))
        for j, prompt in enumerate(prompts):
            xs, ys = [], []
            for i, pooling in enumerate(poolings):
                for row, m in mine:
                    if row.pooling == pooling and row.prompt == prompt:
                        xs.append(i - 0.4 + width * (j + 0.5))
                        ys.append(m)
            if xs:
                ax.bar(xs, ys, width, label=md_cell(prompt, 40), color=colors(j % 10))
        for k, (row, m) in enumerate(baselines):
            ax.axhline(
                m,
                color="black",
                linestyle=("--", ":", "-.")[k % 3],
                linewidth=1.2,
                label=f"{row.model} ({m:.3f})",
            )
        ax.set_xticks(range(len(poolings)), poolings)
        ax.set_ylabel("mean V-measure")
        ax.set_title(model, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            title="prompt",
            title_fontsize=7,
        )
    fig.suptitle(f"Clustering, mean over {', '.join(tasks)}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120), suffix=".png")
    plt.close(fig)


def render(
    out: Path,
    tasks: Sequence[str],
    *,
    split: str,
    seeds: Sequence[int],
    caps: DocCaps,
    provenance: Mapping[str, Any],
) -> None:
    """(Re)write results.md and results.png from results.json's records with these settings."""
    rows = table_rows(read_records(out / RESULTS_JSON), split=split, seeds=seeds, caps=caps)
    md = render_markdown(rows, tasks, split=split, seeds=seeds, caps=caps, provenance=provenance)
    atomic_write_text(out / RESULTS_MD, md)
    sizes = {caps(t) for t in tasks}
    if sizes == {None}:
        cap = "full tasks"
    elif len(sizes) == 1:
        cap = f"at most {caps.default} documents per task"
    else:
        cap = "per-task caps: " + ", ".join(f"{t} {caps(t) or 'all'}" for t in tasks)
    render_chart(
        rows, tasks, out / RESULTS_PNG, subtitle=f"{split} split, {cap}, {len(seeds)} seeds"
    )
