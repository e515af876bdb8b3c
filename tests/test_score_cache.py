"""The encoder score cache: one V-measure per (weights, settings, task documents, seed), never stale.

A real tiny ``Encoder`` scores a small in-memory task. What must hold: a second call with the same
weights and settings embeds nothing and returns the same numbers; any change to the weights, the
settings, the documents or the seeds is scored afresh; an untrained LoRA adapter, merged, shares the
bare backbone's entry whatever seed drew it (so every training seed's start is scored once); a
corrupt cache file is recomputed; two writers lose nothing.
"""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
from peft import LoraConfig, get_peft_model

from llm_embed.encoder import Encoder
from llm_embed.eval import score_cache
from llm_embed.eval import tasks as eval_tasks
from llm_embed.eval.clustering import score_clustering
from llm_embed.eval.tasks import LocalClusteringTask, local_task_metadata

TOPICS = ("sport", "music", "food", "travel")


class CacheTopics(LocalClusteringTask):
    """48 short texts in 4 topics."""

    metadata = local_task_metadata("CacheTopics", "Four made-up topics, for the cache tests.")
    texts_per_topic = 12

    def corpus(self) -> tuple[list[str], list[str]]:
        pairs = [(f"{t} note number {i}", t) for i in range(self.texts_per_topic) for t in TOPICS]
        return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.fixture
def task(monkeypatch: pytest.MonkeyPatch) -> type[CacheTopics]:
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "CacheTopics", CacheTopics)
    return CacheTopics


class Counting:
    """Counts the texts an encoder embeds (its ``encode`` wrapped)."""

    def __init__(self, encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts = 0
        real = encoder.encode

        def encode(texts, *args, **kwargs):
            self.texts += len(texts)
            return real(texts, *args, **kwargs)

        monkeypatch.setattr(encoder, "encode", encode)


def score(encoder: Encoder, seeds=(1, 2, 3), **kw):
    return score_clustering(encoder, ["CacheTopics"], seeds=seeds, **kw)["CacheTopics"]


def test_same_weights_and_settings_reuse_the_scores(tiny_model_dir, task, monkeypatch, caplog):
    encoder = Encoder(tiny_model_dir, pooling="mean").eval()
    count = Counting(encoder, monkeypatch)
    first = score(encoder)
    assert count.texts > 0
    embedded = count.texts

    fresh = Encoder(tiny_model_dir, pooling="mean").eval()  # a second load of the same weights
    fresh_count = Counting(fresh, monkeypatch)
    with caplog.at_level("INFO", logger="llm_embed.eval.clustering"):
        again = score(fresh)
    assert fresh_count.texts == 0 and again.values == first.values
    assert "reused the cached scores" in caplog.text

    # more seeds: only the new seed is scored, the old ones come from the cache
    more = score(fresh, seeds=(1, 2, 3, 4))
    assert more.values[:3] == first.values and fresh_count.texts == embedded


@pytest.mark.parametrize(
    "change", ["weights", "pooling", "prompt", "dim_scale", "documents", "split"]
)
def test_any_change_is_scored_afresh(tiny_model_dir, task, monkeypatch, change):
    base = Encoder(tiny_model_dir, pooling="mean").eval()
    score(base)
    kwargs = {"pooling": "last" if change == "pooling" else "mean"}
    if change == "prompt":
        kwargs["prompt"] = "Topic of: {text}"
    encoder = Encoder(tiny_model_dir, **kwargs).eval()
    options = {}
    if change == "weights":
        with torch.no_grad():
            next(encoder.backbone.parameters()).add_(1e-3)
    elif change == "dim_scale":
        encoder.dim_scale = [1.5] * encoder.embed_dim
    elif change == "documents":
        monkeypatch.setattr(CacheTopics, "texts_per_topic", 13)
    elif change == "split":
        options["split"] = "test"
    count = Counting(encoder, monkeypatch)
    score(encoder, **options)
    assert count.texts > 0


def test_an_untrained_merged_adapter_shares_the_bare_backbones_entry(tiny_model_dir):
    bare = Encoder(tiny_model_dir, pooling="mean").eval()
    states = set()
    for seed in (0, 1):
        encoder = Encoder(tiny_model_dir, pooling="mean").eval()
        torch.manual_seed(seed)  # draws lora_A; lora_B starts at zero
        encoder.backbone = get_peft_model(
            encoder.backbone, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
        )
        unmerged = score_cache.encoder_state(encoder)
        with encoder.merged_adapter():
            states.add(score_cache.encoder_state(encoder))
        assert unmerged != score_cache.encoder_state(bare)  # unmerged, the factors count
    assert states == {score_cache.encoder_state(bare)}

    # a trained adapter (B != 0) is another function, merged or not
    with torch.no_grad():
        for name, param in encoder.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_()
    with encoder.merged_adapter():
        assert score_cache.encoder_state(encoder) not in states


def test_a_corrupt_cache_is_recomputed(tiny_model_dir, task, monkeypatch, caplog):
    encoder = Encoder(tiny_model_dir, pooling="mean").eval()
    first = score(encoder)
    score_cache.encoder_cache_path().write_text("{not json", encoding="utf-8")
    count = Counting(encoder, monkeypatch)
    with caplog.at_level("WARNING"):
        again = score(encoder)
    assert count.texts > 0 and again.values == first.values
    assert "unreadable score cache" in caplog.text
    # and a poisoned entry (not a finite float) is never returned
    entries = json.loads(score_cache.encoder_cache_path().read_text(encoding="utf-8"))
    for entry in entries.values():
        entry["v_measure"] = "NaN"
    score_cache.encoder_cache_path().write_text(json.dumps(entries), encoding="utf-8")
    before = count.texts
    assert score(encoder).values == first.values and count.texts > before


def _store(offset: int) -> None:
    for i in range(20):
        score_cache.store_values({f"{offset}-{i}": {"v_measure": float(i)}})


def test_concurrent_writers_lose_nothing():
    processes = [
        multiprocessing.get_context("fork").Process(target=_store, args=(n,)) for n in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    entries = json.loads(score_cache.encoder_cache_path().read_text(encoding="utf-8"))
    assert {f"{n}-{i}" for n in range(3) for i in range(20)} <= set(entries)
