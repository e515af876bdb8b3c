"""mteb 2.x clustering scoring rewritten with plain sklearn: the reference that tests compare to."""

from __future__ import annotations

import random

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import v_measure_score


def mteb_bootstrap_v_measure(embeddings: np.ndarray, labels: list[str], *, seed: int, size: int) -> float:
    """Mean V-measure of 10 rounds of MiniBatchKMeans (n_init=1) on bootstrap samples of ``size``.

    Mirrors ``mteb.abstasks.clustering._evaluate_clustering_bootstrapped``: one ``random.Random(seed)``
    draws the samples (with replacement), and every round's k-means uses ``random_state=seed``.
    """
    rng = random.Random(seed)
    labels_np = np.asarray(labels)
    scores = []
    for _ in range(10):
        idx = rng.choices(range(len(labels)), k=size)
        kmeans = MiniBatchKMeans(
            n_clusters=len(set(labels)), batch_size=512, init="k-means++", n_init=1, random_state=seed
        )
        scores.append(v_measure_score(labels_np[idx], kmeans.fit_predict(embeddings[idx])))
    return float(np.mean(scores))
