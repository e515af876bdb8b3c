"""Tests for llm_embed.eval.tasks, mteb_adapter and clustering (no model downloads, no network).

A fake encoder gives each text a seeded noise vector plus a push along its label's axis, so
k-means finds the labels partly: V-measure lands strictly between 0 and 1, and any change in the
embeddings, the sampling or the k-means settings moves it.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest
import torch
from mteb_reference import mteb_bootstrap_v_measure

from llm_embed.errors import UserError
from llm_embed.eval import tasks as eval_tasks
from llm_embed.eval.clustering import evaluate_clustering, score_clustering
from llm_embed.eval.mteb_adapter import MTEBEncoder
from llm_embed.eval.tasks import (
    OFFLINE_SUITE,
    BBCNewsArticles,
    BBCNewsHeadlines,
    LocalClusteringTask,
    WordNetNounGlosses,
    get_tasks,
    load_task_data,
    local_task_metadata,
)

TOPICS = ("sport", "music", "food", "travel")


def tiny_corpus(per_topic: int = 15) -> tuple[list[str], list[str]]:
    """60 short texts in 4 topics, interleaved so that order carries no label information."""
    texts, labels = [], []
    for i in range(per_topic):
        for topic in TOPICS:
            texts.append(f"{topic} note number {i}")
            labels.append(topic)
    return texts, labels


class TinyTopics(LocalClusteringTask):
    """A 60-document local task built in memory."""

    metadata = local_task_metadata("TinyTopics", "Four made-up topics, for tests.")

    def corpus(self) -> tuple[list[str], list[str]]:
        return tiny_corpus()


class FakeEncoder:
    """Deterministic label-informative embeddings; records every encode call."""

    def __init__(self, label_of: dict[str, str], *, signal: float = 1.2, dim: int = 8) -> None:
        self.name = "tests/fake-encoder"
        self.label_of = label_of
        self.classes = sorted(set(label_of.values()))
        self.signal = signal
        self.dim = dim
        self.calls: list[tuple[list[str], int, str | None]] = []

    def embed_one(self, text: str) -> np.ndarray:
        vec = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim)
        if text in self.label_of:
            vec[self.classes.index(self.label_of[text]) % self.dim] += self.signal
        return vec / np.linalg.norm(vec)

    def encode(
        self, texts: list[str], *, batch_size: int = 32, prompt: str | None = None
    ) -> torch.Tensor:
        self.calls.append((list(texts), batch_size, prompt))
        return torch.from_numpy(np.stack([self.embed_one(t) for t in texts]).astype(np.float32))


@pytest.fixture
def tiny_task(monkeypatch: pytest.MonkeyPatch) -> type[TinyTopics]:
    monkeypatch.setitem(eval_tasks.LOCAL_TASKS, "TinyTopics", TinyTopics)
    return TinyTopics


@pytest.fixture
def tiny_encoder() -> FakeEncoder:
    texts, labels = tiny_corpus()
    return FakeEncoder(dict(zip(texts, labels, strict=True)))


# --- (i) the score is mteb's bootstrap V-measure, reproducible ------------------------------------


def test_v_measure_equals_sklearn_bootstrap(
    tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder
) -> None:
    scores = evaluate_clustering(tiny_encoder, ["TinyTopics"], batch_size=7, split="all", seeds=42)
    texts, labels = tiny_corpus()
    embeddings = np.stack([tiny_encoder.embed_one(t) for t in texts]).astype(np.float32)
    expected = mteb_bootstrap_v_measure(embeddings, labels, seed=tiny_task().seed, size=len(texts))
    assert list(scores) == ["TinyTopics"]
    assert 0.05 < expected < 0.95  # informative but not trivial, so a mismatch would show
    assert scores["TinyTopics"] == pytest.approx(expected, abs=1e-9)


def test_dev_score_is_the_mean_over_seeds_of_one_embedding_pass(
    tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder
) -> None:
    seeds = (3, 7, 11, 19, 23)
    scores = score_clustering(tiny_encoder, ["TinyTopics"], split="dev", seeds=seeds)["TinyTopics"]
    texts, labels = tiny_task(split="dev").documents()
    assert 0 < len(texts) < len(tiny_corpus()[0])
    embeddings = np.stack([tiny_encoder.embed_one(t) for t in texts]).astype(np.float32)
    expected = [mteb_bootstrap_v_measure(embeddings, labels, seed=s, size=len(texts)) for s in seeds]
    assert scores.seeds == seeds
    assert scores.values == pytest.approx(expected, abs=1e-9)
    assert len(set(scores.values)) > 1  # the seed moves the score: that is what the interval shows
    assert scores.low < scores.mean < scores.high
    # embedded once for all five seeds, and only the dev texts
    assert len(tiny_encoder.calls) == 1
    assert sorted(tiny_encoder.calls[0][0]) == sorted(texts)


def test_scores_repeat_across_calls(tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder) -> None:
    first = evaluate_clustering(tiny_encoder, ["TinyTopics"])
    second = evaluate_clustering(tiny_encoder, ["TinyTopics"])
    assert first == second


def test_stronger_signal_scores_higher(tiny_task: type[TinyTopics]) -> None:
    texts, labels = tiny_corpus()
    label_of = dict(zip(texts, labels, strict=True))
    weak = evaluate_clustering(FakeEncoder(label_of, signal=0.3), ["TinyTopics"])["TinyTopics"]
    strong = evaluate_clustering(FakeEncoder(label_of, signal=5.0), ["TinyTopics"])["TinyTopics"]
    assert strong > 0.9 > weak


@pytest.mark.usefixtures("bbc_installed")
def test_real_bbc_subsample_matches_sklearn() -> None:
    articles = eval_tasks.corpora.bbc_news()
    encoder = FakeEncoder({a.headline: a.label for a in articles}, signal=1.5, dim=16)
    scores = evaluate_clustering(
        encoder, ["BBCNewsHeadlines"], max_documents=300, batch_size=64, split="test", seeds=5
    )
    task = BBCNewsHeadlines(max_documents=300, split="test", seed=5)
    task.load_data()
    data = task.dataset["test"]
    embeddings = np.stack([encoder.embed_one(t) for t in data["sentences"]]).astype(np.float32)
    expected = mteb_bootstrap_v_measure(embeddings, data["labels"], seed=task.seed, size=300)
    assert 0.05 < expected < 0.95
    assert scores["BBCNewsHeadlines"] == pytest.approx(expected, abs=1e-9)


def test_encoder_sees_all_texts_in_order_with_task_prompt(
    tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder
) -> None:
    evaluate_clustering(
        tiny_encoder, ["TinyTopics"], batch_size=16, task_prompts={"TinyTopics": "clustering"}
    )
    texts, _ = tiny_task(split="dev").documents()
    # one call with the whole set, so the encoder can sort all of it by length
    assert [call[0] for call in tiny_encoder.calls] == [texts]
    assert {call[1] for call in tiny_encoder.calls} == {16}
    assert {call[2] for call in tiny_encoder.calls} == {"clustering"}
    tiny_encoder.calls.clear()
    evaluate_clustering(tiny_encoder, ["TinyTopics"], task_prompts={"OtherTask": "summary"})
    assert {call[2] for call in tiny_encoder.calls} == {None}  # None = the encoder's own default


def test_encoder_task_prompts_apply_unless_overridden(
    tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder
) -> None:
    tiny_encoder.task_prompts = {"TinyTopics": "summary", "OtherTask": "prompteol"}
    evaluate_clustering(tiny_encoder, ["TinyTopics"])
    assert {call[2] for call in tiny_encoder.calls} == {"summary"}  # the encoder's own entry
    tiny_encoder.calls.clear()
    evaluate_clustering(tiny_encoder, ["TinyTopics"], task_prompts={"TinyTopics": "clustering"})
    assert {call[2] for call in tiny_encoder.calls} == {"clustering"}  # the caller's wins
    meta = MTEBEncoder(tiny_encoder, task_prompts={"TinyTopics": "none"}).mteb_model_meta
    assert meta.experiment_kwargs["task_prompts"] == {"TinyTopics": "none", "OtherTask": "prompteol"}


def test_evaluation_keeps_global_rng_streams(
    tiny_task: type[TinyTopics], tiny_encoder: FakeEncoder
) -> None:
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    evaluate_clustering(tiny_encoder, ["TinyTopics"])
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    expected = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0])
    assert after[1:] == expected[1:]


def test_evaluate_rejects_bad_batch_size(tiny_encoder: FakeEncoder) -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        evaluate_clustering(tiny_encoder, ["TinyTopics"], batch_size=0)


# --- (ii) task names ---------------------------------------------------------------------------------


def test_unknown_task_name_raises_user_error() -> None:
    with pytest.raises(UserError) as info:
        get_tasks(["NoSuchClusteringTask"])
    message = str(info.value)
    assert "NoSuchClusteringTask" in message and "\n" not in message
    assert all(name in message for name in eval_tasks.LOCAL_TASKS)
    assert "MTEB task names" in message


def test_near_miss_suggests_local_name(tiny_encoder: FakeEncoder) -> None:
    with pytest.raises(UserError, match="did you mean 'BBCNewsHeadlines'"):
        evaluate_clustering(tiny_encoder, ["BBCNewsHeadline"])


def test_non_clustering_mteb_task_is_refused() -> None:
    with pytest.raises(UserError, match="Classification task"):
        get_tasks(["Banking77Classification"])


def test_real_mteb_task_is_built_fresh_and_capped() -> None:
    first, second = (
        get_tasks(["TwentyNewsgroupsClustering.v2"]),
        get_tasks(["TwentyNewsgroupsClustering.v2"]),
    )
    assert first[0] is not second[0]
    assert first[0].metadata.name == "TwentyNewsgroupsClustering.v2"
    assert not first[0].data_loaded
    (capped,) = get_tasks(["TwentyNewsgroupsClustering.v2"], max_documents=500)
    assert capped.max_fraction_of_documents_to_embed is None
    assert capped.max_document_to_embed == 500
    assert capped.max_documents_per_cluster == 500


def test_offline_mteb_task_fails_as_one_line(
    monkeypatch: pytest.MonkeyPatch, tiny_encoder: FakeEncoder
) -> None:
    import datasets.config
    import huggingface_hub.constants

    # Offline mode makes the hub fail at once instead of retrying for ~20 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (task,) = get_tasks(["TwentyNewsgroupsClustering.v2"])
    try:
        load_task_data(task)
    except UserError as e:
        message = str(e)
    else:
        pytest.skip("TwentyNewsgroupsClustering.v2 is in the local HF cache; nothing fails offline")
    assert message.startswith("could not load MTEB task TwentyNewsgroupsClustering.v2: no network?")
    assert "\n" not in message
    with pytest.raises(UserError, match="could not load MTEB task TwentyNewsgroupsClustering.v2"):
        evaluate_clustering(tiny_encoder, ["TwentyNewsgroupsClustering.v2"])


def test_get_tasks_returns_fresh_instances_and_validates() -> None:
    a, b = get_tasks(OFFLINE_SUITE), get_tasks(OFFLINE_SUITE)
    assert [t.metadata.name for t in a] == list(OFFLINE_SUITE)
    assert all(x is not y for x, y in zip(a, b, strict=True))
    assert [t.metadata.name for t in get_tasks(["BBCNewsHeadlines", "BBCNewsHeadlines"])] == [
        "BBCNewsHeadlines"
    ]
    with pytest.raises(ValueError, match="names=\\[\\]"):
        get_tasks([])
    with pytest.raises(ValueError, match="max_documents=1"):
        get_tasks(OFFLINE_SUITE, max_documents=1)


def test_local_task_overrides_mteb_sampling_defaults(tiny_task: type[TinyTopics]) -> None:
    (task,) = get_tasks(["TinyTopics"], max_documents=40)
    assert task.max_fraction_of_documents_to_embed is None
    assert task.max_document_to_embed is None
    assert task.n_clusters == 10
    load_task_data(task)
    data = task.dataset["test"]
    assert len(data) == 40 == task.max_documents_per_cluster
    texts, labels = tiny_corpus()
    pairs = set(zip(texts, labels, strict=True))
    assert set(zip(data["sentences"], data["labels"], strict=True)) <= pairs
    assert data["sentences"] == sorted(data["sentences"], key=texts.index)  # corpus order kept


# --- adapter -----------------------------------------------------------------------------------------


def test_adapter_meta_and_validation(tiny_encoder: FakeEncoder) -> None:
    model = MTEBEncoder(tiny_encoder, task_prompts={"TinyTopics": "clustering"})
    meta = model.mteb_model_meta
    assert meta.name == "llm-embed/tests/fake-encoder"
    assert meta.similarity_fn_name.value == "cosine"
    assert model.prompt_for("TinyTopics") == "clustering" and model.prompt_for("Other") is None
    with pytest.raises(ValueError, match="task_prompts"):
        MTEBEncoder(tiny_encoder, task_prompts={"TinyTopics": ""})
    with pytest.raises(ValueError, match="encoder.name"):
        MTEBEncoder(type("Nameless", (), {"encode": lambda self, texts: None})())


def test_adapter_rejects_wrong_shape(tiny_task: type[TinyTopics]) -> None:
    class Broken:
        name = "tests/broken"

        def encode(
            self, texts: list[str], *, batch_size: int = 32, prompt: str | None = None
        ) -> torch.Tensor:
            return torch.zeros(len(texts) + 1, 4)

    with pytest.raises(RuntimeError, match="expected"):
        evaluate_clustering(Broken(), ["TinyTopics"])


# --- (iv) the packaged corpora -------------------------------------------------------------------


def _loaded(task: LocalClusteringTask) -> LocalClusteringTask:
    task.load_data()  # a reader error fails the test; a missing corpus is the fixtures' call
    return task


@pytest.mark.usefixtures("bbc_installed")
def test_bbc_headlines_task_loads_all_articles() -> None:
    task = _loaded(BBCNewsHeadlines())
    data = task.dataset["test"]
    assert len(data) == 2225 == task.max_documents_per_cluster
    assert sorted(set(data["labels"])) == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    assert all(s and "\n" not in s for s in data["sentences"])


@pytest.mark.usefixtures("bbc_installed")
def test_bbc_articles_task_joins_headline_and_cut_body() -> None:
    task = _loaded(BBCNewsArticles())
    data = task.dataset["test"]
    headlines = set(_loaded(BBCNewsHeadlines()).dataset["test"]["sentences"])
    # a seeded sample of 500 of the 2,225 articles, every topic present, the same each time
    assert len(data) == 500 == task.max_documents_per_cluster and len(set(data["labels"])) == 5
    assert _loaded(BBCNewsArticles()).dataset["test"]["sentences"] == data["sentences"]
    heads = [t.split("\n", 1)[0] for t in data["sentences"]]
    assert all("\n" in t for t in data["sentences"]) and set(heads) <= headlines
    assert max(len(t) - len(h) - 1 for t, h in zip(data["sentences"], heads, strict=True)) <= 1000
    assert len(_loaded(BBCNewsArticles(max_documents=50)).dataset["test"]) == 50


@pytest.mark.usefixtures("wordnet_installed")
def test_wordnet_task_is_a_seeded_sample_of_noun_glosses() -> None:
    task = _loaded(WordNetNounGlosses())
    data = task.dataset["test"]
    assert len(data) == 2000 == task.max_documents_per_cluster
    assert len(set(data["labels"])) == 25
    assert all(label.startswith("noun.") and label != "noun.Tops" for label in data["labels"])
    again = _loaded(WordNetNounGlosses()).dataset["test"]
    assert again["sentences"] == data["sentences"]
    other_seed = _loaded(WordNetNounGlosses(seed=7)).dataset["test"]
    assert other_seed["sentences"] != data["sentences"]
    texts, labels = eval_tasks.corpora.wordnet_noun_glosses()
    pairs = set(zip(texts, labels, strict=True))
    assert set(zip(data["sentences"], data["labels"], strict=True)) <= pairs
    assert len(_loaded(WordNetNounGlosses(max_documents=300)).dataset["test"]) == 300
    with pytest.raises(ValueError, match="n_documents=0"):
        WordNetNounGlosses(n_documents=0)
