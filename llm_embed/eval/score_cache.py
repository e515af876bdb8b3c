"""Scores of packaged baselines, kept across runs: a model whose weights never change is scored once.

A packaged sentence-transformers model (all-MiniLM-L6-v2) has fixed weights, so its V-measure
depends only on the record's settings (its resume key), the task's documents and the versions of
the packages that compute it. Each cached record carries the SHA-256 of the documents it scored
and those versions; an entry whose documents or versions differ, or a cache file that cannot be
read, is recomputed, never trusted. The cache lives in ``$LLM_EMBED_CACHE/scores/results.json``
(``$LLM_EMBED_SCORE_CACHE`` names another file).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_embed import _assets
from llm_embed._fs import atomic_write_text
from llm_embed.inference.load import ModelSource

log = logging.getLogger(__name__)

# The packages whose versions must match for a cached score to stand (llm-embed's own scoring
# is pinned by the record's key and the documents' hash).
SCORING_PACKAGES = ("torch", "transformers", "mteb", "sentence-transformers")


def cache_path() -> Path:
    """``$LLM_EMBED_SCORE_CACHE``, else ``$LLM_EMBED_CACHE/scores/results.json``."""
    from llm_embed.backbone import cache_root

    override = os.environ.get("LLM_EMBED_SCORE_CACHE")
    return Path(override) if override else cache_root() / "scores" / "results.json"


def cacheable(source: ModelSource) -> bool:
    """True for a packaged sentence-transformers model: its weights are fixed by its package."""
    return source.kind == "sentence-transformers" and source.model in _assets.names(
        "sentence-transformers"
    )


def _scoring_versions(record: Mapping[str, Any]) -> dict[str, Any]:
    versions = record.get("versions") or {}
    return {name: versions.get(name) for name in SCORING_PACKAGES}


def read_cache() -> list[dict[str, Any]]:
    """The cached records; [] when there are none or the file is unreadable (then recomputed)."""
    path = cache_path()
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring the unreadable score cache %s (%s); recomputing", path, err)
        return []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        log.warning("ignoring the malformed score cache %s; recomputing", path)
        return []
    return records


def lookup(
    records: list[dict[str, Any]], key: tuple, documents: str | None, versions: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The cached record with this resume key, documents hash and scoring versions, if any."""
    from llm_embed.eval.results import record_key

    if documents is None:
        return None
    wanted = {name: versions.get(name) for name in SCORING_PACKAGES}
    for record in reversed(records):
        if (
            record_key(record) == key
            and record.get("documents_sha256") == documents
            and _scoring_versions(record) == wanted
            and isinstance(record.get("v_measures"), list)
        ):
            return record
    return None


def store(record: Mapping[str, Any]) -> None:
    """Add ``record`` to the cache (read, merge, write atomically); a failure only warns."""
    from llm_embed.eval.results import record_key

    if record.get("documents_sha256") is None:
        return
    records = [r for r in read_cache() if record_key(r) != record_key(record)]
    records.append(dict(record))
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path(), json.dumps(records, indent=1) + "\n")
    except OSError as err:
        log.warning("could not write the score cache %s (%s)", cache_path(), err)
