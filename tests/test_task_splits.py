"""Every local task's dev and test texts are disjoint, fixed, and independent of the evaluation seed.

Choices are made on dev and test is reported: a text in both would let a choice see the report.
These tests read the packaged corpora (they fail, or skip under LLM_EMBED_ALLOW_MISSING_ASSETS=1,
when a corpus is missing).
"""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import require_asset

from llm_embed.errors import UserError
from llm_embed.eval.tasks import LOCAL_TASKS, OFFLINE_SUITE, SPLITS, get_tasks, split_indices


def documents(name: str, split: str, seed: int = 42) -> tuple[list[str], list[str]]:
    task = LOCAL_TASKS[name](split=split, seed=seed)
    try:
        return task.documents()
    except UserError as err:  # a corpus package or WordNet is not installed
        require_asset(str(err))
        raise


@pytest.mark.parametrize("name", sorted(LOCAL_TASKS))
def test_dev_and_test_are_disjoint_and_fixed(name: str) -> None:
    dev_texts, dev_labels = documents(name, "dev")
    test_texts, test_labels = documents(name, "test")
    assert not set(dev_texts) & set(test_texts)
    assert len(dev_texts) >= 200 and len(test_texts) >= 200
    # both halves hold the task's classes (stratified; a sample may miss a rare one)
    assert len(set(dev_labels)) >= 5 and len(set(test_labels)) >= 5
    assert len(set(dev_labels) ^ set(test_labels)) <= 0.1 * len(set(dev_labels) | set(test_labels))
    # the evaluation seed varies the bootstrap only, never which texts are scored
    assert documents(name, "dev", seed=7) == (dev_texts, dev_labels)
    assert documents(name, "test", seed=7) == (test_texts, test_labels)


def test_bbc_tasks_share_one_partition() -> None:
    """No BBC article is in the dev set of one BBC task and the test set of the other."""
    from llm_embed.data import corpora

    try:
        articles = corpora.bbc_news()
    except UserError as err:
        require_asset(str(err))
        raise
    labels, headlines = [a.label for a in articles], [a.headline for a in articles]
    dev = {headlines[i] for i in split_indices(labels, "dev", keys=headlines)}
    for name in ("BBCNewsHeadlines", "BBCNewsArticles"):
        dev_texts, _ = documents(name, "dev")
        test_texts, _ = documents(name, "test")
        assert {t.split("\n", 1)[0] for t in dev_texts} <= dev
        assert not {t.split("\n", 1)[0] for t in test_texts} & dev


def test_split_indices_is_a_stratified_partition() -> None:
    labels = ["a"] * 7 + ["b"] * 4 + ["c"] * 1
    dev, test = split_indices(labels, "dev"), split_indices(labels, "test")
    assert sorted(dev + test) == list(range(len(labels)))
    assert Counter(labels[i] for i in dev) == {"a": 3, "b": 2}
    assert Counter(labels[i] for i in test) == {"a": 4, "b": 2, "c": 1}
    assert split_indices(labels, "all") == list(range(len(labels)))
    assert split_indices(labels, "dev", seed=1) != dev or split_indices(labels, "dev", seed=2) != dev
    # documents sharing a key stay together
    keys = ["x", "y", "x", "z", "y", "w", "x", "v", "u", "t", "s", "r"]
    together = split_indices(labels, "dev", keys=keys)
    for key in set(keys):
        members = {i for i, k in enumerate(keys) if k == key}
        assert members <= set(together) or not members & set(together)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split='train'"):
        get_tasks(OFFLINE_SUITE, split="train")
    assert SPLITS == ("dev", "test", "all")
