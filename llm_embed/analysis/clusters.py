"""Cluster a corpus' vectors and describe each cluster in words: the logic of ``llm_embed.cluster``.

Plain functions over arrays: k chosen by silhouette (or given), k-means or HDBSCAN from
scikit-learn, each text's distance to its cluster's centre, the top terms of each cluster by
class-based TF-IDF (BERTopic's c-TF-IDF: a cluster's texts as one document), the texts nearest
each centre, and a 2-D UMAP map. Vectors are L2-normalised first, so distances are cosine
geometry whatever the encoder's own normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

NOISE = -1  # HDBSCAN's label for texts in no cluster


@dataclass
class Clustering:
    """Each text's cluster and distance to its centre, the centres, and how k was found."""

    labels: np.ndarray  # (N,) int, NOISE for HDBSCAN's unclustered texts
    distances: np.ndarray  # (N,) float, NaN for noise
    centres: dict[int, np.ndarray]
    silhouette: dict[int, float] = field(default_factory=dict)  # k -> score, when k was searched


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def kmeans(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """scikit-learn's k-means labels (10 starts, seeded)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)


def silhouette_curve(
    vectors: np.ndarray, ks: Sequence[int], seed: int = 0, sample: int = 5000
) -> dict[int, float]:
    """Mean silhouette (cosine) of k-means at each k, on a seeded sample of at most ``sample`` texts."""
    from sklearn.metrics import silhouette_score

    size = min(sample, len(vectors))
    curve = {}
    for k in ks:
        labels = kmeans(vectors, k, seed)
        if len(set(labels.tolist())) < 2:  # duplicates can collapse k-means below 2 clusters
            curve[k] = float("nan")
            continue
        curve[k] = float(
            silhouette_score(vectors, labels, metric="cosine", sample_size=size, random_state=seed)
        )
        log.info("k=%d: silhouette %.4f", k, curve[k])
    return curve


def cluster(
    vectors: np.ndarray,
    *,
    method: str = "kmeans",
    k: int | None = None,
    k_range: tuple[int, int] = (2, 20),
    min_cluster_size: int = 5,
    seed: int = 0,
) -> Clustering:
    """Cluster normalised ``vectors`` by k-means (k given, else the best silhouette in
    ``k_range``) or HDBSCAN (``min_cluster_size``; k comes out of the density)."""
    vectors = normalise(vectors)
    curve: dict[int, float] = {}
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(vectors)
    else:
        if k is None:
            low, high = k_range
            curve = silhouette_curve(vectors, range(low, min(high, len(vectors) - 1) + 1), seed)
            scored = {kk: s for kk, s in curve.items() if np.isfinite(s)}
            k = max(scored, key=scored.get) if scored else low
            log.info("chose k=%d, the best silhouette in %d..%d", k, low, max(curve))
        labels = kmeans(vectors, k, seed)
    centres = {int(c): vectors[labels == c].mean(axis=0) for c in np.unique(labels) if c != NOISE}
    distances = np.full(len(vectors), np.nan, dtype=np.float64)
    for c, centre in centres.items():
        members = labels == c
        distances[members] = np.linalg.norm(vectors[members] - centre, axis=1)
    return Clustering(labels.astype(int), distances, centres, curve)


def top_terms(texts: Sequence[str], labels: np.ndarray, n: int = 10) -> dict[int, list[str]]:
    """The ``n`` words that most set each cluster apart (c-TF-IDF; English stop words dropped).

    A cluster's texts are joined into one document; a term's weight is its frequency in that
    document times ``log(1 + A / f)``, where ``A`` is the mean word count per cluster and ``f``
    the term's count over all clusters (Grootendorst, BERTopic, 2022).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    ids = [int(c) for c in np.unique(labels) if c != NOISE]
    docs = [" ".join(t for t, c in zip(texts, labels, strict=True) if c == cid) for cid in ids]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # no words at all (symbols, numbers, stop words only)
        return {cid: [] for cid in ids}
    words = vectorizer.get_feature_names_out()
    per_cluster = counts.sum(axis=1, keepdims=True)
    tf = counts / np.where(per_cluster > 0, per_cluster, 1.0)
    idf = np.log1p(per_cluster.mean() / counts.sum(axis=0))
    weights = tf * idf
    out = {}
    for row, cid in enumerate(ids):
        order = np.argsort(-weights[row], kind="stable")[:n]
        out[cid] = [str(words[j]) for j in order if weights[row, j] > 0]
    return out


def representatives(clustering: Clustering, n: int = 3) -> dict[int, list[int]]:
    """The indices of the ``n`` texts nearest each cluster's centre."""
    out = {}
    for cid in clustering.centres:
        members = np.flatnonzero(clustering.labels == cid)
        order = np.argsort(clustering.distances[members], kind="stable")
        out[cid] = [int(i) for i in members[order[:n]]]
    return out


def map_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D UMAP projection (cosine metric, seeded) of the normalised vectors, (N, 2)."""
    import umap

    vectors = normalise(vectors)
    n = len(vectors)
    if n < 4:  # UMAP needs a neighbourhood; a line is an honest map of so few points
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, dtype=np.float32)])
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(15, n - 1),
        metric="cosine",
        random_state=seed,
        n_jobs=1,  # a seeded UMAP runs on one thread anyway; saying so keeps it quiet
        init="spectral" if n > 50 else "random",
    )
    return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)
