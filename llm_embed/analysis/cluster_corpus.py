"""From a file of texts to clusters you can read: embed, cluster, describe, write the report.

Every check that needs no model runs first (options, the output folder, the whole input file),
so bad input stops in one line before anything is written. The vectors come from
:func:`~llm_embed.inference.embed_file.encode_file`, the ``encode`` command's resumable chunk
store, and are kept in the output folder with what made them, for the next run to reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from llm_embed._fs import atomic_write, atomic_write_text, check_output, exclusive_lock
from llm_embed.analysis import clusters as cl
from llm_embed.analysis.cluster_page import map_figure, render_page
from llm_embed.errors import UserError
from llm_embed.inference.embed_file import (
    JSONL_SUFFIXES,
    model_fingerprint,
    read_texts,
    scan,
)

log = logging.getLogger(__name__)

METHODS = ("kmeans", "hdbscan")
EMBEDDINGS = "embeddings.npy"
EMBEDDINGS_SOURCE = "embeddings.json"  # what made embeddings.npy: reused only if it matches
FILES = ("assignments.parquet", "assignments.jsonl", "clusters.json", "report.html")


def parse_k_range(spec: str) -> tuple[int, int]:
    """``"2..20"`` -> (2, 20); UserError unless 2 <= LOW <= HIGH."""
    match = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", str(spec))
    low, high = (int(match[1]), int(match[2])) if match else (0, 0)
    if not match or low < 2 or high < low:
        raise UserError(
            f"--k-range {spec!r} is invalid: give LOW..HIGH with 2 <= LOW <= HIGH, e.g. 2..20"
        )
    return low, high


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_labels(path: Path, key: str, n: int) -> list[str]:
    """The ``key`` value of each non-blank JSONL line, as strings; UserError naming the line."""
    if path.suffix.lower() not in JSONL_SUFFIXES:
        raise UserError(
            f"--labels reads a JSONL key, but {path} is not .jsonl: drop --labels or convert the file"
        )
    labels = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        if not line.strip():
            continue
        value = json.loads(line).get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or not str(value).strip()
        ):
            raise UserError(
                f"{path}:{lineno}: no {key!r} label (got {value!r}): fill it or drop --labels"
            )
        labels.append(str(value).strip())
    if len(labels) != n:  # read_texts counts the same lines; a mismatch is a bug, not input
        raise RuntimeError(f"{len(labels)} labels for {n} texts in {path}")
    return labels


def _check_options(k: int | None, method: str, min_cluster_size: int, seed: int) -> None:
    if method not in METHODS:
        raise UserError(f"--method {method!r} is unknown: use one of {', '.join(METHODS)}")
    if k is not None and (isinstance(k, bool) or k < 2):
        raise UserError(
            f"--k {k} is invalid: give at least 2 clusters, or leave it out to choose by silhouette"
        )
    if k is not None and method == "hdbscan":
        raise UserError(
            "--k sets k-means' clusters; hdbscan finds its own: drop --k or use --method kmeans"
        )
    if min_cluster_size < 2:
        raise UserError(f"--min-cluster-size {min_cluster_size} is invalid: give an int >= 2")
    if seed < 0:
        raise UserError(f"--seed {seed} is invalid: give an int >= 0")


def _embeddings(
    model: str, input: Path, out: Path, source: dict[str, Any], **encode: Any
) -> np.ndarray:
    """The input's vectors: the kept ones if ``source`` made them, else embedded now (resumable)."""
    from llm_embed.inference.embed_file import encode_file

    path, made_by = out / EMBEDDINGS, out / EMBEDDINGS_SOURCE
    try:
        if path.is_file() and json.loads(made_by.read_text(encoding="utf-8")) == source:
            vectors = np.load(path)
            log.info("reused %s (same model, options and input)", path)
            return vectors
    except (OSError, ValueError):
        pass  # missing or unreadable: embed again
    made_by.unlink(missing_ok=True)
    encode_file(model, input, path, overwrite=True, **encode)
    atomic_write_text(made_by, json.dumps(source, indent=1))
    return np.load(path)


def cluster_corpus(
    model: str,
    input: str | Path,
    out: str | Path,
    *,
    k: int | None = None,
    k_range: str | tuple[int, int] = "2..20",
    method: str = "kmeans",
    min_cluster_size: int = 5,
    labels: str | None = None,
    field: str = "text",
    id_field: str | None = None,
    seed: int = 0,
    batch_size: int = 32,
    chunk_size: int = 4096,
    progress: bool = True,
    **model_kwargs: Any,
) -> str:
    """Embed ``input`` with ``model``, cluster it and write the report files to ``out``.

    Returns:
        A short text summary: one line per cluster (size and top terms).

    Raises:
        UserError: A bad option, input file or output folder (before anything is written).
    """
    _check_options(k, method, min_cluster_size, seed)
    low, high = parse_k_range(k_range) if isinstance(k_range, str) else k_range
    input = Path(input).expanduser()
    if not input.is_file():
        raise UserError(
            f"input {input} not found: give a .txt file (one text per line) or a .jsonl file"
        )
    stats = scan(input, field=field, id_field=id_field)
    need = k if k is not None else (low if method == "kmeans" else 2)
    if stats.texts <= need:
        raise UserError(
            f"{input} holds {stats.texts} texts: clustering into {need} needs more texts than clusters"
        )
    known = read_labels(input, labels, stats.texts) if labels else None
    out = check_output(out, folder=True)
    with exclusive_lock(out, "cluster"):
        source = {
            "model": model_fingerprint(model),
            "options": {key: v for key, v in model_kwargs.items() if key != "trust_remote_code"},
            "input": str(input.resolve()),
            "input_sha256": _file_sha256(input),
            "field": field,
            "id_field": id_field,
        }
        vectors = _embeddings(
            model, input, out, source, field=field, id_field=id_field, batch_size=batch_size,
            chunk_size=chunk_size, progress=progress, **model_kwargs,
        )  # fmt: skip
        if not np.isfinite(vectors).all():
            raise UserError(f"{model} gave non-finite vectors for {input}: check the model")
        records = list(read_texts(input, field=field, id_field=id_field))
        ids = [ident for ident, _ in records]
        texts = [text for _, text in records]
        found = cl.cluster(
            vectors, method=method, k=k, k_range=(low, high), min_cluster_size=min_cluster_size,
            seed=seed,
        )  # fmt: skip
        terms = cl.top_terms(texts, found.labels)
        nearest = cl.representatives(found)
        points = cl.map_2d(vectors, seed=seed)
        report = _write(out, model, input, method, ids, texts, known, found, terms, nearest, points)
    log.info("wrote %s in %s", ", ".join(FILES), out)
    return report


def _write(
    out: Path,
    model: str,
    input: Path,
    method: str,
    ids: list[Any],
    texts: list[str],
    known: list[str] | None,
    found: cl.Clustering,
    terms: dict[int, list[str]],
    nearest: dict[int, list[int]],
    points: np.ndarray,
) -> str:
    """Write the four report files (each atomically); return the summary text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = {int(c): int((found.labels == c).sum()) for c in np.unique(found.labels)}
    ordered = sorted(found.centres, key=lambda c: (-sizes[c], c))
    table = [
        {"cluster": c, "size": sizes[c], "terms": terms.get(c, []),
         "representatives": [texts[i] for i in nearest[c]]}
        for c in ordered
    ]  # fmt: skip
    summary: dict[str, Any] = {
        "model": model,
        "input": str(input),
        "texts": len(texts),
        "method": method,
        "clusters": len(found.centres),
    }
    if cl.NOISE in sizes:
        summary["noise"] = sizes[cl.NOISE]
    if known is not None:
        from sklearn.metrics import v_measure_score

        summary["labels"] = len(set(known))
        summary["v_measure"] = round(float(v_measure_score(known, found.labels)), 4)
    rows = [
        {"id": ident, "text": text, "cluster": int(c),
         "distance": None if np.isnan(d) else round(float(d), 6),
         **({"label": known[i]} if known is not None else {})}
        for i, (ident, text, c, d) in enumerate(zip(ids, texts, found.labels, found.distances, strict=True))
    ]  # fmt: skip
    atomic_write(out / FILES[0], lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))
    atomic_write_text(
        out / FILES[1], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    curve = {str(kk): round(v, 6) for kk, v in found.silhouette.items()}
    atomic_write_text(
        out / FILES[2],
        json.dumps({**summary, "silhouette": curve, "sizes": {str(c): sizes[c] for c in ordered},
                    "cluster_table": table}, indent=1, ensure_ascii=False),
    )  # fmt: skip
    figure = map_figure(points, found.labels, texts, terms)
    page = render_page(
        title=f"{input.name}: {len(found.centres)} clusters",
        summary=summary,
        clusters=table,
        map_fig=figure,
        curve=found.silhouette,
    )
    atomic_write_text(out / FILES[3], page)
    lines = [
        f"{len(texts)} texts in {len(found.centres)} clusters"
        + (f" ({summary['noise']} unclustered)" if "noise" in summary else "")
        + (f"; V-measure against --labels: {summary['v_measure']:.4f}" if known is not None else "")
    ]
    lines += [f"  {c['cluster']:>3}  {c['size']:>6}  {', '.join(c['terms'][:6])}" for c in table]
    lines.append(f"open {out / FILES[3]}")
    return "\n".join(lines)
