"""Scores over evaluation seeds: the mean, its 95% interval, and paired differences.

One evaluation seed draws one set of mteb bootstrap samples and k-means starts; on 500 articles
the seed alone moves a score by more than most recipe changes do. So a score is the mean over
several seeds of the same embeddings, with a Student-t interval over those seeds:

    mean ± t(0.975, n - 1) · s / √n

Two encoders scored under the same seeds see the same bootstrap samples and k-means starts, so
they are compared by the per-seed difference (a paired interval), which cancels the noise they
share. A difference counts as a gain only when its interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The evaluation seeds of every score unless a command says otherwise; 42 is mteb's own default.
EVAL_SEEDS = (42, 43, 44, 45, 46)
CONFIDENCE = 0.95


def check_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct ints >= 0, in the given order; ValueError otherwise."""
    values = (seeds,) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"seeds={seeds!r} is invalid; give an int >= 0 or a list of them") from None
    if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values):
        raise ValueError(f"seeds={seeds!r} is invalid; give an int >= 0 or a list of them")
    if len(set(values)) != len(values):
        raise ValueError(f"seeds={seeds!r} repeats a seed; give distinct seeds")
    return values


def _t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


@dataclass(frozen=True)
class SeedScores:
    """One score per evaluation seed, in seed order."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.seeds) != len(self.values) or not self.values:
            raise ValueError(
                f"{len(self.seeds)} seeds but {len(self.values)} values; give one value per seed"
            )

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def half_width(self) -> float:
        """Half the 95% Student-t interval of the mean (0.0 with a single seed: no spread known)."""
        n = len(self.values)
        if n < 2:
            return 0.0
        mean = self.mean
        sd = math.sqrt(sum((v - mean) ** 2 for v in self.values) / (n - 1))
        return _t_quantile(n - 1) * sd / math.sqrt(n)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def minus(self, other: SeedScores) -> SeedScores:
        """The per-seed difference ``self - other`` (a paired comparison); the seeds must match."""
        if self.seeds != other.seeds:
            raise ValueError(
                f"seeds {list(self.seeds)} and {list(other.seeds)} differ; a paired difference "
                "needs both scored under the same seeds"
            )
        return SeedScores(self.seeds, tuple(a - b for a, b in zip(self.values, other.values, strict=True)))

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below zero (a difference that counts)."""
        return len(self.values) > 1 and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 4) -> str:
        """``0.5205 ± 0.0040`` (mean ± half the 95% interval); the mean alone for one seed."""
        if len(self.values) < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def to_dict(self) -> dict[str, object]:
        """The JSON form kept in records: the per-seed values and the summary."""
        return {
            "seeds": list(self.seeds),
            "v_measures": list(self.values),
            "v_measure": self.mean,
            "ci95": [self.low, self.high],
        }


def mean_of(scores: Sequence[SeedScores]) -> SeedScores:
    """The per-seed mean of several scores under one seed set (tasks of a suite, or training
    seeds of a recipe), with its interval over the evaluation seeds."""
    if not scores:
        raise ValueError("scores is empty; give at least one score")
    seeds = {s.seeds for s in scores}
    if len(seeds) != 1:
        raise ValueError("the scores were taken under different seeds; score them under the same")
    (common,) = seeds
    columns = zip(*(s.values for s in scores), strict=True)
    return SeedScores(common, tuple(sum(c) / len(scores) for c in columns))


def mean_over_tasks(scores: Mapping[str, SeedScores]) -> SeedScores:
    """The per-seed mean over tasks: the suite's score, with its interval over seeds."""
    if not scores:
        raise ValueError("scores is empty; give at least one task's scores")
    return mean_of(list(scores.values()))
