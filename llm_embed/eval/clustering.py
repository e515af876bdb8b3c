"""``evaluate_clustering``: V-measure of an llm-embed encoder on clustering tasks, via ``mteb``.

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

from llm_embed.eval.mteb_adapter import MTEBEncoder
from llm_embed.eval.tasks import OFFLINE_SUITE, get_tasks, load_task_data, preserve_global_rng

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


def evaluate_clustering(
    encoder: Any,  # duck-typed llm-embed encoder (name + encode)
    task_names: Sequence[str] = OFFLINE_SUITE,
    *,
    batch_size: int = 32,
    max_documents: int | None = None,
    task_prompts: Mapping[str, str] | None = None,
    show_progress: bool = False,
    seed: int = 42,
) -> dict[str, float]:
    """Main-score V-measure of ``encoder`` on each clustering task.

    mteb embeds each task's documents once, then runs 10 rounds of MiniBatchKMeans (k = number of
    labels, n_init=1) on bootstrap samples; the score is the mean V-measure over the rounds.

    Args:
        encoder: Object with ``name`` and ``encode(texts, *, batch_size, prompt) -> (N, H)``.
        task_names: Local task names (``llm_embed.eval.tasks.LOCAL_TASKS``) or real MTEB
            clustering task names (these need their data in the HF cache or a network).
        batch_size: Texts per ``encoder.encode`` call.
        max_documents: Cap on documents per task (seeded subsample); None = task default.
        task_prompts: Task name -> prompt override; absent tasks use the encoder's default.
        show_progress: Show mteb's progress bars and INFO logs.
        seed: Seed of subsampling and of mteb's bootstrap rounds (mteb's default: 42).

    Returns:
        ``{task_name: v_measure}`` in the order of ``task_names``.

    Raises:
        UserError: Unknown task name, or a real MTEB task whose data cannot be downloaded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; use an int >= 1")
    model = MTEBEncoder(encoder, task_prompts=task_prompts)
    # AbsTask() reseeds the global RNGs: keep the caller's (e.g. a training run's) streams intact.
    with preserve_global_rng(), _quiet_logging(not show_progress):
        tasks = get_tasks(task_names, max_documents=max_documents, seed=seed)
        for task in tasks:
            load_task_data(task)  # fails early, as one line, if an MTEB dataset is unreachable
        result = mteb.evaluate(
            model,
            tasks,
            cache=None,
            co2_tracker=False,
            raise_error=True,
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
            show_progress_bar=show_progress,
        )
    scores = {tr.task_name: float(tr.get_score()) for tr in result.task_results}
    missing = [t.metadata.name for t in tasks if t.metadata.name not in scores]
    if missing:  # raise_error=True makes this unexpected; keep it loud rather than return NaN
        raise RuntimeError(f"mteb returned no score for {missing}: {result.exceptions}")
    return {t.metadata.name: scores[t.metadata.name] for t in tasks}
