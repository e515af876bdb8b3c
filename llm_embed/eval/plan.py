"""What to evaluate: the configurations (pooling x prompt) of a model and the documents per task.

:func:`plan_cells` turns the evaluate options into :class:`Cell` s in table order: one cell by
default (a decoder: ``last`` + ``clustering``; a trained run or an export: its saved pooling and
prompt; a sentence-transformers model: its own pooling, no prompt), or a grid. :class:`DocCaps`
is the per-task subsample size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_embed.errors import UserError
from llm_embed.eval.tasks import check_max_documents
from llm_embed.inference.load import ModelSource
from llm_embed.pooling import POOLING_MODES
from llm_embed.prompts import PROMPTS, PromptTemplate, get_prompt, read_yaml_mapping

# The grid a user gets from --grid alone: the paper's two poolings (last, mean), EOS pooling and
# the two prompt-aware means of the peers; the paper's best prompts plus no prompt at all.
GRID_POOLINGS = ("last", "mean", "weighted_mean", "prompt_masked_mean", "eos")
GRID_PROMPTS = ("none", "prompteol", "clustering", "summary")
ST_POOLING = "native"  # a sentence-transformers model pools with its own module


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


def _axis(listed: Sequence[str] | None, one: str | None, default: Sequence[str]) -> list[str]:
    """One axis of the grid: the listed values, else the one value given, else the default; no repeats."""
    values = list(listed) if listed else [one] if one is not None else list(default)
    return list(dict.fromkeys(values))


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
    overrides the prompt for the listed tasks (single configuration only), over a trained run's
    saved ``task_prompts`` (used unless a ``prompt`` is given).
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
    if not sweep and prompt is None and saved.get("task_prompts"):
        # a trained run scores each task with its saved per-task prompt, as its callback did
        task_prompts = {**saved["task_prompts"], **(task_prompts or {})}
    if is_st:
        pooling_axis = [ST_POOLING]
        default_pooling, default_prompt = ST_POOLING, "none"
    else:
        saved_pooling = saved.get("pooling", "last")
        default_pooling = (
            saved_pooling["type"] if isinstance(saved_pooling, dict) else saved_pooling
        )
        default_prompt = saved.get("prompt", "clustering")
        axis = _axis(poolings, pooling, GRID_POOLINGS if grid else [default_pooling])
        pooling_axis = [_check_pooling(p) for p in axis]
    prompt_axis = _axis(prompts, prompt, GRID_PROMPTS if grid else [default_prompt])
    templates = [lookup_prompt(p, user) for p in prompt_axis]
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
