"""Scores kept across runs: a model whose weights and settings did not change is scored once.

Two caches share one folder. Records of packaged baselines (below) and the V-measure of an
llm-embed encoder per task and seed (:func:`encoder_state`, :func:`lookup_values`), keyed on the
encoder's effective weights and settings, so the untrained start of every training seed, a study
row on the same backbone and ``evaluate`` on the bare backbone are scored once.

A packaged sentence-transformers model (all-MiniLM-L6-v2) has fixed weights, so its V-measure
depends only on the record's settings (its resume key), the task's documents and the versions of
the packages that compute it. Each cached record carries the SHA-256 of the documents it scored
and those versions; an entry whose documents or versions differ, or a cache file that cannot be
read, is recomputed, never trusted. The cache lives in ``$LLM_EMBED_CACHE/scores/results.json``
(``$LLM_EMBED_SCORE_CACHE`` names another file); the encoder scores sit beside it in
``encoder-scores.json``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_embed import _assets
from llm_embed._fs import atomic_write_text, wait_lock
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
            and all(isinstance(v, float) and math.isfinite(v) for v in record["v_measures"])
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


# -- scores of llm-embed encoders -----------------------------------------------------------------
# Bump when llm-embed's own scoring changes what a cached value means (the mteb protocol itself is
# pinned by the packages' versions).
SCORING_PROTOCOL = 1
ENCODER_SCORE_PACKAGES = ("torch", "transformers", "peft", "mteb", "openvino")
MAX_ENCODER_SCORES = 20_000  # oldest dropped first; an entry is ~200 bytes


def encoder_cache_path() -> Path:
    """``encoder-scores.json`` beside the baseline cache."""
    return cache_path().with_name("encoder-scores.json")


def _effective_tensors(backbone: Any) -> Iterator[tuple[str, Any]]:
    """The tensors that make the backbone's function, under names that do not depend on peft.

    A merged LoRA adapter lives in the base weights; its A and B factors then change nothing, so
    they are left out and peft's prefixes dropped: an untrained adapter (B = 0), merged, gives the
    bare backbone's fingerprint whatever seed drew its A. An unmerged adapter counts in full.
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in backbone.modules() if isinstance(m, LoraLayer)]
    merged = bool(layers) and all(layer.merged for layer in layers)
    for name, tensor in [*backbone.named_parameters(), *backbone.named_buffers()]:
        if merged:
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        yield name, tensor


def encoder_state(encoder: Any) -> str | None:
    """A hash of what fixes an llm-embed ``Encoder``'s vectors: effective weights (a strided
    sample of every tensor, as the OpenVINO graph's key), settings (pooling, prompts, layer,
    calibration scale, backends, ...) and device type; None for any other encoder (not cached)."""
    from llm_embed.encoder import Encoder
    from llm_embed.inference.openvino_graph import hash_tensors

    if not isinstance(encoder, Encoder):
        return None
    digest = hashlib.blake2b(digest_size=16)
    hash_tensors(digest, _effective_tensors(encoder.backbone))
    settings = {k: v for k, v in encoder.config_dict.items() if k != "backbone"}
    if settings.get("dim_scale") is not None:  # refitted scales agree to float noise, not bits
        settings["dim_scale"] = [float(f"{v:.6g}") for v in settings["dim_scale"]]
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(encoder.device.type.encode())
    return digest.hexdigest()


def encoder_score_key(state: str, **measurement: Any) -> str:
    """The key of one V-measure: the encoder state, the measurement (task, split, seed, documents'
    hash, batch size, prompt, calibration) and the versions of the packages that compute it."""
    versions = {}
    for name in ENCODER_SCORE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    payload = {"state": state, "protocol": SCORING_PROTOCOL, "versions": versions, **measurement}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _read_encoder_scores() -> dict[str, Any]:
    path = encoder_cache_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring the unreadable score cache %s (%s); recomputing", path, err)
        return {}
    if not isinstance(entries, dict):
        log.warning("ignoring the malformed score cache %s; recomputing", path)
        return {}
    return entries


def lookup_values(keys: Mapping[int, str]) -> dict[int, float]:
    """The cached V-measure of each seed whose key is in the cache (seed -> value)."""
    entries = _read_encoder_scores()
    found = {}
    for seed, key in keys.items():
        value = (
            entries.get(key, {}).get("v_measure") if isinstance(entries.get(key), dict) else None
        )
        if isinstance(value, float) and math.isfinite(value):
            found[seed] = value
    return found


def store_values(values: Mapping[str, Mapping[str, Any]]) -> None:
    """Add entries (key -> {"v_measure": ..., what it measured}) by read-merge-write under a lock;
    a failure only warns."""
    if not values:
        return
    path = encoder_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with wait_lock(path):
            entries = _read_encoder_scores()
            entries.update({key: dict(entry) for key, entry in values.items()})
            if len(entries) > MAX_ENCODER_SCORES:
                entries = dict(list(entries.items())[-MAX_ENCODER_SCORES:])
            atomic_write_text(path, json.dumps(entries, indent=0) + "\n")
    except OSError as err:
        log.warning("could not write the score cache %s (%s)", path, err)
