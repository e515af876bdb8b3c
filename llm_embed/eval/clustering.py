"""``score_clustering``: V-measure of an llm-embed encoder on clustering tasks, via ``mteb``, per seed.

Each call builds fresh task instances and runs ``mteb.evaluate(..., cache=None)``: mteb's
default result cache would return stale scores for a model name it has seen, and a reused task
instance would continue its bootstrap RNG stream, so numbers would not repeat.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import mteb

from llm_embed.eval import score_cache
from llm_embed.eval.intervals import EVAL_SEEDS, SeedScores, check_seeds
from llm_embed.eval.mteb_adapter import MTEBEncoder
from llm_embed.eval.tasks import (
    OFFLINE_SUITE,
    get_tasks,
    load_task_data,
    preserve_global_rng,
    task_documents_sha256,
)

logger = logging.getLogger(__name__)

# mteb logs every phase at INFO and warns once per task about prompts; quiet unless asked.
_NOISY_LOGGERS = ("mteb", "datasets")


@contextlib.contextmanager
def _quiet_logging(enabled: bool) -> Iterator[None]:
    """Raise mteb's and datasets' log level to WARNING for the duration (if ``enabled``)."""
    if not enabled:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def score_clustering(
    encoder: Any,  # duck-typed llm-embed encoder (name + encode)
    task_names: Sequence[str] = OFFLINE_SUITE,
    *,
    split: str = "dev",
    seeds: int | Sequence[int] = EVAL_SEEDS,
    batch_size: int = 32,
    max_documents: int | None = None,
    task_prompts: Mapping[str, str] | None = None,
    calibrate_on_texts: bool = False,
    show_progress: bool = False,
) -> dict[str, SeedScores]:
    """V-measure of ``encoder`` on each clustering task, once per evaluation seed.

    Per seed, mteb runs 10 rounds of MiniBatchKMeans (k = number of labels, n_init=1) on
    bootstrap samples drawn with that seed and averages their V-measure. The documents are
    embedded once: every seed after the first reuses the vectors (a fresh task instance per seed,
    so each seed's numbers are what a lone run at that seed gives).

    Args:
        encoder: Object with ``name`` and ``encode(texts, *, batch_size, prompt) -> (N, H)``.
        task_names: Local task names (``llm_embed.eval.tasks.LOCAL_TASKS``) or real MTEB
            clustering task names (these need their data in the HF cache or a network).
        split: ``dev`` (where choices are made), ``test`` (what is reported) or ``all``.
        seeds: Evaluation seeds (bootstrap samples and k-means starts; under ``split="all"``
            also the subsample).
        batch_size: Texts per ``encoder.encode`` call.
        max_documents: Cap on documents per task (seeded subsample); None = task default.
        task_prompts: Task name -> prompt override; absent tasks use the encoder's default.
        calibrate_on_texts: Rescale each task's vectors by their own per-dimension spread
            (unsupervised: the texts being clustered, no labels) instead of the encoder's
            ``dim_scale``.
        show_progress: Show mteb's progress bars and INFO logs.

    Returns:
        ``{task_name: SeedScores}`` in the order of ``task_names``.

    Raises:
        UserError: Unknown task name, or a real MTEB task whose data cannot be downloaded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; use an int >= 1")
    seeds = check_seeds(seeds)
    model = MTEBEncoder(encoder, task_prompts=task_prompts, calibrate_on_texts=calibrate_on_texts)
    scores: dict[str, SeedScores] = {}
    # AbsTask() reseeds the global RNGs: keep the caller's (e.g. a training run's) streams intact.
    with preserve_global_rng(), _quiet_logging(not show_progress):
        names = [t.metadata.name for t in get_tasks(task_names, split=split)]  # checks every name
        state = score_cache.encoder_state(encoder)
        for name in names:
            texts_before, seconds_before = model.encoded_texts, model.encode_seconds
            tasks = {
                seed: get_tasks([name], max_documents=max_documents, seed=seed, split=split)[0]
                for seed in seeds
            }
            keys = _score_keys(
                state, tasks, name, split, batch_size, task_prompts, calibrate_on_texts
            )
            cached = score_cache.lookup_values(keys)
            values = dict(cached)
            for seed, task in tasks.items():
                if seed not in values:
                    load_task_data(task)  # fails early, as one line, if a dataset is unreachable
                    values[seed] = _main_score(model, task, batch_size, show_progress)
            score_cache.store_values({
                keys[seed]: {"v_measure": values[seed], "task": name, "split": split, "seed": seed,
                             "model": getattr(encoder, "name", None)}
                for seed in keys if seed not in cached
            })  # fmt: skip
            scores[name] = SeedScores(seeds, tuple(values[seed] for seed in seeds))
            if len(cached) == len(seeds):
                logger.info(
                    "%s (%s): V-measure %s over %d seeds | reused the cached scores of these "
                    "weights and settings (%s)",
                    name, split, scores[name].format(), len(seeds), score_cache.encoder_cache_path(),
                )  # fmt: skip
                continue
            texts = model.encoded_texts - texts_before
            seconds = model.encode_seconds - seconds_before
            logger.info(
                "%s (%s): V-measure %s over %d seeds | %d texts embedded in %.1f s (%.0f texts/s)",
                name,
                split,
                scores[name].format(),
                len(seeds),
                texts,
                seconds,
                texts / seconds if seconds > 0 else float("nan"),
            )
    return scores


def _score_keys(
    state: str | None,
    tasks: Mapping[int, Any],
    name: str,
    split: str,
    batch_size: int,
    task_prompts: Mapping[str, str] | None,
    calibrate_on_texts: bool,
) -> dict[int, str]:
    """Each seed's score-cache key; none without an encoder state or for a real MTEB task (whose
    documents are not known before they load)."""
    keys: dict[int, str] = {}
    if state is None:
        return keys
    # dev and test hold the same documents under every seed; only "all" subsamples by seed
    first = task_documents_sha256(next(iter(tasks.values()))) if split != "all" else None
    for seed, task in tasks.items():
        documents = first if split != "all" else task_documents_sha256(task)
        if documents is not None:
            keys[seed] = score_cache.encoder_score_key(
                state,
                task=name,
                split=split,
                seed=seed,
                documents=documents,
                batch_size=batch_size,
                prompt=(task_prompts or {}).get(name),
                calibrate_on_texts=calibrate_on_texts,
            )
    return keys


def _main_score(model: MTEBEncoder, task: Any, batch_size: int, show_progress: bool) -> float:
    """One task's main score under its own seed, through ``mteb.evaluate``."""
    result = mteb.evaluate(
        model,
        [task],
        cache=None,
        co2_tracker=False,
        raise_error=True,
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
        show_progress_bar=show_progress,
    )
    scores = {tr.task_name: float(tr.get_score()) for tr in result.task_results}
    name = task.metadata.name
    if name not in scores:  # raise_error=True makes this unexpected; keep it loud, not NaN
        raise RuntimeError(f"mteb returned no score for {name}: {result.exceptions}")
    return scores[name]


def evaluate_clustering(
    encoder: Any,  # duck-typed llm-embed encoder (name + encode)
    task_names: Sequence[str] = OFFLINE_SUITE,
    **options: Any,
) -> dict[str, float]:
    """Mean V-measure over the seeds of ``encoder`` on each task: :func:`score_clustering`'s means.

    Args:
        options: Any keyword of :func:`score_clustering` (``split``, ``seeds``, ...).

    Returns:
        ``{task_name: v_measure}`` in the order of ``task_names``.
    """
    scores = score_clustering(encoder, task_names, **options)
    return {name: s.mean for name, s in scores.items()}
