"""A picture of the clusters: a 2-D t-SNE map of a seeded sample of a task, coloured by label.

A V-measure says how well k-means recovers the labels; the map shows where it fails (which
classes overlap, which split). ``evaluate`` draws one per task next to its results table, from
the same encoder and prompt as the scores.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_embed.eval.tasks import get_tasks, load_task_data, preserve_global_rng

log = logging.getLogger(__name__)


def task_texts(
    task_name: str, seed: int = 42, split: str = "dev"
) -> tuple[list[str], list[str]]:
    """The texts and labels a task scores (its split, subsampled), or ([], []) if unreadable."""
    with preserve_global_rng():
        task = get_tasks([task_name], seed=seed, split=split)[0]
        load_task_data(task)
    try:
        split = task.dataset["test"]
        texts, labels = list(split["sentences"]), list(split["labels"])
    except (KeyError, TypeError, AttributeError):
        return [], []
    if texts and isinstance(texts[0], list):  # mteb's older layout: lists of lists per level
        texts, labels = texts[0], labels[0]
    return [str(t) for t in texts], [str(label) for label in labels]


def draw_map(
    encoder: Any,
    task_name: str,
    path: str | Path,
    *,
    samples: int = 500,
    seed: int = 42,
    split: str = "dev",
    prompt: str | None = None,
) -> Path | None:
    """Embed ``samples`` of the task's texts, t-SNE them to 2-D, scatter by label; the PNG path.

    None when the task's texts cannot be read this way (the scores are unaffected).
    """
    texts, labels = task_texts(task_name, seed=seed, split=split)
    if not texts:
        log.info("no map for %s: its texts are not in a readable split", task_name)
        return None
    keep = sorted(random.Random(seed).sample(range(len(texts)), min(samples, len(texts))))
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    vectors = encoder.encode(texts, prompt=prompt).numpy()
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(texts) - 1) / 3))
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
        vectors
    )
    return _scatter(xy, labels, Path(path), title=f"{task_name}: t-SNE of {len(texts)} texts ({encoder.name})")


def _scatter(xy: Any, labels: Sequence[str], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(classes):
        pts = [j for j, label in enumerate(labels) if label == name]
        ax.scatter(xy[pts, 0], xy[pts, 1], s=8, color=cmap(i % cmap.N), label=name, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if len(classes) <= 30:
        ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
