"""Pair generators (source text -> (anchor, positive) pairs), source corpora, and the pairs cache.

Everything here is stdlib-only so that ``llm_embed.synth`` and tests can use it without torch or
Lightning. The :class:`PairDataModule` (``datamodule.py``) calls :func:`ensure_pairs_file`.

References:
- arXiv 2507.22729 (and beneroth13/llm-text-embeddings): LLM-paraphrased positives; word deletion
  (p=0.1), word swap and character noise as switches.
- Gao et al. 2021, SimCSE (arXiv 2104.08821); Yan et al. 2021, ConSERT (arXiv 2105.11741):
  augmenting both views. Izacard et al. 2021, Contriever (arXiv 2112.09118): random cropping as
  a positive-pair generator for unsupervised dense embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, NamedTuple

from llm_embed.data.corpora import wordnet_unlabelled_sentences
from llm_embed.data.pairs import pair_problem, write_manifest, write_pairs
from llm_embed.data.seeding import sample_indices, text_rng, texts_hash
from llm_embed.errors import UserError

log = logging.getLogger(__name__)

# Bump when the cache key or file layout changes, so old caches are not mistaken for new ones.
CACHE_FORMAT = 1


class PairGenerator(ABC):
    """Turns source texts into ``{"anchor": str, "positive": str, ...}`` dicts.

    Contract (the LLM-paraphrase generator implements the same one):
    - ``generate`` is deterministic for a given ``seed`` and texts (as far as its backend allows),
      skips texts it cannot use (so it may return fewer pairs than texts), and never returns an
      empty anchor or positive. Pairs may carry extra keys (e.g. ``"instruction"``).
    - ``settings()`` is JSON-serialisable and holds everything that changes the output (model id,
      sampling parameters, an algorithm version): it is hashed into the cache key, so leaving
      something out would make a stale cache look valid.
    - ``name`` is a short identifier used in cache file names and manifests.
    """

    name: ClassVar[str]
    # A resumable generator takes ``resume_file=`` in ``generate`` and continues from it.
    resumable: ClassVar[bool] = False
    # Filled by ``generate``: counts worth keeping in the manifest (e.g. filter rejections).
    report: dict

    @abstractmethod
    def generate(self, texts: Sequence[str], *, seed: int) -> list[dict]:
        """Pairs for ``texts``, reproducible for the same ``seed``."""

    @abstractmethod
    def settings(self) -> dict:
        """Everything that changes the output of :meth:`generate` (JSON-serialisable)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class AugmentPairs(PairGenerator):
    """Cheap, seeded (text, augmented text) pairs: span crop, then word deletion, then word swap.

    Why these defaults (``span_crop=0.3, word_deletion=0.1``, no swap, clean anchors): clustering
    needs vectors that follow the topic of a text, not its exact wording or length. A crop keeps a
    contiguous part of the text, which shares the topic of the whole but not its first or last
    words (Contriever's independent cropping), so the final token cannot match pairs by their
    endings alone and must carry the content; the paper's word deletion (p=0.1) adds robustness to
    any single word. Word swap only perturbs order, which matters little to a topic, so it is off.
    The anchor stays the clean text by default because evaluation texts are clean; ``both_sides``
    augments it too, independently (SimCSE/ConSERT style, harder pairs).

    Definitions (words = whitespace split; the positive re-joins them with single spaces):
    - ``span_crop=c`` (0 <= c < 1, 0 = off): keep a random contiguous span of ``L`` words, ``L``
      uniform in ``[max(2, ceil((1 - c) * n)), n]``: at most a fraction ``c`` is cut off the ends.
    - ``word_deletion=p`` (0 <= p < 1): drop each remaining word with probability ``p``; at least
      one word always stays.
    - ``word_swap=q`` (0 <= q <= 1): walk left to right and swap each adjacent pair with
      probability ``q`` (a swapped word is not swapped again).
    - Texts with fewer than ``min_words`` words are skipped. A positive that came out identical to
      its anchor gets one random word dropped: an unchanged pair teaches no invariance.

    Each text gets its own RNG seeded from ``(seed, text)``, so a text's pair does not depend on
    which other texts were sampled with it.
    """

    name: ClassVar[str] = "augment"
    version: ClassVar[int] = 1  # bump when the algorithm changes the output for the same settings

    def __init__(
        self,
        word_deletion: float = 0.1,
        span_crop: float = 0.3,
        word_swap: float = 0.0,
        both_sides: bool = False,
        min_words: int = 3,
    ) -> None:
        """
        Args:
            word_deletion: probability of dropping each word (the paper's switch uses 0.1).
            span_crop: largest fraction of words cut off the ends by a random contiguous crop (0 = off).
            word_swap: probability of swapping each adjacent word pair (0 = off).
            both_sides: augment the anchor too, with independent draws.
            min_words: skip source texts with fewer words than this (at least 2).
        """
        if not 0.0 <= word_deletion < 1.0:
            raise ValueError(
                f"word_deletion={word_deletion!r} is out of range; use 0 <= word_deletion < 1"
            )
        if not 0.0 <= span_crop < 1.0:
            raise ValueError(f"span_crop={span_crop!r} is out of range; use 0 <= span_crop < 1")
        if not 0.0 <= word_swap <= 1.0:
            raise ValueError(f"word_swap={word_swap!r} is out of range; use 0 <= word_swap <= 1")
        if min_words < 2:
            raise ValueError(f"min_words={min_words!r} is too small; use min_words >= 2")
        if word_deletion == span_crop == word_swap == 0.0:
            raise ValueError(
                "word_deletion=0, span_crop=0, word_swap=0 would make positives equal to anchors; "
                "set at least one of them above 0"
            )
        self.word_deletion = float(word_deletion)
        self.span_crop = float(span_crop)
        self.word_swap = float(word_swap)
        self.both_sides = bool(both_sides)
        self.min_words = int(min_words)

    def settings(self) -> dict:
        """All switches plus the algorithm version (hashed into the cache key)."""
        return {
            "word_deletion": self.word_deletion,
            "span_crop": self.span_crop,
            "word_swap": self.word_swap,
            "both_sides": self.both_sides,
            "min_words": self.min_words,
            "version": self.version,
        }

    def augment(self, words: list[str], rng: random.Random) -> list[str]:
        """One augmented view of ``words`` (non-empty in, non-empty out; the input is not modified)."""
        n = len(words)
        out = list(words)
        if self.span_crop > 0.0 and n > 2:
            shortest = min(n, max(2, math.ceil((1.0 - self.span_crop) * n)))
            length = rng.randint(shortest, n)
            start = rng.randint(0, n - length)
            out = out[start : start + length]
        if self.word_deletion > 0.0:
            kept = [w for w in out if rng.random() >= self.word_deletion]
            out = kept or [rng.choice(out)]
        if self.word_swap > 0.0:
            i = 0
            while i < len(out) - 1:
                if rng.random() < self.word_swap:
                    out[i], out[i + 1] = out[i + 1], out[i]
                    i += 2
                else:
                    i += 1
        return out

    def generate(self, texts: Sequence[str], *, seed: int) -> list[dict]:
        """One pair per text with at least ``min_words`` words, in input order."""
        pairs = []
        for text in texts:
            words = text.split()
            if len(words) < self.min_words:
                continue
            rng = text_rng(seed, text)
            anchor_words = self.augment(words, rng) if self.both_sides else words
            positive_words = self.augment(words, rng)
            if positive_words == anchor_words:
                if len(positive_words) > 1:
                    drop = rng.randrange(len(positive_words))
                    positive_words = positive_words[:drop] + positive_words[drop + 1 :]
                else:  # both sides cut to the same single word: the full text differs from it
                    positive_words = words
            anchor = text.strip() if not self.both_sides else " ".join(anchor_words)
            pairs.append({"anchor": anchor, "positive": " ".join(positive_words)})
        return pairs


# --- source corpora ---------------------------------------------------------------------------

# Named unlabelled corpora for pair generation. Never register an evaluation set here
# (bbc_news, wordnet_noun_glosses): pairs built from it would leak into the scores.
SOURCES: dict[str, Callable[[], list[str]]] = {
    "wordnet": wordnet_unlabelled_sentences,
}


def check_source(source: str) -> None:
    """Cheap construction-time check: a registered name or an existing text file."""
    if source in SOURCES:
        return
    path = Path(source)
    if path.is_file():
        if path.suffix in (".jsonl", ".json"):
            raise UserError(
                f"source {source!r} looks like a pairs file: pass it as pairs_file, or give source a .txt file (one sentence per line)"
            )
        return
    raise UserError(
        f"unknown source {source!r}: use one of {sorted(SOURCES)} or a path to a .txt file (one sentence per line)"
    )


def load_source(source: str) -> list[str]:
    """The texts of a named corpus, or the stripped, non-empty, deduplicated lines of a text file."""
    check_source(source)
    if source in SOURCES:
        texts = list(SOURCES[source]())
    else:
        try:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise UserError(
                f"source file {source} is not UTF-8 (byte {e.start}): re-save it as UTF-8"
            ) from None
        # Duplicates would sit in one batch as false negatives, so keep the first of each.
        texts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not texts:
        raise UserError(f"source {source!r} holds no text: give it one sentence per line")
    return texts


def sample_source(texts: Sequence[str], num: int, seed: int) -> list[str]:
    """A seeded subsample of ``num`` texts in source order (all of them when ``num >= len``)."""
    if num >= len(texts):
        return list(texts)
    keep = sample_indices(len(texts), num, seed)
    return [texts[i] for i in keep]


# --- the pairs cache --------------------------------------------------------------------------


def cache_key(texts: Sequence[str], generator: PairGenerator, *, num_source: int, seed: int) -> str:
    """SHA-256 over everything that decides the pairs: the sampled texts, generator and seed."""
    payload = {
        "format": CACHE_FORMAT,
        "generator": generator.name,
        "settings": generator.settings(),
        "num_source": num_source,
        "seed": seed,
        "texts": texts_hash(texts),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _slug(source: str) -> str:
    name = source if source in SOURCES else Path(source).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "source"


def cache_file(
    cache_dir: str | Path,
    source: str,
    generator: PairGenerator,
    *,
    num_source: int,
    seed: int,
    key: str,
) -> Path:
    """Readable and unique: ``<generator>-<source>-n<num>-s<seed>-<key[:16]>.jsonl``."""
    return (
        Path(cache_dir) / f"{generator.name}-{_slug(source)}-n{num_source}-s{seed}-{key[:16]}.jsonl"
    )


class PairsCache(NamedTuple):
    """Where the pairs for one (source, generator, num_source, seed) live, and what they come from."""

    path: Path
    key: str
    texts: list[str]


def resolve_pairs_cache(
    source: str, generator: PairGenerator, *, num_source: int, seed: int, cache_dir: str | Path
) -> PairsCache:
    """The cache file for these inputs, its key, and the sampled source texts it is built from."""
    texts = sample_source(load_source(source), num_source, seed)
    key = cache_key(texts, generator, num_source=num_source, seed=seed)
    path = cache_file(cache_dir, source, generator, num_source=num_source, seed=seed, key=key)
    return PairsCache(path, key, texts)


def ensure_pairs_file(
    source: str, generator: PairGenerator, *, num_source: int, seed: int, cache_dir: str | Path
) -> Path:
    """Return the cached pairs file, generating it (plus a manifest) when it is missing.

    The manifest is written first and the pairs file last (both atomically), so an existing pairs
    file always means a finished run; concurrent writers produce the same bytes.
    """
    path, key, texts = resolve_pairs_cache(
        source, generator, num_source=num_source, seed=seed, cache_dir=cache_dir
    )
    if path.is_file():
        log.info("reusing cached pairs %s", path)
        return path
    log.info("generating pairs from %d %s texts with %r", len(texts), source, generator)
    progress = path.with_name(path.stem + ".progress.jsonl")
    if generator.resumable:
        pairs = generator.generate(texts, seed=seed, resume_file=progress)
    else:
        pairs = generator.generate(texts, seed=seed)
    for i, pair in enumerate(pairs):
        problem = pair_problem(pair)
        if problem is not None:
            raise RuntimeError(
                f"{type(generator).__name__} broke its contract: pair {i} is invalid ({problem})"
            )
    if not pairs:
        raise UserError(
            f"source {source!r} gave no pairs with {generator!r}: give texts of at least a few words"
        )
    from llm_embed import __version__

    write_manifest(
        path,
        {
            "format": CACHE_FORMAT,
            "generator": generator.name,
            "generator_class": f"{type(generator).__module__}.{type(generator).__qualname__}",
            "settings": generator.settings(),
            "source": source if source in SOURCES else str(Path(source).resolve()),
            "num_source": num_source,
            "num_texts": len(texts),
            "num_pairs": len(pairs),
            "seed": seed,
            "key": key,
            # timezone.utc, not datetime.UTC: setup.cfg still allows Python 3.10.
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
            "llm_embed_version": __version__,
            "report": getattr(generator, "report", None) or None,
        },
    )
    write_pairs(path, pairs)
    progress.unlink(missing_ok=True)
    log.info("wrote %d pairs to %s", len(pairs), path)
    return path
