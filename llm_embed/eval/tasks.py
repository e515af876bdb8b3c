"""Offline clustering tasks for ``mteb`` 2.x, and lookup of task names (local or real MTEB).

The local tasks are real ``AbsTaskClustering`` subclasses, so mteb scores them exactly as it
scores its own clustering tasks: embed the split once, then ``n_clusters`` = 10 rounds of
MiniBatchKMeans (k = number of labels) on bootstrap samples, main score = mean V-measure.

mteb's class defaults suit 100k-document sets (embed 4% of the split, 16,384 documents per
round). Our sets hold 2k documents, so every document is embedded and each round samples as many
documents (with replacement) as the set holds.

Note: ``AbsTask.__init__`` reseeds Python's, NumPy's and torch's *global* RNGs (mteb's
``_set_seed``). ``get_tasks`` undoes that, so building tasks mid-training does not reset the
training run's dropout masks and shuffling.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import random
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import mteb
import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.abstask import AbsTask
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.task_metadata import TaskMetadata

from llm_embed.data import corpora
from llm_embed.data.seeding import sample_indices
from llm_embed.errors import UserError, first_line

logger = logging.getLogger(__name__)

OFFLINE_SUITE = ("BBCNewsHeadlines", "BBCNewsArticles", "WordNetNounGlosses")


def check_max_documents(max_documents: int | None) -> None:
    """Raise ValueError unless ``max_documents`` is None or an int >= 2 (k-means needs 2 points)."""
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 2
    ):
        raise ValueError(f"max_documents={max_documents!r} is invalid; use an int >= 2 or None")


class LocalClusteringTask(AbsTaskClustering):
    """A clustering task whose texts and labels come from a local function, not the HF Hub.

    Subclasses set ``metadata`` and implement ``corpus()``. ``default_size`` (None = all) and the
    ``max_documents`` argument cap the set; a capped set is a seeded random subsample (seeded by
    ``seed``, in corpus order), so a fresh instance always holds the same documents.

    Args:
        max_documents: Keep at most this many documents (None = ``default_size``).
        seed: Seed for the subsample and for mteb's bootstrap rounds (mteb's default is 42).
    """

    # Embed every document (mteb's default is 4% of the split, meant for 100k-document sets).
    max_fraction_of_documents_to_embed: float | None = None
    max_document_to_embed: int | None = None
    n_clusters: int = 10
    default_size: int | None = None

    def __init__(self, *, max_documents: int | None = None, seed: int = 42, **kwargs: Any) -> None:
        check_max_documents(max_documents)
        super().__init__(seed=seed, **kwargs)
        self.max_documents = max_documents

    def corpus(self) -> tuple[list[str], list[str]]:
        """All texts and their labels, in a fixed order."""
        raise NotImplementedError

    @property
    def size_cap(self) -> int | None:
        """The number of documents kept: the smaller of ``default_size`` and ``max_documents``."""
        caps = [c for c in (self.default_size, self.max_documents) if c is not None]
        return min(caps) if caps else None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the ``test`` split in memory; set each bootstrap round to the set's size."""
        if self.data_loaded:
            return
        texts, labels = self.corpus()
        if len(texts) != len(labels):
            raise ValueError(f"{self.metadata.name}: {len(texts)} texts but {len(labels)} labels")
        cap = self.size_cap
        if cap is not None and len(texts) > cap:
            # A separate Random, so mteb's own rng_state (the bootstrap stream) stays untouched.
            keep = sample_indices(len(texts), cap, self.seed)
            texts = [texts[i] for i in keep]
            labels = [labels[i] for i in keep]
        if len(set(labels)) < 2:
            raise ValueError(
                f"{self.metadata.name}: needs at least 2 labels, got {sorted(set(labels))}"
            )
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentences": texts, "labels": labels})}
        )
        # mteb samples k=max_documents_per_cluster documents with replacement in each round.
        self.max_documents_per_cluster = len(texts)
        self.data_loaded = True


def local_task_metadata(name: str, description: str, **overrides: Any) -> TaskMetadata:
    """TaskMetadata with the fields shared by the local tasks (``dataset`` is required but unused)."""
    fields: dict[str, Any] = {
        "name": name,
        "description": description,
        "dataset": {"path": f"llm-embed/{name}", "revision": "local"},
        "type": "Clustering",
        "category": "t2c",
        "modalities": ["text"],
        "eval_splits": ["test"],
        "eval_langs": ["eng-Latn"],
        "main_score": "v_measure",
        "task_subtypes": ["Thematic clustering"],
        "annotations_creators": "expert-annotated",
        "dialect": [],
        "sample_creation": "found",
    }
    fields.update(overrides)
    return TaskMetadata(**fields)


_BBC_CITATION = r"""
@inproceedings{greene2006practical,
  author = {Greene, Derek and Cunningham, P{\'a}draig},
  booktitle = {Proceedings of the 23rd International Conference on Machine Learning (ICML)},
  pages = {377--384},
  title = {Practical Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering},
  year = {2006},
}
"""

_WORDNET_CITATION = r"""
@article{miller1995wordnet,
  author = {Miller, George A.},
  journal = {Communications of the ACM},
  number = {11},
  pages = {39--41},
  title = {WordNet: A Lexical Database for English},
  volume = {38},
  year = {1995},
}
"""

_BBC_FIELDS: dict[str, Any] = {
    "reference": "http://mlg.ucd.ie/datasets/bbc.html",
    "date": ("2004-01-01", "2005-12-31"),
    "domains": ["News", "Written"],
    "license": "not specified",
    "bibtex_citation": _BBC_CITATION,
}


class BBCNewsHeadlines(LocalClusteringTask):
    """All 2,225 BBC News headlines, clustered into their 5 topics (S2S: short texts)."""

    metadata = local_task_metadata(
        "BBCNewsHeadlines",
        "Cluster the 2,225 BBC News headlines (2004-2005) into 5 topics: business, "
        "entertainment, politics, sport, tech.",
        prompt="Identify the topic of the news headline",
        **_BBC_FIELDS,
    )

    def corpus(self) -> tuple[list[str], list[str]]:
        """Headlines and topics."""
        articles = corpora.bbc_news()
        return [a.headline for a in articles], [a.label for a in articles]


class BBCNewsArticles(LocalClusteringTask):
    """BBC headline + body (cut to ``max_chars``), 5 topics (P2P: paragraph-long texts).

    A seeded sample of 500 of the 2,225 articles by default: each article is ~4x the tokens of a
    headline, and 500 keeps one evaluation of the suite within minutes on a CPU.
    """

    # The average body is ~2,200 characters; encoders cut to their token budget anyway.
    max_chars: int = 1000
    default_size = 500

    metadata = local_task_metadata(
        "BBCNewsArticles",
        "Cluster BBC News articles (headline and the start of the body; a seeded sample of 500 of "
        "2,225) into 5 topics.",
        prompt="Identify the topic of the news article",
        **_BBC_FIELDS,
    )

    def corpus(self) -> tuple[list[str], list[str]]:
        """``headline\\nbody`` with the body cut at a word boundary, and topics."""
        texts = []
        articles = corpora.bbc_news()
        for a in articles:
            body = a.body
            if len(body) > self.max_chars:
                body = body[: self.max_chars].rsplit(" ", 1)[0]
            texts.append(f"{a.headline}\n{body}")
        return texts, [a.label for a in articles]


class WordNetNounGlosses(LocalClusteringTask):
    """A seeded random sample of WordNet 3.0 noun definitions, clustered by lexicographer file.

    25 classes (``noun.animal``, ``noun.food``, ...; ``noun.Tops`` left out). The sample follows
    the corpus' class imbalance; with the default seed all 25 classes appear in 2,000 glosses.
    """

    default_size = 2000

    metadata = local_task_metadata(
        "WordNetNounGlosses",
        "Cluster WordNet 3.0 noun definitions (a seeded sample of 2,000 of 82,064) into their "
        "25 lexicographer classes such as noun.animal or noun.food.",
        prompt="Identify the semantic category of the word definition",
        reference="https://wordnet.princeton.edu/",
        date=("1985-01-01", "2006-12-31"),
        domains=["Encyclopaedic", "Written"],
        license="https://wordnet.princeton.edu/license-and-commercial-use",
        bibtex_citation=_WORDNET_CITATION,
    )

    def __init__(
        self,
        *,
        n_documents: int = 2000,
        max_documents: int | None = None,
        seed: int = 42,
        **kwargs: Any,
    ) -> None:
        if isinstance(n_documents, bool) or not isinstance(n_documents, int) or n_documents < 2:
            raise ValueError(f"n_documents={n_documents!r} is invalid; use an int >= 2")
        super().__init__(max_documents=max_documents, seed=seed, **kwargs)
        self.default_size = n_documents

    def corpus(self) -> tuple[list[str], list[str]]:
        """All 82,064 noun glosses and their lexicographer class."""
        texts, labels = corpora.wordnet_noun_glosses()
        return list(texts), list(labels)


LOCAL_TASKS: dict[str, type[LocalClusteringTask]] = {
    "BBCNewsHeadlines": BBCNewsHeadlines,
    "BBCNewsArticles": BBCNewsArticles,
    "WordNetNounGlosses": WordNetNounGlosses,
}


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states on exit (mteb reseeds them)."""
    py_state = random.getstate()
    np_state = np.random.get_state()  # the global state is what mteb clobbers
    torch = sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch is not None else None
    cuda_states = (
        torch.cuda.get_rng_state_all()
        if torch is not None and torch.cuda.is_initialized()
        else None
    )
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if torch is not None and torch_state is not None:
            torch.random.set_rng_state(torch_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)


def _mteb_task(name: str, max_documents: int | None, seed: int = 42) -> AbsTask:
    """A fresh real MTEB task (its data is fetched later, by ``load_task_data``)."""
    try:
        task = mteb.get_tasks(tasks=[name])[0]
    except KeyError as e:
        close = difflib.get_close_matches(name, LOCAL_TASKS, n=1)
        close = close or re.findall(r"Did you mean: '([^']+)'", str(e.args[0] if e.args else ""))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown task {name!r}{hint}: local tasks are {', '.join(LOCAL_TASKS)}, "
            "and real MTEB task names such as TwentyNewsgroupsClustering.v2 are accepted"
        ) from None
    if task.metadata.type != "Clustering":
        raise UserError(
            f"task {name!r} is an MTEB {task.metadata.type} task: only Clustering tasks are supported"
        )
    if seed != task.seed:  # the same three RNGs AbsTask.__init__ seeds
        task.seed = seed
        task.rng_state, task.np_rng = random.Random(seed), np.random.default_rng(seed)
    if max_documents is not None:
        if isinstance(task, AbsTaskClustering):
            task.max_fraction_of_documents_to_embed = None
            task.max_document_to_embed = max_documents
            task.max_documents_per_cluster = min(task.max_documents_per_cluster, max_documents)
        else:
            logger.warning(
                "max_documents=%d ignored for %s (a legacy clustering task)", max_documents, name
            )
    return task


def get_tasks(
    names: Sequence[str], *, max_documents: int | None = None, seed: int = 42
) -> list[AbsTask]:
    """Fresh task instances for ``names`` (local names first, else real MTEB task names).

    Fresh instances matter: a task's bootstrap RNG advances as it runs, so reusing one gives
    different numbers for the same embeddings.

    Args:
        names: Task names, e.g. ``OFFLINE_SUITE`` or ``["TwentyNewsgroupsClustering.v2"]``.
        max_documents: Cap on the documents per task (a seeded subsample; None = task default).
        seed: Seed of the subsample and of mteb's bootstrap rounds (mteb's default: 42).

    Raises:
        UserError: A name is neither local nor an MTEB clustering task.
    """
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))  # drop repeats, keep order: results are keyed by name
    if not names:
        raise ValueError("names=[] is empty; give at least one task name, e.g. OFFLINE_SUITE")
    check_max_documents(max_documents)
    tasks: list[AbsTask] = []
    with preserve_global_rng():
        for name in names:
            if name in LOCAL_TASKS:
                tasks.append(LOCAL_TASKS[name](max_documents=max_documents, seed=seed))
            else:
                tasks.append(_mteb_task(name, max_documents, seed))
    return tasks


def load_task_data(task: AbsTask) -> None:
    """Load a task's data now, turning a failed download of a real MTEB task into a UserError."""
    if task.data_loaded:
        return
    if isinstance(task, LocalClusteringTask):
        task.load_data()  # corpora raise UserError themselves when a package is missing
        return
    name = task.metadata.name
    try:
        with preserve_global_rng():
            task.load_data()
    except Exception as e:  # datasets/hub raise many types; all mean "cannot load"
        raise UserError(
            f"could not load MTEB task {name}: no network? ({type(e).__name__}: {first_line(e)}); "
            f"pre-download it into the HF datasets cache or use a local task ({', '.join(LOCAL_TASKS)})"
        ) from e
