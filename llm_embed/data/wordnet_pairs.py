"""Human-written positives that WordNet already holds: a gloss and its own example sentence.

WordNet's verb, adjective and adverb synsets pair a definition ("move fast by using one's feet")
with usage examples written by lexicographers ("Don't run--you'll be out of breath"). Both say what
the same sense is about in different words and registers, which is the invariance clustering
needs, with none of the drift of a small LLM's rewrites. The sources are the same unlabelled
verb/adjective/adverb texts the other generators read (never a noun gloss: those are evaluated).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar, Literal, get_args

from llm_embed.data.corpora import Synset, read_wordnet
from llm_embed.data.generators import PairGenerator
from llm_embed.data.seeding import text_rng

Positive = Literal["example", "lemmas", "lexname", "broader"]
POSITIVES: tuple[str, ...] = get_args(Positive)


@lru_cache(maxsize=1)
def synset_of() -> dict[str, Synset]:
    """Each verb/adjective/adverb definition or example -> its synset (first one wins)."""
    index: dict[str, Synset] = {}
    for pos in ("verb", "adj", "adv"):
        for synset in read_wordnet(pos):
            for text in (synset.definition, *synset.examples):
                index.setdefault(text, synset)
    return index


@lru_cache(maxsize=1)
def synset_at() -> dict[tuple[str, str], Synset]:
    """(file, offset) -> synset for the verb, adjective and adverb files (offsets repeat across
    files, so the file is part of the key: ``("verb", "00001740")``)."""
    return {(pos, s.offset): s for pos in ("verb", "adj", "adv") for s in read_wordnet(pos)}


@lru_cache(maxsize=1)
def synsets_by_lexname() -> dict[str, tuple[Synset, ...]]:
    """Verb, adjective and adverb synsets grouped by lexicographer file (``verb.motion``, ...;
    adjectives and adverbs have one file each, ``adj.all`` and ``adv.all``)."""
    groups: dict[str, list[Synset]] = {}
    for pos in ("verb", "adj", "adv"):
        for synset in read_wordnet(pos):
            groups.setdefault(synset.lexname, []).append(synset)
    return {name: tuple(members) for name, members in groups.items()}


class WordNetPairs(PairGenerator):
    """(text, the other side of its synset): a definition with one of its examples, and back.

    For each source text that is a WordNet verb/adjective/adverb definition or example:
    - ``positive="example"``: a definition gets one of its synset's examples (seeded choice), an
      example gets its synset's definition; a definition without examples is skipped.
    - ``positive="lemmas"``: the positive is the synset's lemmas, ``"run, go, pass"`` (one-word
      synsets are skipped: a lone lemma says too little).
    - ``positive="lexname"``: a verb text gets the definition of another verb synset from the
      same lexicographer file (seeded choice), e.g. two different ways of moving
      (``verb.motion``): a topic-level positive rather than a paraphrase. Adjectives and adverbs
      are skipped (their files, ``adj.all`` and ``adv.all``, are no topics). WordNet's noun glosses
      that the suite scores are grouped by the noun files' lexicographer classes, so pairs of this
      kind are close to that task's labelling: report runs that use them apart.
    - ``positive="broader"``: the positive is the definition of a synset one step up the text's
      hierarchy (seeded choice): a verb's hypernym ("sprint" -> "run: move fast by using one's
      feet"), an adjective's similar-to head or satellite. A text with none (adverbs, root
      verbs) is skipped. Like ``lexname``, it teaches the kind of thing a text is about, which is
      what the noun glosses' classes label: report runs that use them apart.

    At most one pair per synset (the first source text that reaches it), so a definition and its
    example never meet as each other's in-batch negatives.
    """

    name: ClassVar[str] = "wordnet"
    version: ClassVar[int] = 1

    def __init__(self, positive: Positive = "example") -> None:
        """
        Args:
            positive: one of :data:`POSITIVES` (see the class doc).
        """
        if positive not in POSITIVES:
            raise ValueError(f"positive={positive!r} is unknown; use one of {', '.join(POSITIVES)}")
        self.positive = positive
        self.report: dict = {}

    def settings(self) -> dict:
        """The positive kind plus the algorithm version (hashed into the cache key)."""
        return {"positive": self.positive, "version": self.version}

    def generate(self, texts: Sequence[str], *, seed: int) -> list[dict]:
        """One pair per synset reached by ``texts``, in input order; other texts are skipped."""
        index = synset_of()
        seen: set[str] = set()
        pairs: list[dict] = []
        skipped = {"not_wordnet": 0, "same_synset": 0, "no_positive": 0}
        for text in texts:
            synset = index.get(text)
            if synset is None:
                skipped["not_wordnet"] += 1
                continue
            key = f"{synset.lexname.split('.')[0]}:{synset.offset}"  # offsets repeat across files
            if key in seen:
                skipped["same_synset"] += 1
                continue
            positive = self._positive(text, synset, text_rng(seed, text))
            if positive is None or positive == text:
                skipped["no_positive"] += 1
                continue
            seen.add(key)
            pairs.append({"anchor": text, "positive": positive, "synset": key})
        self.report = {"texts": len(texts), "pairs": len(pairs), "skipped": skipped}
        return pairs

    def _positive(self, text: str, synset: Synset, rng: random.Random) -> str | None:
        if self.positive == "lemmas":
            return ", ".join(synset.words) if len(synset.words) > 1 else None
        if self.positive == "broader":
            pos = synset.lexname.split(".")[0]
            return synset_at()[pos, rng.choice(synset.broader)].definition if synset.broader else None
        if self.positive == "lexname":
            if not synset.lexname.startswith("verb."):
                return None
            others = [o for o in synsets_by_lexname()[synset.lexname] if o.offset != synset.offset]
            return rng.choice(others).definition if others else None
        if text != synset.definition:
            return synset.definition
        return rng.choice(synset.examples) if synset.examples else None
