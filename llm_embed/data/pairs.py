"""The pairs file: JSONL, one ``{"anchor": str, "positive": str, ...}`` object per line.

Extra keys (``"instruction"``, ``"source"``, ...) are allowed and kept, so a generator can record
how a pair was made. A generated pairs file may have a manifest beside it
(``<name>.manifest.json``) that says which generator, settings and source produced it.

Files are written atomically (:func:`llm_embed._fs.atomic_write`): a killed run
leaves either the old file or the new one, never half of one, so a cache hit is always complete.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_embed._fs import atomic_write_text
from llm_embed.data.labelled_file import has_lone_surrogate
from llm_embed.errors import UserError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("anchor", "positive")
ON_BAD_LINE = ("error", "skip")


# Byte-order marks of encodings other than UTF-8 (UTF-32 first: its LE mark starts like UTF-16's).
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def check_on_bad_line(on_bad_line: str) -> None:
    """Raise ValueError unless ``on_bad_line`` is one of :data:`ON_BAD_LINE`."""
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(
            f"on_bad_line={on_bad_line!r} is not allowed; use one of {list(ON_BAD_LINE)}"
        )


def pair_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a valid pair, or None when it is one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for key in REQUIRED_KEYS:
        if key not in obj:
            return f"missing {key!r}"
        if not isinstance(obj[key], str):
            return f"{key!r} is {type(obj[key]).__name__}, not a string"
        if not obj[key].strip():
            return f"{key!r} is empty"
    if "negative" in obj and (not isinstance(obj["negative"], str) or not obj["negative"].strip()):
        return "'negative' is not a non-empty string (a hard negative is optional: leave the key out)"
    if has_lone_surrogate(obj):
        return "a lone surrogate escape (such as \\ud800) is not a character"
    return None


# A share of copies (anchor == positive) above which InfoNCE only learns to match identical strings.
MAX_COPY_FRACTION = 0.5


def degenerate_problem(pairs: Sequence[Mapping[str, Any]], batch_size: int) -> str | None:
    """Why ``pairs`` cannot train a contrastive model, or None when they can.

    With fewer distinct pairs than a batch, batches repeat pairs (a positive is its own negative);
    with one positive for every anchor, or mostly copies, the loss has nothing to separate.
    """
    distinct = {(p["anchor"], p["positive"]) for p in pairs}
    if len(distinct) < batch_size:
        return f"only {len(distinct)} distinct pairs for batch_size={batch_size}"
    positives = {p["positive"] for p in pairs}
    if len(positives) == 1:
        return "every positive is the same text"
    copies = sum(p["anchor"].strip() == p["positive"].strip() for p in pairs)
    if copies > MAX_COPY_FRACTION * len(pairs):
        return f"{copies} of {len(pairs)} positives are copies of their anchor"
    return None


def validate_pairs_file(path: str | os.PathLike[str]) -> Path:
    """Cheap check for construction time (exists, is a file, not empty); the full parse comes later."""
    p = Path(path)
    if not p.exists():
        raise UserError(
            f'pairs file {p} not found: check the path (JSONL, one {{"anchor", "positive"}} per line)'
        )
    if not p.is_file():
        raise UserError(
            f'pairs file {p} is not a file: pass a JSONL file, one {{"anchor", "positive"}} per line'
        )
    if p.stat().st_size == 0:
        raise UserError(
            f'pairs file {p} is empty: it needs one {{"anchor", "positive"}} JSON object per line'
        )
    return p


def read_pairs(path: str | os.PathLike[str], *, on_bad_line: str = "error") -> list[dict]:
    """Read a pairs file; blank lines are ignored, extra keys kept.

    A malformed line (bad JSON, bad UTF-8, missing/non-string/empty ``anchor`` or ``positive``)
    raises UserError naming ``file:line`` with ``on_bad_line="error"``; with ``"skip"`` it is
    skipped and counted, and the count is logged as a warning (never silently).
    """
    check_on_bad_line(on_bad_line)
    p = validate_pairs_file(path)
    pairs: list[dict] = []
    bad: list[tuple[int, str]] = []
    with p.open("rb") as f:
        head = f.read(4)
        f.seek(0)
        for bom, encoding in _OTHER_BOMS:
            if head.startswith(bom):
                raise UserError(f"pairs file {p} is {encoding} (byte-order mark): re-save it as UTF-8")
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM from some editors
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                problem = f"not valid UTF-8 (byte {e.start})"
            except json.JSONDecodeError as e:
                problem = f"bad JSON ({e.msg}, column {e.colno})"
            else:
                problem = pair_problem(obj)
            if problem is None:
                pairs.append(obj)
                continue
            if on_bad_line == "error":
                raise UserError(
                    f"{p}:{lineno}: {problem}: fix the line, or set on_bad_line=skip to skip malformed lines"
                )
            bad.append((lineno, problem))
    if bad:
        first_line, first_problem = bad[0]
        log.warning(
            "skipped %d malformed line(s) in %s (first: line %d: %s)",
            len(bad),
            p,
            first_line,
            first_problem,
        )
    if not pairs:
        raise UserError(
            f"pairs file {p} holds no valid pairs ({len(bad)} malformed line(s) skipped): "
            'write one {"anchor": str, "positive": str} JSON object per line'
        )
    return pairs


def write_pairs(path: str | os.PathLike[str], pairs: Iterable[Mapping[str, Any]]) -> Path:
    """Write pairs as JSONL atomically; raises ValueError on an invalid pair or an empty list."""
    rows = []
    for i, pair in enumerate(pairs):
        problem = pair_problem(dict(pair) if isinstance(pair, Mapping) else pair)
        if problem is not None:
            raise ValueError(f"pairs[{i}] is not a valid pair: {problem}")
        rows.append(json.dumps(dict(pair), ensure_ascii=False) + "\n")
    if not rows:
        raise ValueError("pairs is empty; a pairs file needs at least one pair")
    p = Path(path)
    atomic_write_text(p, "".join(rows))
    return p


def manifest_path(pairs_path: str | os.PathLike[str]) -> Path:
    """The manifest beside a pairs file: ``x.jsonl`` -> ``x.manifest.json``."""
    p = Path(pairs_path)
    return p.with_name(p.stem + ".manifest.json")


def write_manifest(pairs_path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write the manifest JSON beside a pairs file, atomically."""
    p = manifest_path(pairs_path)
    atomic_write_text(
        p, json.dumps(dict(manifest), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    )
    return p


def read_manifest(pairs_path: str | os.PathLike[str]) -> dict | None:
    """The manifest beside a pairs file, or None when there is none."""
    p = manifest_path(pairs_path)
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def sample_anchors(pairs: Iterable[Mapping[str, Any]], n: int, *, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` distinct anchors (all of them if fewer): the texts that calibrate
    an encoder's ``dim_scale``, drawn the same way wherever a scale is fitted."""
    anchors = sorted({p["anchor"] for p in pairs})
    return random.Random(seed).sample(anchors, min(n, len(anchors)))
