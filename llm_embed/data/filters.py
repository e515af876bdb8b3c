"""Quality filters for LLM-written positives: each rejection has a named reason that is counted.

A small instruct model often answers with chatter ("Sure! Here is..."), copies its input, echoes
the instruction, drifts into another script, or runs past its token budget mid-sentence. A pair
like that teaches nothing (a copy) or the wrong thing (chatter shared by every positive makes them
all similar to each other). Stdlib only, so the rules are cheap to test on crafted strings.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from typing import Any

# The reasons, in the order they are checked (the first that applies is counted).
REASONS = (
    "empty",
    "truncated",
    "chatter",
    "instruction_echo",
    "meta",
    "copy",
    "script",
    "too_short",
    "too_long",
    "duplicate",
)

# Openers of assistant small talk rather than an answer.
_CHATTER = re.compile(
    r"^(sure|certainly|of course|okay|ok|absolutely|great|hello|hi|hey|ew|wow|oh|i'?m sorry|sorry|"
    r"as an ai|i (can|could|would|will|'d|'ll)|here('s| is| are)|let me|what a (delightful|great|"
    r"wonderful|fascinating|lovely))\b",
    re.IGNORECASE,
)
# Talk about the task instead of doing it ("A teacher would explain the sentence..."): such a
# positive shares its wording with every other one, not its topic with its anchor. A pattern that
# also occurs in the source is not counted (a gloss may well mention "a sentence").
_META = re.compile(
    r"\b((this|the|original|given|provided|above|following|your|a) (sentence|phrase|statement)|"
    r"(a|the) (teacher|reader)s? (would|might|could|can|will|may|of this)|"
    r"rewrit\w*|rephras\w*|paraphras\w*|reword\w*|metaphor\w*|smollm\w*|as an ai|"
    r"i'?m (glad|happy|here)|original meaning)\b",
    re.IGNORECASE,
)
# The task talk that _META lets through, found in the committed positives: a positive about "the
# teacher", "a question" or "the answer" rather than the anchor's content. Not a generator rule
# (that would change every pairs cache key); :mod:`llm_embed.data.meta_filter` applies it to a
# pairs file after the fact.
_TASK_TALK = re.compile(
    r"\b(((this|that|the|a|one) (sentence|question|phrase|statement|word)s?|(the|an?) answer|"
    r"in simpler (words|terms)|(a|the) (teacher|reader|user|judge)s?|i'?d (be|respond|say|ask))\b|"
    r"would (ask|be):)",
    re.IGNORECASE,
)
# Labels a model puts before its answer ("Rewritten sentence: ..."), removed by :func:`clean`.
_LABEL = re.compile(
    r"^\s*(rewritten|paraphrased?|simplified|answer|output|question|metaphor|explanation|"
    r"new sentence|sentence)\s*(sentence)?\s*:\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?=[\"')\]]*(\s|$))")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class FilterSettings:
    """Thresholds of the filters (all part of the pairs cache key).

    Attributes:
        min_words: Fewer words than this is ``too_short``.
        max_words: More words than this is ``too_long``.
        max_similarity: A character-level similarity ratio (difflib) to the source above this is a
            ``copy``: the pair would be (nearly) the identity.
        min_latin: Share of letters in the Latin script below this is ``script`` (the sources are
            English; the paper regenerated batches with CJK output).
    """

    min_words: int = 4
    max_words: int = 80
    max_similarity: float = 0.9
    min_latin: float = 0.95

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.max_words < self.min_words:
            raise ValueError(
                f"min_words={self.min_words}, max_words={self.max_words}: need 1 <= min_words <= max_words"
            )
        if not 0.0 < self.max_similarity <= 1.0:
            raise ValueError(
                f"max_similarity={self.max_similarity} is out of range; use 0 < x <= 1"
            )
        if not 0.0 <= self.min_latin <= 1.0:
            raise ValueError(f"min_latin={self.min_latin} is out of range; use 0 <= x <= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def normalize(text: str) -> str:
    """Lower-cased words joined by single spaces: the identity used for copies and duplicates."""
    return " ".join(w.lower() for w in _WORD.findall(text))


def clean(output: str, *, finished: bool = True) -> str:
    """The answer in a raw generation: first paragraph, no label, no wrapping quotes.

    When the model stopped at its token budget (``finished=False``) the text is cut after its last
    complete sentence; with no complete sentence the result is empty (then counted ``truncated``).
    """
    text = output.strip()
    text = text.split("\n\n")[0].strip()  # a second paragraph is commentary on the first
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    if not finished:
        ends = list(_SENTENCE_END.finditer(text))
        text = text[: ends[-1].end()].strip() if ends else ""
    return " ".join(text.split())


def talks_about_the_task(source: str, positive: str) -> bool:
    """Whether ``positive`` talks about the task (:data:`_TASK_TALK`) in words its source lacks."""
    in_source = {m.group(0).lower() for m in _TASK_TALK.finditer(source)}
    return any(m.group(0).lower() not in in_source for m in _TASK_TALK.finditer(positive))


def latin_share(text: str) -> float:
    """Share of the letters in ``text`` that are Latin script (1.0 when there are no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    return latin / len(letters)


def rejection(
    source: str,
    output: str,
    instruction: str,
    settings: FilterSettings,
    *,
    finished: bool = True,
    seen: set[str] | None = None,
) -> tuple[str | None, str]:
    """Check one generation: ``(reason, cleaned)``; reason is None when the pair is kept.

    Args:
        source: The source sentence (the anchor).
        output: The raw generated text (special tokens removed).
        instruction: The instruction the model was given, with the source filled in.
        settings: Thresholds.
        finished: False when generation hit ``max_new_tokens`` before the end-of-turn token.
        seen: Normalized positives kept so far (``duplicate`` when the new one is among them).
    """
    if not output.strip():
        return "empty", ""
    cleaned = clean(output, finished=finished)
    if not cleaned:
        return ("truncated" if not finished else "empty"), cleaned
    if _CHATTER.match(cleaned):
        return "chatter", cleaned
    norm = normalize(cleaned)
    instruction_only = normalize(instruction.replace(source, " "))
    if instruction_only and (
        norm in instruction_only
        or instruction_only in norm
        or SequenceMatcher(None, norm[: len(instruction_only)], instruction_only).ratio() > 0.6
    ):
        return "instruction_echo", cleaned
    source_meta = {m.group(0).lower() for m in _META.finditer(source)}
    if any(m.group(0).lower() not in source_meta for m in _META.finditer(cleaned)):
        return "meta", cleaned
    if norm == normalize(source) or (
        SequenceMatcher(None, norm, normalize(source)).ratio() > settings.max_similarity
    ):
        return "copy", cleaned
    if latin_share(cleaned) < settings.min_latin:
        return "script", cleaned
    words = len(cleaned.split())
    if words < settings.min_words:
        return "too_short", cleaned
    if words > settings.max_words:
        return "too_long", cleaned
    if seen is not None and norm in seen:
        return "duplicate", cleaned
    return None, cleaned


def format_report(manifest: dict[str, Any]) -> str:
    """The filter report of a pairs manifest as a few aligned lines, reasons in filter order."""
    report = manifest.get("report") or {}
    if not report:
        return f"{manifest.get('num_pairs', '?')} pairs ({manifest.get('generator')}: no filter report)"
    if "generations" not in report:  # a generator without an LLM (WordNet pairs): its own counts
        return f"{manifest.get('num_pairs', '?')} pairs ({manifest.get('generator')}): " + ", ".join(
            f"{key} {value}" for key, value in report.items()
        )
    gens = max(1, report["generations"])
    lines = [
        f"sources {report['sources']}, generations {report['generations']}, "
        f"kept {report['kept']} ({report['kept'] / max(1, report['sources']):.1%} of sources), "
        f"dropped after retries {report['dropped']}",
        "rejected generations by filter:",
    ]
    for reason in REASONS:
        count = report["rejected"].get(reason, 0)
        lines.append(f"  {reason:<17} {count:>6}  ({count / gens:.1%} of generations)")
    return "\n".join(lines)
