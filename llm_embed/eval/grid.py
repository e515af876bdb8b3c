"""Evaluation orchestration: load each model once, score every (configuration, task) cell, write the results.

:func:`evaluate_grid` scores a model on clustering tasks through ``evaluate_clustering`` (the
real ``mteb`` scoring) for one configuration or a grid of poolings x prompts
(:mod:`llm_embed.eval.plan`), optionally beside sentence-transformers baselines, and keeps the
results store (:mod:`llm_embed.eval.results`) in ``out``.

How a grid reuses the model: the backbone is loaded ONCE per model, by the one ``--model`` loader
(:mod:`llm_embed.inference.load`). The prompt of a cell goes through
``evaluate_clustering(..., task_prompts={task: template})`` (the adapter's documented per-task
override), and the pooling is swapped on the same :class:`~llm_embed.encoder.Encoder` by
:meth:`Encoder.set_pooling` (a pooling is a stateless module that reads the backbone's states, so
no other encoder state depends on it). A cell already in ``results.json`` with the same settings
is skipped, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_embed._fs import check_output
from llm_embed._progress import progress_bar
from llm_embed.errors import UserError
from llm_embed.eval import score_cache
from llm_embed.eval.clustering import score_clustering
from llm_embed.eval.intervals import EVAL_SEEDS, check_seeds
from llm_embed.eval.plan import Cell, DocCaps, load_task_prompts, plan_cells
from llm_embed.eval.results import (
    RESULTS_JSON,
    RESULTS_MD,
    RESULTS_PNG,
    cell_key,
    make_record,
    md_cell,
    provenance,
    read_records,
    record_key,
    render,
    write_records,
)
from llm_embed.eval.tasks import (
    FILE_TASKS,
    OFFLINE_SUITE,
    SPLITS,
    documents_sha256,
    get_tasks,
    register_task_files,
)
from llm_embed.inference.distributed import InferenceGroup
from llm_embed.inference.load import KINDS, MODEL_HELP, ModelSource, load_model, resolve_model
from llm_embed.prompts import load_prompts

log = logging.getLogger(__name__)


def _option(help: str, **extra: Any) -> Any:
    """A field's one description: the evaluate command's ``--help`` line is built from it."""
    return {"help": help, **extra}


@dataclass
class EvalConfig:
    """What to evaluate and where to write it: the options of ``python -m llm_embed.evaluate``.

    Each field's ``help`` is its one description; the command derives its flags from these
    fields (``max_documents`` -> ``--max-documents``). List options take a list or one
    comma-separated string.
    """

    model: str | None = field(default=None, metadata=_option(MODEL_HELP))
    kind: str = field(
        default="auto",
        metadata=_option(
            f"what --model is: {', '.join(KINDS)} (default: auto-detected)", choices=KINDS
        ),
    )
    adapter: str | None = field(
        default=None,
        metadata=_option("trained run folder whose LoRA adapter is merged into --model"),
    )
    pooling: str | None = field(
        default=None,
        metadata=_option(
            "pooling of one configuration (default: last, or the run's saved pooling)"
        ),
    )
    prompt: str | None = field(
        default=None,
        metadata=_option("prompt name or template with {text} (default: clustering, or the run's)"),
    )
    truncate_dim: int | None = field(
        default=None,
        metadata=_option(
            "keep the first N dimensions of every model's vectors (Matryoshka; default: all)"
        ),
    )
    layer: int | None = field(
        default=None,
        metadata=_option(
            "hidden layer to pool (-1 = last, 0 = the embeddings; default: the run's, or -1)"
        ),
    )
    inference_dtype: str | None = field(
        default=None,
        metadata=_option(
            "float32 (exact) or bfloat16 (autocast, ~3x faster on CPUs with bf16 units); "
            "default: the run's, or float32"
        ),
    )
    inference_backend: str | None = field(
        default=None,
        metadata=_option(
            "torch, or openvino (the backbone as an OpenVINO graph: the same float32 numbers, "
            "~2x faster on a CPU); default: the run's, or torch"
        ),
    )
    grid: bool = field(
        default=False,
        metadata=_option(
            "sweep poolings x prompts (default grid: last, mean, weighted_mean, prompt_masked_mean, "
            "eos x none, prompteol, clustering, summary)"
        ),
    )
    poolings: Sequence[str] | str | None = field(
        default=None, metadata=_option("grid poolings, comma-separated (implies --grid)")
    )
    prompts: Sequence[str] | str | None = field(
        default=None, metadata=_option("grid prompts, comma-separated (implies --grid)")
    )
    prompts_file: str | None = field(
        default=None, metadata=_option("YAML of user templates (name: template), usable by name")
    )
    task_prompts: str | Mapping[str, str] | None = field(
        default=None,
        metadata=_option("YAML file (or mapping) task -> prompt, overriding --prompt per task"),
    )
    tasks: Sequence[str] | str | None = field(
        default=None,
        metadata=_option(
            "comma-separated local or MTEB clustering task names, or labelled files (.jsonl, "
            ".csv, .tsv, .parquet; the task is named after the file) (default: the offline suite)"
        ),
    )
    text_field: str = field(
        default="text", metadata=_option("the text column of a labelled file (default: text)")
    )
    label_field: str = field(
        default="label", metadata=_option("the label column of a labelled file (default: label)")
    )
    max_documents: int | str | Mapping[str, int | None] | None = field(
        default=None,
        metadata=_option(
            "seeded subsample per task: N, or N plus per-task caps, e.g. 500,BBCNewsArticles=200 "
            "(default: all)"
        ),
    )
    batch_size: int = field(default=32, metadata=_option("texts per forward pass (default: 32)"))
    split: str = field(
        default="dev",
        metadata=_option(
            "which texts of each local task: dev (where every choice is made), test (what is "
            "reported; never choose on it) or all (the whole set, as scored before the split) "
            "(default: dev)",
            choices=SPLITS,
        ),
    )
    seeds: Sequence[int] | str | int = field(
        default=EVAL_SEEDS,
        metadata=_option(
            "evaluation seeds, comma-separated: each draws mteb's bootstrap samples and k-means "
            "starts over the same embeddings (under --split all also the subsample); a score is "
            f"their mean with a 95%% interval (default: {','.join(map(str, EVAL_SEEDS))})"
        ),
    )
    calibrate_on_texts: bool = field(
        default=False,
        metadata=_option(
            "rescale each task's vectors by their own per-dimension spread over the texts being "
            "clustered (unsupervised, no labels) instead of the model's calibration; every model "
            "of the table, baselines included"
        ),
    )
    baselines: Sequence[str] | str | None = field(
        default=(),
        metadata=_option(
            "add a baseline's row, e.g. all-minilm-l6-v2 (repeatable, or comma-separated)",
            flag="--baseline",
            parser={"action": "append", "type": str, "default": None},
        ),
    )
    out: str | None = field(
        default=None, metadata=_option("output folder (default: docs/results/<model>)")
    )
    progress: bool = field(
        default=True, metadata=_option("hide the progress over the cells", flag="--no-progress")
    )
    map_samples: int = field(
        default=500,
        metadata=_option(
            "texts per task in the 2-D t-SNE map drawn next to the table (map-<task>.png, the "
            "model's first configuration); 0 = no maps"
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=_option("let the model run Python code shipped in its folder (read it first)"),
    )
    devices: int = field(
        default=1,
        metadata=_option(
            "processes (one per GPU) per node; > 1 splits each encoding pass (Lightning Fabric, "
            "DDP; torchrun and SLURM launches are joined) (default: 1)"
        ),
    )
    num_nodes: int = field(default=1, metadata=_option("nodes (default: 1)"))
    accelerator: str = field(
        default="auto",
        metadata=_option("accelerator when --devices > 1: auto, gpu or cpu (default: auto)"),
    )


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    """A list option from a list or comma-separated text; None stays None."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _seeds(value: Sequence[int] | str | int) -> tuple[int, ...]:
    """The evaluation seeds from a list, one int or comma-separated text; UserError if invalid."""
    items = _names(value) if isinstance(value, str) else value
    try:
        if isinstance(items, list):
            items = [int(v) for v in items]
        return check_seeds(items)
    except ValueError:
        raise UserError(
            f"seeds={value!r} is invalid; give distinct ints >= 0, e.g. --seeds 42,43,44,45,46"
        ) from None


def load_encoder(source: ModelSource, first: Cell, config: EvalConfig) -> Any:
    """Build the encoder of ``source`` once, with the first cell's pooling (later cells swap it)."""
    start = time.monotonic()
    pooling = None if source.kind == "sentence-transformers" else first.pooling
    encoder = load_model(
        source,
        pooling=pooling,
        prompt=first.default.template,
        trust_remote_code=config.trust_remote_code,
        truncate_dim=config.truncate_dim,
        **(
            {
                "layer": config.layer,
                "inference_dtype": config.inference_dtype,
                "inference_backend": config.inference_backend,
            }
            if source.kind != "sentence-transformers"
            # --layer names a decoder's layer: refused for a sentence-transformers --model, not
            # for a baseline scored beside a decoder
            else {"layer": config.layer if source.role == "model" else None}
        ),
    )
    log.info("loaded %s in %.1f s", source.label, time.monotonic() - start)
    return encoder


def _draw_maps(
    config: EvalConfig,
    plan: tuple[ModelSource, list[Cell]],
    tasks: Sequence[str],
    out: Path,
    *,
    split: str,
    encoder: Any = None,
) -> None:
    """A t-SNE map per task (``map-<task>.png``) for the model's first configuration; kept on resume.

    ``encoder``: the model's loaded encoder, reused (else it is loaded, e.g. on a resumed grid).
    """
    from llm_embed.eval.maps import draw_map

    source, cells = plan
    missing = [t for t in tasks if not (out / f"map-{t}.png").is_file()]
    if not missing:
        return
    if encoder is None:
        encoder = load_encoder(source, cells[0], config)
    if source.kind != "sentence-transformers":
        encoder.set_pooling(cells[0].pooling)
    bar = progress_bar(total=len(missing), desc="maps", unit="task", disable=not config.progress)
    for task in missing:
        path = draw_map(encoder, task, out / f"map-{task}.png", samples=config.map_samples,
                        split=split, prompt=cells[0].template(task))  # fmt: skip
        if path is not None:
            log.info("wrote %s", path)
        bar.update(1)
    bar.close()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.rstrip("/").split("/")[-1]).strip("-") or "model"


def evaluate_grid(config: EvalConfig) -> list[dict[str, Any]]:
    """Evaluate ``config.model`` (and its baselines) on clustering tasks; write results.{json,md,png}.

    Returns:
        The records of every requested (configuration, task), new or resumed.

    Raises:
        UserError: Unknown pooling, prompt, task or kind; a bad ``--model``; mismatched backbone.
    """
    group = InferenceGroup(config.accelerator, config.devices, config.num_nodes)
    caps = DocCaps.parse(config.max_documents)
    batch_size, split = config.batch_size, config.split
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid; use an int >= 1")
    if split not in SPLITS:
        raise UserError(f"split={split!r} is invalid; use one of {', '.join(SPLITS)}")
    seeds = _seeds(config.seeds)
    tasks = OFFLINE_SUITE if config.tasks is None else _names(config.tasks)
    task_prompts = config.task_prompts
    if isinstance(task_prompts, str):
        task_prompts = load_task_prompts(task_prompts)
    if not tasks:
        raise UserError("no tasks given: name at least one, e.g. BBCNewsHeadlines")
    tasks = register_task_files(tasks, text_field=config.text_field, label_field=config.label_field)
    task_names = [t.metadata.name for t in get_tasks(list(tasks))]
    for name in task_names:  # a file's split and cap are checked before anything is written
        if name in FILE_TASKS:
            documents_sha256(name, split=split, max_documents=caps(name))
    stray_caps = [t for t, _ in caps.per_task if t not in task_names]
    if stray_caps:
        raise UserError(f"max_documents names tasks not evaluated: {', '.join(stray_caps)}")
    stray = [t for t in task_prompts or {} if t not in task_names]
    if stray:
        raise UserError(f"task prompts name tasks not evaluated: {', '.join(map(str, stray))}")
    user = load_prompts(config.prompts_file) if config.prompts_file is not None else {}
    main = resolve_model(config.model, adapter=config.adapter, kind=config.kind)
    plans = [
        (
            main,
            plan_cells(
                main,
                pooling=config.pooling,
                prompt=config.prompt,
                grid=config.grid,
                poolings=_names(config.poolings),
                prompts=_names(config.prompts),
                user_prompts=user,
                task_prompts=task_prompts,
            ),
        )
    ]
    for name in _names(config.baselines) or []:
        source = resolve_model(name, role="baseline")
        plans.append((source, plan_cells(source, user_prompts=user)))
    out = check_output(  # results accumulate there (a rerun resumes), so an existing folder is fine
        config.out
        if config.out is not None
        else Path("docs") / "results" / _slug(main.label.split(" + ")[0]),
        folder=True,
    )
    results_path = out / RESULTS_JSON
    records = read_records(results_path)
    done = {record_key(r): r for r in records}
    made_by = provenance()

    dim, dtype, layer = config.truncate_dim, config.inference_dtype, config.layer
    maps = config.map_samples
    if isinstance(maps, bool) or not isinstance(maps, int) or maps < 0:
        raise UserError(f"map_samples={maps!r} is invalid: give an int >= 0 (0 = no maps)")

    def own_layer(source: ModelSource) -> int | None:  # a sentence-transformers model keeps its own
        return None if source.kind == "sentence-transformers" else layer

    def key(source: ModelSource, cell: Cell, task: str) -> tuple:
        return cell_key(source, cell, task, split=split, seeds=seeds, max_documents=caps(task),
                        truncate_dim=dim, inference_dtype=dtype, layer=own_layer(source),
                        calibrate_on_texts=config.calibrate_on_texts)  # fmt: skip

    from llm_embed.encoder import check_inference_options  # lazily: it imports transformers

    # the encoder's own check (an OptionError, one line), before any model loads
    check_inference_options(dim, dtype, config.inference_backend)

    hashes: dict[str, str | None] = {}

    def documents(task: str) -> str | None:
        if task not in hashes:
            hashes[task] = documents_sha256(task, split=split, max_documents=caps(task))
        return hashes[task]

    def pending(source: ModelSource, cell: Cell) -> list[str]:
        """Tasks without a record, or whose record scored other documents (an edited file)."""
        return [
            t
            for t in task_names
            if (r := done.get(key(source, cell, t))) is None
            or r.get("documents_sha256") not in (None, documents(t))
        ]

    cache = score_cache.read_cache() if any(score_cache.cacheable(s) for s, _ in plans) else []

    def cached(source: ModelSource, cell: Cell, task: str) -> dict[str, Any] | None:
        if not score_cache.cacheable(source):
            return None
        hit = score_cache.lookup(cache, key(source, cell, task), documents(task),
                                 made_by["versions"])  # fmt: skip
        return None if hit is None else {**hit, "role": source.role}

    def keep(record: dict[str, Any]) -> None:
        records[:] = [r for r in records if record_key(r) != record_key(record)]
        records.append(record)
        done[record_key(record)] = record
        if group.is_main:
            write_records(results_path, records)

    for source, cells in plans:  # a packaged baseline's scores from earlier runs, if they stand
        for cell in cells:
            for task in pending(source, cell):
                hit = cached(source, cell, task)
                if hit is not None:
                    log.info("%s on %s (%s split): reused the cached scores from %s",
                             source.label, task, split, score_cache.cache_path())  # fmt: skip
                    keep(hit)

    total = sum(len(cells) * len(task_names) for _, cells in plans)
    todo = sum(len(pending(s, c)) for s, cells in plans for c in cells)
    if todo < total:
        log.info(
            "resuming: %d of %d (configuration, task) cells already in %s",
            total - todo,
            total,
            results_path,
        )
    bar = progress_bar(
        total=total,
        initial=total - todo,
        desc="grid",
        unit="cell",
        disable=not (config.progress and group.is_main),
    )
    try:
        for index, (source, cells) in enumerate(plans):
            if not any(pending(source, c) for c in cells):
                continue
            encoder = load_encoder(source, cells[0], config)
            whole = encoder  # the maps run on the first process alone
            if source.kind != "sentence-transformers":  # a baseline runs whole on each process
                if group.device is not None:
                    encoder.to(group.device)
                encoder = group.shard(encoder)
            for cell in cells:
                for task in pending(source, cell):
                    bar.set_postfix_str(
                        f"{source.label} {cell.pooling}/{md_cell(cell.prompt, 20)} {task}"
                    )
                    if source.kind != "sentence-transformers":
                        encoder.set_pooling(cell.pooling)
                    start = time.monotonic()
                    score = score_clustering(
                        encoder,
                        [task],
                        split=split,
                        seeds=seeds,
                        batch_size=batch_size,
                        max_documents=caps(task),
                        task_prompts={task: cell.template(task)},
                        calibrate_on_texts=config.calibrate_on_texts,
                    )[task]
                    seconds = time.monotonic() - start
                    record = make_record(
                        source,
                        cell,
                        task,
                        score,
                        split=split,
                        max_documents=caps(task),
                        batch_size=batch_size,
                        seconds=seconds,
                        provenance=made_by,
                        truncate_dim=dim,
                        inference_dtype=dtype,
                        inference_backend=getattr(whole, "inference_backend", None),
                        layer=own_layer(source),
                        documents_sha256=documents(task),
                        calibrate_on_texts=config.calibrate_on_texts,
                    )
                    keep(record)
                    if group.is_main and score_cache.cacheable(source):
                        score_cache.store(record)
                    log.info(
                        "%s | %s | %s | %s: V-measure %s (%.1f s)",
                        source.label,
                        cell.pooling,
                        cell.prompt,
                        task,
                        score.format(),
                        seconds,
                    )
                    bar.update(1)
            if config.map_samples and index == 0 and group.is_main:  # while it is loaded
                _draw_maps(config, plans[0], task_names, out, split=split, encoder=whole)
            del encoder, whole
            gc.collect()
    finally:
        bar.close()
    if group.is_main:
        render(out, task_names, split=split, seeds=seeds, caps=caps, provenance=made_by)
        log.info("wrote %s, %s and %s in %s", RESULTS_JSON, RESULTS_MD, RESULTS_PNG, out)
        if config.map_samples:
            _draw_maps(config, plans[0], task_names, out, split=split)
    group.barrier()
    return [done[key(s, c, t)] for s, cells in plans for c in cells for t in task_names]
