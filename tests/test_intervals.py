"""Tests for llm_embed.eval.intervals: per-seed scores, their 95% interval, paired differences."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from llm_embed.eval.intervals import SeedScores, check_seeds, mean_over_tasks

SEEDS = (42, 43, 44, 45, 46)


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    values = (0.51, 0.53, 0.50, 0.55, 0.52)
    s = SeedScores(SEEDS, values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values)
    )
    assert s.mean == pytest.approx(statistics.mean(values))
    assert (s.low, s.high) == pytest.approx((low, high))
    assert s.format() == f"{s.mean:.4f} ± {s.half_width:.4f}"
    record = s.to_dict()
    assert record["v_measures"] == list(values) and record["seeds"] == list(SEEDS)
    assert record["ci95"] == pytest.approx([low, high])


def test_one_seed_has_no_interval() -> None:
    s = SeedScores((42,), (0.5,))
    assert s.half_width == 0.0 and s.format() == "0.5000" and not s.excludes_zero()


def test_paired_difference_cancels_the_shared_seed_noise() -> None:
    # the seed moves both encoders alike; the unpaired intervals overlap, the paired one excludes 0
    noise = (0.00, 0.04, -0.03, 0.02, -0.05)
    a = SeedScores(SEEDS, tuple(0.60 + n for n in noise))
    b = SeedScores(SEEDS, tuple(0.59 + n + 0.001 * i for i, n in enumerate(noise)))
    assert a.low < b.high  # unpaired: no difference visible
    diff = a.minus(b)
    assert diff.values == pytest.approx([0.01 - 0.001 * i for i in range(5)])
    assert diff.excludes_zero() and diff.low > 0
    assert not b.minus(b).excludes_zero()
    with pytest.raises(ValueError, match="same seeds"):
        a.minus(SeedScores((1, 2, 3, 4, 5), a.values))


def test_mean_over_tasks_is_per_seed() -> None:
    scores = {"A": SeedScores(SEEDS, (0.1, 0.2, 0.3, 0.4, 0.5)), "B": SeedScores(SEEDS, (0.3,) * 5)}
    mean = mean_over_tasks(scores)
    assert mean.values == pytest.approx((0.2, 0.25, 0.3, 0.35, 0.4))
    assert math.isclose(mean.mean, 0.3)
    with pytest.raises(ValueError, match="different seeds"):
        mean_over_tasks({**scores, "C": SeedScores((1,), (0.3,))})


@pytest.mark.parametrize("bad", [[], [-1], [1, 1], [True], "1,2", 1.5])
def test_bad_seeds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="seeds="):
        check_seeds(bad)  # type: ignore[arg-type]


def test_seeds_accept_one_int_or_a_list() -> None:
    assert check_seeds(7) == (7,)
    assert check_seeds([3, 1, 2]) == (3, 1, 2)
