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
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mteb
import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.abstask import AbsTask
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.task_metadata import TaskMetadata

from llm_embed.data import corpora
from llm_embed.data.labelled_file import is_labelled_file, read_labelled_file
from llm_embed.data.seeding import sample_indices, texts_hash
from llm_embed.errors import UserError, first_line

logger = logging.getLogger(__name__)

OFFLINE_SUITE = (
    "BBCNewsHeadlines", "BBCNewsArticles", "WordNetNounGlosses",
    "DebianFortunes", "KJVBiblePassages", "EmojiNames",
)  # fmt: skip

# dev: every choice (study rows, prompt screens, the default recipe) is made on it, and training
# callbacks score it; test: reported, never chosen on; all: the whole (capped) set, seeded by the
# task seed, as scored before the split existed.
SPLITS = ("dev", "test", "all")
# The seed of the dev/test partition and of the sample drawn inside a split: fixed, so a split's
# texts never depend on the evaluation seed (which varies the k-means bootstrap alone).
SPLIT_SEED = 0


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`; ValueError naming the choices otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid; use one of {', '.join(SPLITS)}")
    return split


def split_indices(
    labels: Sequence[str],
    split: str,
    seed: int = SPLIT_SEED,
    keys: Sequence[Hashable] | None = None,
) -> list[int]:
    """The corpus indices of ``split``: a seeded half of each label's documents (ascending order).

    Documents sharing a key fall on the same side (tasks key by text, since corpora hold
    duplicates, so no text is in both halves; without ``keys`` every document is its own key). Stratified by the first label of each key, so both halves
    keep the class balance: ``dev`` takes the first ``n // 2`` of each label's shuffled keys and
    ``test`` the rest. Two tasks whose documents share keys (the BBC headlines and the BBC
    articles, keyed by headline) get the same partition, so no article is in the dev set of one
    task and the test set of the other.
    """
    check_split(split)
    if split == "all":
        return list(range(len(labels)))
    keys = range(len(labels)) if keys is None else keys
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels; give one key per document")
    label_of: dict[Hashable, str] = {}
    for key, label in zip(keys, labels, strict=True):
        label_of.setdefault(key, label)
    by_label: dict[str, list[Hashable]] = {}
    for key, label in label_of.items():
        by_label.setdefault(label, []).append(key)
    rng = random.Random(seed)
    chosen: set[Hashable] = set()
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        half = len(members) // 2
        chosen.update(members[:half] if split == "dev" else members[half:])
    return [i for i, key in enumerate(keys) if key in chosen]


def check_max_documents(max_documents: int | None) -> None:
    """Raise ValueError unless ``max_documents`` is None or an int >= 2 (k-means needs 2 points)."""
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 2
    ):
        raise ValueError(f"max_documents={max_documents!r} is invalid; use an int >= 2 or None")


class LocalClusteringTask(AbsTaskClustering):
    """A clustering task whose texts and labels come from a local function, not the HF Hub.

    Subclasses set ``metadata`` and implement ``corpus()``. ``split`` picks the documents
    (:func:`split_indices`: disjoint ``dev`` and ``test`` halves, or ``all``). ``default_size``
    (None = all) and the ``max_documents`` argument cap the set; a capped set is a seeded random
    subsample in corpus order, so a fresh instance always holds the same documents. Inside
    ``dev`` and ``test`` the subsample is seeded by :data:`SPLIT_SEED`, so ``seed`` varies only
    mteb's bootstrap and k-means; under ``all`` it is seeded by ``seed`` (the scores before the
    split existed).

    Args:
        max_documents: Keep at most this many documents (None = ``default_size``).
        seed: Seed of mteb's bootstrap rounds and k-means (mteb's default is 42).
        split: ``dev``, ``test`` or ``all``.
    """

    # Embed every document (mteb's default is 4% of the split, meant for 100k-document sets).
    max_fraction_of_documents_to_embed: float | None = None
    max_document_to_embed: int | None = None
    n_clusters: int = 10
    default_size: int | None = None

    def __init__(
        self,
        *,
        max_documents: int | None = None,
        seed: int = 42,
        split: str = "all",
        **kwargs: Any,
    ) -> None:
        check_max_documents(max_documents)
        check_split(split)
        super().__init__(seed=seed, **kwargs)
        self.max_documents = max_documents
        self.split = split

    def corpus(self) -> tuple[list[str], list[str]]:
        """All texts and their labels, in a fixed order."""
        raise NotImplementedError

    def split_keys(self, texts: Sequence[str]) -> Sequence[str]:
        """What keeps documents together in one split half: by default the text itself."""
        return texts

    @property
    def size_cap(self) -> int | None:
        """The number of documents kept: the smaller of ``default_size`` and ``max_documents``."""
        caps = [c for c in (self.default_size, self.max_documents) if c is not None]
        return min(caps) if caps else None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build mteb's ``test`` split (our ``split``'s documents) in memory; set each bootstrap
        round to the set's size."""
        if self.data_loaded:
            return
        texts, labels = self.documents()
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentences": texts, "labels": labels})}
        )
        # mteb samples k=max_documents_per_cluster documents with replacement in each round.
        self.max_documents_per_cluster = len(texts)
        self.data_loaded = True

    def documents(self) -> tuple[list[str], list[str]]:
        """The texts and labels this instance scores: its split, capped; in corpus order."""
        texts, labels = self.corpus()
        if len(texts) != len(labels):
            raise ValueError(f"{self.metadata.name}: {len(texts)} texts but {len(labels)} labels")
        if self.split != "all":
            keep = split_indices(labels, self.split, keys=self.split_keys(texts))
            texts = [texts[i] for i in keep]
            labels = [labels[i] for i in keep]
        cap = self.size_cap
        if cap is not None and len(texts) > cap:
            # A separate Random, so mteb's own rng_state (the bootstrap stream) stays untouched.
            keep = sample_indices(len(texts), cap, self.seed if self.split == "all" else SPLIT_SEED)
            texts = [texts[i] for i in keep]
            labels = [labels[i] for i in keep]
        kinds = set(labels)
        if len(kinds) < 2 or len(texts) <= len(kinds):
            where = f"{self.split} split" + (f", capped at {cap} documents" if cap else "")
            raise UserError(
                f"{self.metadata.name} ({where}): {len(texts)} texts of {len(kinds)} label(s); "
                "clustering needs at least 2 labels and more texts than labels: add texts, or "
                "score --split all"
            )
        return texts, labels


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

    def split_keys(self, texts: Sequence[str]) -> Sequence[str]:
        """The headline: the BBC headlines task's key, so both BBC tasks share one partition."""
        return [t.split("\n", 1)[0] for t in texts]


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


class DebianFortunes(LocalClusteringTask):
    """Fortune cookies (sayings, jokes, quotations) clustered by their topic file, 12 classes.

    From Debian's ``fortunes``: art, computers, drugs, education, food, law, love, medicine,
    pets, politics, science, sports. A seeded 1,000 of each split's ~2,000.
    """

    default_size = 1000

    metadata = local_task_metadata(
        "DebianFortunes",
        "Cluster fortune cookies (sayings, jokes and quotations from Debian's fortunes package) "
        "into their 12 topic files such as computers, food or law.",
        prompt="Identify the topic of the saying",
        reference="https://packages.debian.org/fortunes",
        date=("1980-01-01", "2022-12-31"),
        domains=["Fiction", "Written"],
        license="https://metadata.ftp-master.debian.org/changelogs/main/f/fortune-mod/stable_copyright",
        bibtex_citation="",
    )

    def corpus(self) -> tuple[list[str], list[str]]:
        """Every kept entry of the 12 files, and its file."""
        texts, labels = corpora.fortunes()
        return list(texts), list(labels)


class KJVBiblePassages(LocalClusteringTask):
    """Five-verse passages of the King James Bible clustered by division, 7 classes.

    Law, Old Testament history, wisdom and poetry, prophets, gospels and Acts, epistles,
    revelation (Debian's ``bible-kjv``). A seeded 1,000 of each split's ~3,350.
    """

    default_size = 1000

    metadata = local_task_metadata(
        "KJVBiblePassages",
        "Cluster passages of five consecutive verses of the King James Bible into its 7 "
        "canonical divisions such as law, prophets or epistles.",
        prompt="Identify the part of the Bible the passage comes from",
        reference="https://packages.debian.org/bible-kjv",
        date=("1611-01-01", "1769-12-31"),
        domains=["Religious", "Written"],
        license="cc0-1.0",  # the KJV text is in the public domain
        bibtex_citation="",
    )

    def corpus(self) -> tuple[list[str], list[str]]:
        """Every passage in canonical order, and its division."""
        texts, labels = corpora.kjv_passages()
        return list(texts), list(labels)


class EmojiNames(LocalClusteringTask):
    """Unicode's emoji names ("red apple") clustered by emoji group, 8 classes (2-word texts).

    Smileys & Emotion, People & Body, Animals & Nature, Food & Drink, Travel & Places,
    Activities, Objects, Symbols (Debian's ``unicode-data``); each split holds ~800.
    """

    metadata = local_task_metadata(
        "EmojiNames",
        "Cluster the names of Unicode's fully-qualified emoji into their 8 emoji groups such as "
        "Food & Drink or Travel & Places.",
        prompt="Identify the category of the emoji name",
        reference="https://unicode.org/Public/emoji/",
        date=("2010-01-01", "2022-09-13"),
        domains=["Written"],
        license="https://www.unicode.org/license.txt",
        bibtex_citation="",
    )

    def corpus(self) -> tuple[list[str], list[str]]:
        """Every kept emoji name and its group."""
        texts, labels = corpora.emoji_names()
        return list(texts), list(labels)


LOCAL_TASKS: dict[str, type[LocalClusteringTask]] = {
    "BBCNewsHeadlines": BBCNewsHeadlines,
    "BBCNewsArticles": BBCNewsArticles,
    "WordNetNounGlosses": WordNetNounGlosses,
    "DebianFortunes": DebianFortunes,
    "KJVBiblePassages": KJVBiblePassages,
    "EmojiNames": EmojiNames,
}


class LabelledFileTask(LocalClusteringTask):
    """A user's labelled file as a clustering task (:func:`file_task` makes one class per file).

    Scored under the suite's protocol: the same dev/test halves (keyed by text, stratified by
    label), evaluation seeds and intervals; no default cap.
    """

    texts: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    def corpus(self) -> tuple[list[str], list[str]]:
        """The file's texts and labels, in file order."""
        return list(self.texts), list(self.labels)


# Tasks made from files in this process, by name: found by name wherever a suite task is.
FILE_TASKS: dict[str, type[LabelledFileTask]] = {}


def task_class(name: str) -> type[LocalClusteringTask] | None:
    """The local task class named ``name`` (a suite task or a registered file); None otherwise."""
    return LOCAL_TASKS.get(name) or FILE_TASKS.get(name)


def file_task_name(path: str | Path) -> str:
    """The task name a labelled file gets: its file name without the suffix, in safe characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "file"


def file_task(
    path: str | Path, *, text_field: str = "text", label_field: str = "label"
) -> type[LabelledFileTask]:
    """Read and check a labelled file (:func:`~llm_embed.data.labelled_file.read_labelled_file`)
    and register it as a task named by :func:`file_task_name`.

    Raises:
        UserError: A bad file, or a name that a suite task already has.
    """
    name = file_task_name(path)
    if name in LOCAL_TASKS:
        raise UserError(
            f"labelled file {path} would be named {name}, a suite task's name: rename the file"
        )
    texts, labels = read_labelled_file(path, text_field=text_field, label_field=label_field)
    metadata = local_task_metadata(
        name,
        f"Cluster the {len(texts)} texts of {Path(path).name} into their "
        f"{len(set(labels))} labels (a user's labelled file).",
        reference=None,
        date=None,
        domains=None,
        license=None,
        bibtex_citation="",
        annotations_creators=None,
        sample_creation=None,
    )
    cls = type(name, (LabelledFileTask,), {
        "metadata": metadata, "texts": tuple(texts), "labels": tuple(labels),
        "__doc__": f"Texts and labels of {path}.",
    })  # fmt: skip
    FILE_TASKS[name] = cls
    return cls


def register_task_files(
    names: Sequence[str], *, text_field: str = "text", label_field: str = "label"
) -> list[str]:
    """``names`` with every labelled file path replaced by its task's name (the file registered).

    Raises:
        UserError: A bad file, or two files that would get one name.
    """
    resolved: list[str] = []
    paths: dict[str, str] = {}
    for name in names:
        if not is_labelled_file(name):
            resolved.append(name)
            continue
        task = file_task(name, text_field=text_field, label_field=label_field).metadata.name
        if paths.setdefault(task, name) != name:
            raise UserError(
                f"labelled files {paths[task]} and {name} would both be task {task}: rename one"
            )
        resolved.append(task)
    return resolved


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


def reseed(task: AbsTask, seed: int) -> None:
    """Restart ``task``'s bootstrap and k-means streams at ``seed`` (the RNGs AbsTask.__init__ seeds).

    A loaded task reseeded this way scores its same documents under another evaluation seed,
    so one embedding pass serves every seed.
    """
    task.seed = seed
    task.rng_state, task.np_rng = random.Random(seed), np.random.default_rng(seed)


def _mteb_task(name: str, max_documents: int | None, seed: int = 42) -> AbsTask:
    """A fresh real MTEB task (its data is fetched later, by ``load_task_data``)."""
    try:
        task = mteb.get_tasks(tasks=[name])[0]
    except KeyError as e:
        close = difflib.get_close_matches(name, LOCAL_TASKS, n=1)
        close = close or re.findall(r"Did you mean: '([^']+)'", str(e.args[0] if e.args else ""))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown task {name!r}{hint}: local tasks are {', '.join(LOCAL_TASKS)}; real MTEB "
            "task names such as TwentyNewsgroupsClustering.v2 and labelled files (.jsonl, .csv, "
            ".tsv, .parquet with text and label columns) are accepted"
        ) from None
    if task.metadata.type != "Clustering":
        raise UserError(
            f"task {name!r} is an MTEB {task.metadata.type} task: only Clustering tasks are supported"
        )
    reseed(task, seed)
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


_WARNED_SPLIT: set[tuple[str, str]] = set()  # (MTEB task, split) pairs already warned about


def get_tasks(
    names: Sequence[str],
    *,
    max_documents: int | None = None,
    seed: int = 42,
    split: str = "all",
) -> list[AbsTask]:
    """Fresh task instances for ``names`` (local names first, else real MTEB task names).

    Fresh instances matter: a task's bootstrap RNG advances as it runs, so reusing one gives
    different numbers for the same embeddings.

    Args:
        names: Task names, e.g. ``OFFLINE_SUITE`` or ``["TwentyNewsgroupsClustering.v2"]``.
        max_documents: Cap on the documents per task (a seeded subsample; None = task default).
        seed: Seed of mteb's bootstrap rounds (mteb's default: 42); under ``split="all"`` also
            of the subsample.
        split: ``dev``, ``test`` or ``all`` of each local task (:func:`split_indices`); a real
            MTEB task is scored on its own evaluation split whatever this says.

    Raises:
        UserError: A name is neither local nor an MTEB clustering task.
    """
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))  # drop repeats, keep order: results are keyed by name
    if not names:
        raise ValueError("names=[] is empty; give at least one task name, e.g. OFFLINE_SUITE")
    check_max_documents(max_documents)
    check_split(split)
    tasks: list[AbsTask] = []
    with preserve_global_rng():
        for name in names:
            local = task_class(name)
            if local is not None:
                tasks.append(local(max_documents=max_documents, seed=seed, split=split))
            else:
                if split != "all" and (name, split) not in _WARNED_SPLIT:
                    _WARNED_SPLIT.add((name, split))
                    logger.warning(
                        "split=%s applies to local tasks; %s is scored on its own evaluation split",
                        split,
                        name,
                    )
                tasks.append(_mteb_task(name, max_documents, seed))
    return tasks


def documents_sha256(name: str, *, split: str, max_documents: int | None) -> str | None:
    """SHA-256 of the (label, text) documents a local task scores; None for a real MTEB task.

    What a score was measured on: a cached score is reused only for the same documents.
    """
    local = task_class(name)
    if local is None:
        return None
    with preserve_global_rng():
        task = local(max_documents=max_documents, split=split)
    return task_documents_sha256(task)


def task_documents_sha256(task: AbsTask) -> str | None:
    """SHA-256 of the (label, text) documents a task instance scores; None for a real MTEB task."""
    if not isinstance(task, LocalClusteringTask):
        return None
    texts, labels = task.documents()
    return texts_hash([f"{label}\t{text}" for text, label in zip(texts, labels, strict=True)])


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
