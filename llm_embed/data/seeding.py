"""Seeded randomness and hashing keyed by content, shared by the pair generators and the task subsampler.

Draws that depend on ``(seed, text)`` instead of a stream position give the same result for a
text whatever order, batch or resumed run it comes in. A ``str`` seed is hashed by ``random``
with SHA-512, so it is stable across processes (unlike ``hash()``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence


def text_rng(seed: int, text: str) -> random.Random:
    """A generator seeded by ``(seed, text)`` alone."""
    return random.Random(f"{seed}\x1f{text}")


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 (hex) of a list of texts, order included: the identity of a sample or a chunk."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` drawn with ``seed``, in ascending order; its own Random leaves global streams alone."""
    return sorted(random.Random(seed).sample(range(n), k))
