"""One evaluation command for every method of the paper: configurations in, one results table out.

``run_evaluation`` scores a model on clustering tasks through ``evaluate_clustering`` (the real
``mteb`` scoring) for one configuration or a grid of poolings x prompts, optionally beside a
sentence-transformers baseline, and writes to ``out``:

- ``results.json``: one record per (configuration, task), see :func:`make_record`;
- ``results.md``: a table, rows = configurations, columns = tasks + mean, best row per model bold;
- ``results.png``: mean V-measure per configuration as grouped bars, baselines as lines.

How a grid reuses the model: the backbone is loaded ONCE per model. The prompt of a cell goes
through ``evaluate_clustering(..., task_prompts={task: template})`` (the adapter's documented
per-task override), and the pooling is swapped on the same :class:`~llm_embed.encoder.Encoder`
by :meth:`Encoder.set_pooling` (pooling is a stateless module that reads the backbone's states, so no
other encoder state depends on it). Nothing else of the encoder path is duplicated.

Resuming: a (configuration, task) whose record is already in ``results.json`` with the same
settings (model, adapter, pooling, exact prompt template, task, seed, max_documents) is skipped,
so an interrupted grid continues where it stopped. Every file is written atomically.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llm_embed._fs import atomic_write, atomic_write_text
from llm_embed.encoder import CONFIG_NAME, Encoder
from llm_embed.errors import UserError
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.st_encoder import ST_PACKAGED, STEncoder, is_st_folder
from llm_embed.eval.tasks import OFFLINE_SUITE, check_max_documents, get_tasks
from llm_embed.exporting import is_export, load_exported, read_export_config
from llm_embed.pooling import POOLING_MODES
from llm_embed.prompts import PROMPTS, PromptTemplate, get_prompt, load_prompts, read_yaml_mapping

log = logging.getLogger(__name__)

# The grid a user gets from --grid alone: the paper's two poolings (last, mean), EOS pooling and
# the two prompt-aware means of the peers; the paper's best prompts plus no prompt at all.
GRID_POOLINGS = ("last", "mean", "weighted_mean", "prompt_masked_mean", "eos")
GRID_PROMPTS = ("none", "prompteol", "clustering", "summary")
DEFAULT_SEED = 42  # mteb's own default task seed
KINDS = ("auto", "llm", "run", "sentence-transformers")
ST_POOLING = "native"  # a sentence-transformers model pools with its own module
RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"
VERSIONED = ("torch", "transformers", "peft", "mteb", "sentence-transformers", "llm-embed")
# The settings that make two records the same measurement (the resume key).
KEY_FIELDS = ("model", "adapter", "pooling", "prompt_template", "task", "seed", "max_documents")


# -- what to evaluate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """A model to evaluate, resolved from the command line but not loaded yet.

    Attributes:
        kind: ``llm`` (packaged / local folder / hub id), ``run`` (a trained llm-embed run),
            ``export`` (a folder written by ``python -m llm_embed.export``) or
            ``sentence-transformers``.
        model: The backbone (``llm``/``run``), export folder or sentence-transformers model, as recorded.
        adapter: For ``run``: the folder holding ``encoder.json`` (+ ``adapter/``).
        role: ``model`` or ``baseline`` (baselines are drawn as lines in the chart).
    """

    kind: str
    model: str
    adapter: str | None = None
    role: str = "model"

    @property
    def label(self) -> str:
        """The row-group name in the table: the model, plus the run name for an adapter."""
        if self.adapter is None:
            return self.model
        run = Path(self.adapter)
        return f"{self.model} + {(run.parent if run.name == 'model' else run).name}"

    def saved_config(self) -> dict[str, Any]:
        """The run's ``encoder.json`` or the export's ``llm_embed.json`` (empty for other kinds)."""
        if self.kind == "export":
            return read_export_config(self.model)
        if self.adapter is None:
            return {}
        return _read_encoder_json(Path(self.adapter))


@dataclass(frozen=True)
class Cell:
    """One configuration: a pooling name and a prompt (label + template, per task if overridden)."""

    pooling: str
    prompt: str  # label: a template name, "per-task", or the literal template
    default: PromptTemplate
    overrides: tuple[tuple[str, PromptTemplate], ...] = ()

    def template(self, task: str) -> str:
        """The exact template used for ``task``."""
        return dict(self.overrides).get(task, self.default).template


@dataclass(frozen=True)
class DocCaps:
    """Documents kept per task: one default cap plus per-task overrides (None = the whole task).

    Long-document tasks (BBC full articles, ~4x the tokens of a headline) need a smaller sample
    than short ones for a grid to fit a time budget; every record stores its own task's cap.
    """

    default: int | None = None
    per_task: tuple[tuple[str, int | None], ...] = ()

    def __call__(self, task: str) -> int | None:
        return dict(self.per_task).get(task, self.default)

    @classmethod
    def parse(cls, spec: int | str | Mapping[str, int | None] | DocCaps | None) -> DocCaps:
        """From an int, None, a mapping (``default`` key optional) or text ``500,BBCNewsArticles=200``.

        Raises:
            UserError: A cap that is not an int >= 2 (k-means needs 2 points).
        """
        if isinstance(spec, DocCaps):
            return spec
        if spec is None or isinstance(spec, (int, bool)):
            items: dict[str, Any] = {"default": spec}
        elif isinstance(spec, Mapping):
            items = dict(spec)
        elif isinstance(spec, str):
            items = {}
            for part in (p.strip() for p in spec.split(",")):
                if not part:
                    continue
                name, sep, value = part.rpartition("=")
                items[name.strip() if sep else "default"] = _parse_cap(value.strip(), spec)
        else:
            raise UserError(f"max_documents={spec!r} is invalid; use an int >= 2 or TASK=N pairs")
        for name, value in items.items():
            try:
                check_max_documents(value)
            except ValueError:
                where = "" if name == "default" else f" for {name}"
                raise UserError(
                    f"max_documents={value!r}{where} is invalid; use an int >= 2 (or all)"
                ) from None
        default = items.pop("default", None)
        return cls(default, tuple(sorted(items.items())))

    def describe(self, tasks: Sequence[str]) -> str:
        """How the tasks were subsampled, for the table's caption."""
        caps = {t: self(t) for t in tasks}
        if all(c is None for c in caps.values()):
            return "full tasks (each task's default size; no extra subsampling)"
        if len(set(caps.values())) == 1:
            return f"each task subsampled to at most {self.default} documents (seeded)"
        parts = [f"{t} at most {c}" if c is not None else f"{t} in full" for t, c in caps.items()]
        return "tasks subsampled (seeded): " + ", ".join(parts) + " documents"


def _parse_cap(value: str, spec: str) -> int | None:
    if value.lower() in ("none", "all", "full"):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(
            f"max_documents {spec!r} is invalid: use N, or N,TASK=N,... (e.g. 500,BBCNewsArticles=200)"
        ) from None


def run_folder(path: str | Path) -> Path | None:
    """The folder holding ``encoder.json`` for a run folder or its ``model/`` subfolder; else None."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def _read_encoder_json(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(
            f"{folder / CONFIG_NAME} is unreadable ({err}): re-export the run"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), str):
        raise UserError(f"{folder / CONFIG_NAME} names no backbone: re-export the run")
    return config


def _display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (records stay portable)."""
    path = path.expanduser().absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _same_backbone(a: str, b: str) -> bool:
    """True when two backbone names load the same weights (names, or folders on disk)."""
    if a == b:
        return True
    from llm_embed.backbone import resolve

    try:
        pa, pb = Path(resolve(a)), Path(resolve(b))
    except UserError:
        return False
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def resolve_model(
    model: str | None, *, adapter: str | None = None, kind: str = "auto", role: str = "model"
) -> ModelSource:
    """Decide what ``--model`` (+ ``--adapter``, ``--kind``) names, without loading anything.

    A folder written by ``python -m llm_embed.export`` is evaluated through llm-embed's own
    encoder (its sentence-transformers face needs ``trust_remote_code``); otherwise
    ``st:<name>``, ``--kind sentence-transformers``, a packaged alias (``all-minilm-l6-v2``) or a
    folder with ``modules.json`` is a sentence-transformers model; a folder with
    ``encoder.json`` (or ``model/encoder.json``) is a trained run; anything else is a decoder
    (packaged name, local folder, hub id) loaded by :class:`~llm_embed.encoder.Encoder`.

    Raises:
        UserError: Unknown kind, missing adapter folder, or an adapter trained on another backbone.
    """
    if kind not in KINDS:
        raise UserError(f"kind={kind!r} is unknown; use one of {', '.join(KINDS)}")
    if adapter is not None:
        folder = run_folder(adapter)
        if folder is None:
            what = (
                "not found"
                if not Path(adapter).expanduser().is_dir()
                else f"holds no {CONFIG_NAME}"
            )
            raise UserError(
                f"adapter folder {adapter!r} {what}: give a run folder (checkpoints/<run>) or its model/ subfolder"
            )
        saved = _read_encoder_json(folder)["backbone"]
        if model is not None:
            if kind == "sentence-transformers" or model.startswith("st:") or run_folder(model):
                raise UserError(f"--adapter needs a decoder --model, not {model!r}")
            if not _same_backbone(model, saved):
                raise UserError(
                    f"adapter {adapter!r} was trained on backbone {saved!r}, not --model {model!r}: "
                    f"drop --model or pass --model {saved}"
                )
        return ModelSource("run", saved, _display_path(folder), role)
    if model is None:
        raise UserError("no model given: pass --model (or --adapter with a run folder)")
    if model.startswith("st:"):
        return ModelSource("sentence-transformers", model[3:], None, role)
    if kind == "auto" and is_export(model):
        return ModelSource("export", model, None, role)
    if kind == "sentence-transformers" or (
        kind == "auto" and (model in ST_PACKAGED or is_st_folder(model))
    ):
        return ModelSource("sentence-transformers", model, None, role)
    folder = run_folder(model) if kind in ("auto", "run") else None
    if folder is not None:
        return ModelSource(
            "run", _read_encoder_json(folder)["backbone"], _display_path(folder), role
        )
    if kind == "run":
        raise UserError(f"run folder {model!r} holds no {CONFIG_NAME} (nor model/{CONFIG_NAME})")
    return ModelSource("llm", model, None, role)


def lookup_prompt(spec: str, user: Mapping[str, PromptTemplate]) -> PromptTemplate:
    """A user template (``--prompts-file``) or built-in by name, or a literal ``{text}`` template."""
    if spec in user:
        return user[spec]
    try:
        return get_prompt(spec)
    except ValueError:
        names = ", ".join([*user, *PROMPTS])
        raise UserError(
            f"prompt {spec!r} is unknown: use one of {names}, or a template containing {{text}}"
        ) from None


def _prompt_label(template: PromptTemplate) -> str:
    if template.name:
        return template.name
    named = {v: k for k, v in PROMPTS.items()}
    return named.get(template.template, template.template)


def _check_pooling(name: str) -> str:
    if name not in POOLING_MODES:
        raise UserError(f"pooling {name!r} is unknown; use one of {', '.join(POOLING_MODES)}")
    return name


def plan_cells(
    source: ModelSource,
    *,
    pooling: str | None = None,
    prompt: str | None = None,
    grid: bool = False,
    poolings: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    user_prompts: Mapping[str, PromptTemplate] | None = None,
    task_prompts: Mapping[str, str] | None = None,
) -> list[Cell]:
    """The configurations to evaluate for ``source``, in table order (pooling-major).

    One cell unless ``grid`` or a ``poolings``/``prompts`` list is given. Defaults: ``last`` +
    ``clustering`` for a decoder, the saved pooling and prompt for a trained run, the model's
    own pooling + ``none`` for sentence-transformers. ``task_prompts`` (task -> prompt)
    overrides the prompt for the listed tasks (single configuration only).
    """
    user = dict(user_prompts or {})
    is_st = source.kind == "sentence-transformers"
    if pooling is not None and poolings:
        raise UserError("give --pooling or --poolings, not both")
    if prompt is not None and prompts:
        raise UserError("give --prompt or --prompts, not both")
    sweep = grid or bool(poolings) or bool(prompts)
    if task_prompts and sweep:
        raise UserError(
            "--task-prompts sets one prompt per task: it cannot be combined with a grid"
        )
    if is_st and (pooling is not None or poolings):
        raise UserError(
            f"{source.model!r} is a sentence-transformers model: its pooling is its own"
        )
    saved = source.saved_config()
    if is_st:
        pooling_axis = [ST_POOLING]
        default_pooling, default_prompt = ST_POOLING, "none"
    else:
        saved_pooling = saved.get("pooling", "last")
        default_pooling = (
            saved_pooling["type"] if isinstance(saved_pooling, dict) else saved_pooling
        )
        default_prompt = saved.get("prompt", "clustering")
        if poolings:
            pooling_axis = list(poolings)
        elif pooling is not None:
            pooling_axis = [pooling]
        else:
            pooling_axis = list(GRID_POOLINGS) if grid else [default_pooling]
        pooling_axis = [_check_pooling(p) for p in dict.fromkeys(pooling_axis)]
    if prompts:
        prompt_axis = list(prompts)
    elif prompt is not None:
        prompt_axis = [prompt]
    else:
        prompt_axis = list(GRID_PROMPTS) if grid else [default_prompt]
    templates = [lookup_prompt(p, user) for p in dict.fromkeys(prompt_axis)]
    overrides: tuple[tuple[str, PromptTemplate], ...] = ()
    if task_prompts:
        if not isinstance(task_prompts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in task_prompts.items()
        ):
            raise UserError("task prompts must map task names to prompt names or templates")
        overrides = tuple((task, lookup_prompt(p, user)) for task, p in task_prompts.items())
    return [
        Cell(p, "per-task" if overrides else _prompt_label(t), t, overrides)
        for p in pooling_axis
        for t in templates
    ]


def load_task_prompts(path: str | Path) -> dict[str, str]:
    """Read a YAML mapping ``task name: prompt name or template``."""
    return read_yaml_mapping(path, "task prompts", "prompt names or templates")


# -- loading and swapping -------------------------------------------------------------------------
def load_encoder(source: ModelSource, first: Cell) -> Any:
    """Build the encoder of ``source`` once, with the first cell's pooling (later cells swap it)."""
    start = time.monotonic()
    if source.kind == "sentence-transformers":
        encoder: Any = STEncoder(source.model, prompt=first.default.template)
    elif source.kind == "run":
        encoder = Encoder.load(source.adapter, pooling=first.pooling)
    elif source.kind == "export":
        encoder = load_exported(source.model, pooling=first.pooling)
    else:
        encoder = Encoder(source.model, pooling=first.pooling, prompt=first.default.template)
    log.info("loaded %s in %.1f s", source.label, time.monotonic() - start)
    return encoder


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


def make_record(
    source: ModelSource,
    cell: Cell,
    task: str,
    v_measure: float,
    *,
    seed: int,
    max_documents: int | None,
    batch_size: int,
    seconds: float,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """One results.json record: what was measured, with which settings, by which code."""
    return {
        "model": source.model,
        "adapter": source.adapter,
        "kind": source.kind,
        "role": source.role,
        "pooling": cell.pooling,
        "prompt": cell.prompt,
        "prompt_template": cell.template(task),
        "task": task,
        "v_measure": v_measure,
        "seed": seed,
        "max_documents": max_documents,
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        **provenance,
    }


def record_key(record: Mapping[str, Any]) -> tuple:
    """The resume key of a record (see ``KEY_FIELDS``)."""
    return tuple(record.get(k) for k in KEY_FIELDS)


def cell_key(
    source: ModelSource, cell: Cell, task: str, *, seed: int, max_documents: int | None
) -> tuple:
    """The resume key that the record of (``source``, ``cell``, ``task``) will have."""
    values = {
        "model": source.model,
        "adapter": source.adapter,
        "pooling": cell.pooling,
        "prompt_template": cell.template(task),
        "task": task,
        "seed": seed,
        "max_documents": max_documents,
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
    return records


def write_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    text = json.dumps(list(records), indent=2) + "\n"
    atomic_write_text(path, text)


@dataclass
class Row:
    """One table row: a configuration of one model, with its score per task."""

    model: str  # ModelSource.label
    role: str
    pooling: str
    prompt: str
    scores: dict[str, float]

    def mean(self, tasks: Sequence[str]) -> float | None:
        """Mean over ``tasks``; None unless every task has a score."""
        if not tasks or any(t not in self.scores for t in tasks):
            return None
        return sum(self.scores[t] for t in tasks) / len(tasks)


def table_rows(records: Sequence[Mapping[str, Any]], *, seed: int, caps: DocCaps) -> list[Row]:
    """Group the records with these settings into rows, in first-seen order (latest score wins)."""
    rows: dict[tuple, Row] = {}
    for r in records:
        if r.get("seed") != seed or r.get("max_documents") != caps(r["task"]):
            continue
        source = ModelSource(
            r.get("kind", "llm"), r["model"], r.get("adapter"), r.get("role", "model")
        )
        key = (source.label, r["pooling"], r["prompt"])
        row = rows.setdefault(key, Row(source.label, source.role, r["pooling"], r["prompt"], {}))
        row.scores[r["task"]] = float(r["v_measure"])
    return list(rows.values())


def _md_cell(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(
    rows: Sequence[Row],
    tasks: Sequence[str],
    *,
    seed: int,
    caps: DocCaps,
    provenance: Mapping[str, Any],
) -> str:
    """The results table: rows = configurations, columns = tasks + mean; best mean per model bold."""
    best: dict[str, float] = {}
    for row in rows:
        m = row.mean(tasks)
        if m is not None and m > best.get(row.model, -math.inf):
            best[row.model] = m
    sampling = caps.describe(tasks)
    versions = ", ".join(f"{k} {v}" for k, v in provenance["versions"].items() if v)
    lines = [
        "# Clustering V-measure",
        "",
        f"V-measure via mteb (k-means, mean of 10 bootstrap rounds); {sampling}; seed {seed}.",
        f"Bold: the best configuration (mean) per model. Rendered {provenance['date']} by code "
        f"{provenance['git_revision']} with {versions}; each record in results.json carries its own.",
        "",
        "| model | pooling | prompt | " + " | ".join(tasks) + " | mean |",
        "|---|---|---|" + "---:|" * (len(tasks) + 1),
    ]
    for row in rows:
        m = row.mean(tasks)
        bold = m is not None and m == best.get(row.model)
        cells = [_md_cell(row.model), row.pooling, _md_cell(row.prompt)]
        cells += [f"{row.scores[t]:.4f}" if t in row.scores else "–" for t in tasks]
        cells.append("–" if m is None else f"{m:.4f}")
        if bold:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_chart(rows: Sequence[Row], tasks: Sequence[str], path: Path, *, subtitle: str) -> None:
    """Grouped bars of mean V-measure (x = pooling, one bar per prompt, one panel per model);
    baseline models are horizontal lines across every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(row, row.mean(tasks)) for row in rows]
    scored = [(row, m) for row, m in scored if m is not None]
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
                ax.bar(xs, ys, width, label=_md_cell(prompt, 40), color=colors(j % 10))
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
    seed: int,
    caps: DocCaps,
    provenance: Mapping[str, Any],
) -> None:
    """(Re)write results.md and results.png from results.json's records with these settings."""
    rows = table_rows(read_records(out / RESULTS_JSON), seed=seed, caps=caps)
    md = render_markdown(rows, tasks, seed=seed, caps=caps, provenance=provenance)
    atomic_write_text(out / RESULTS_MD, md)
    sizes = {caps(t) for t in tasks}
    if sizes == {None}:
        cap = "full tasks"
    elif len(sizes) == 1:
        cap = f"at most {caps.default} documents per task"
    else:
        cap = "per-task caps: " + ", ".join(f"{t} {caps(t) or 'all'}" for t in tasks)
    render_chart(rows, tasks, out / RESULTS_PNG, subtitle=f"{cap}, seed {seed}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.rstrip("/").split("/")[-1]).strip("-") or "model"


# -- the command ----------------------------------------------------------------------------------
def run_evaluation(
    model: str | None = None,
    *,
    kind: str = "auto",
    adapter: str | None = None,
    pooling: str | None = None,
    prompt: str | None = None,
    grid: bool = False,
    poolings: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    prompts_file: str | Path | None = None,
    task_prompts: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    max_documents: int | str | Mapping[str, int | None] | DocCaps | None = None,
    batch_size: int = 32,
    seed: int = DEFAULT_SEED,
    baselines: Sequence[str] = (),
    out: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate ``model`` (and ``baselines``) on clustering tasks; write results.{json,md,png}.

    Args:
        model: Packaged name, local folder, hub id, trained run folder (``checkpoints/<run>`` or
            its ``model/``), or ``st:<name>`` / a packaged alias for sentence-transformers.
        kind: ``auto`` (detect), ``llm``, ``run`` or ``sentence-transformers``.
        adapter: A trained run folder whose LoRA adapter is merged into ``model``.
        pooling, prompt: One configuration (defaults: the model's own, see :func:`plan_cells`).
        grid: Sweep ``poolings`` x ``prompts`` (defaults ``GRID_POOLINGS`` x ``GRID_PROMPTS``).
        prompts_file: YAML of user templates (name: template), usable by name in the prompts.
        task_prompts: Task -> prompt overrides for a single configuration.
        tasks: Local or real MTEB clustering task names (None = ``OFFLINE_SUITE``).
        max_documents: Seeded subsample per task (None = each task's default size): an int for
            every task, or per task, e.g. ``{"default": 500, "BBCNewsArticles": 200}`` or the
            text ``500,BBCNewsArticles=200`` (see :class:`DocCaps`).
        batch_size: Texts per forward pass.
        seed: Task seed (subsample and k-means bootstrap).
        baselines: Models evaluated once with their default configuration, e.g.
            ``all-minilm-l6-v2``; drawn as horizontal lines in the chart.
        out: Output folder (default ``docs/results/<model>``).
        progress: Show a progress bar over the (configuration, task) cells.

    Returns:
        The records of every requested (configuration, task), new or resumed.

    Raises:
        UserError: Unknown pooling, prompt, task or kind; missing adapter; mismatched backbone.
    """
    from tqdm.auto import tqdm

    caps = DocCaps.parse(max_documents)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid; use an int >= 1")
    tasks = OFFLINE_SUITE if tasks is None else [tasks] if isinstance(tasks, str) else tasks
    if not tasks:
        raise UserError("no tasks given: name at least one, e.g. BBCNewsHeadlines")
    task_names = [t.metadata.name for t in get_tasks(list(tasks))]
    stray_caps = [t for t, _ in caps.per_task if t not in task_names]
    if stray_caps:
        raise UserError(f"max_documents names tasks not evaluated: {', '.join(stray_caps)}")
    stray = [t for t in task_prompts or {} if t not in task_names]
    if stray:
        raise UserError(f"task prompts name tasks not evaluated: {', '.join(map(str, stray))}")
    user = load_prompts(prompts_file) if prompts_file is not None else {}
    main = resolve_model(model, adapter=adapter, kind=kind)
    plans = [
        (
            main,
            plan_cells(
                main,
                pooling=pooling,
                prompt=prompt,
                grid=grid,
                poolings=poolings,
                prompts=prompts,
                user_prompts=user,
                task_prompts=task_prompts,
            ),
        )
    ]
    for name in baselines:
        source = resolve_model(name, role="baseline")
        plans.append((source, plan_cells(source, user_prompts=user)))
    out = (
        Path(out)
        if out is not None
        else Path("docs") / "results" / _slug(main.label.split(" + ")[0])
    )
    results_path = out / RESULTS_JSON
    records = read_records(results_path)
    done = {record_key(r): r for r in records}
    provenance = {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    def pending(source: ModelSource, cell: Cell) -> list[str]:
        return [
            t
            for t in task_names
            if cell_key(source, cell, t, seed=seed, max_documents=caps(t)) not in done
        ]

    total = sum(len(cells) * len(task_names) for _, cells in plans)
    todo = sum(len(pending(s, c)) for s, cells in plans for c in cells)
    if todo < total:
        log.info(
            "resuming: %d of %d (configuration, task) cells already in %s",
            total - todo,
            total,
            results_path,
        )
    bar = tqdm(total=total, initial=total - todo, desc="grid", unit="cell", disable=not progress)
    try:
        for source, cells in plans:
            if not any(pending(source, c) for c in cells):
                continue
            encoder = load_encoder(source, cells[0])
            for cell in cells:
                for task in pending(source, cell):
                    bar.set_postfix_str(
                        f"{source.label} {cell.pooling}/{_md_cell(cell.prompt, 20)} {task}"
                    )
                    if source.kind != "sentence-transformers":
                        encoder.set_pooling(cell.pooling)
                    start = time.monotonic()
                    score = evaluate_clustering(
                        encoder,
                        [task],
                        batch_size=batch_size,
                        max_documents=caps(task),
                        task_prompts={task: cell.template(task)},
                        seed=seed,
                    )[task]
                    seconds = time.monotonic() - start
                    record = make_record(
                        source,
                        cell,
                        task,
                        score,
                        seed=seed,
                        max_documents=caps(task),
                        batch_size=batch_size,
                        seconds=seconds,
                        provenance=provenance,
                    )
                    records.append(record)
                    done[record_key(record)] = record
                    write_records(results_path, records)
                    log.info(
                        "%s | %s | %s | %s: V-measure %.4f (%.1f s)",
                        source.label,
                        cell.pooling,
                        cell.prompt,
                        task,
                        score,
                        seconds,
                    )
                    bar.update(1)
            del encoder
            gc.collect()
    finally:
        bar.close()
    render(out, task_names, seed=seed, caps=caps, provenance=provenance)
    log.info("wrote %s, %s and %s in %s", RESULTS_JSON, RESULTS_MD, RESULTS_PNG, out)
    return [
        done[cell_key(s, c, t, seed=seed, max_documents=caps(t))]
        for s, cells in plans
        for c in cells
        for t in task_names
    ]
