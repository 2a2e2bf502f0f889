"""Standard errors and 95% intervals of scores (reasonops.evaluate.stats)."""

from __future__ import annotations

import math

import pytest

from reasonops.evaluate.stats import estimate, wilson


def test_aime_sized_coin_toss() -> None:
    # 30 problems, half right: SE = sqrt(0.25 / 29 * 30 / 30) ≈ 0.093 (the "about 0.09").
    e = estimate([1.0] * 15 + [0.0] * 15)
    assert e.score == 0.5 and e.stderr == pytest.approx(math.sqrt(30 / 29 * 0.25 / 30))
    assert e.low == pytest.approx(0.5 - 0.17, abs=0.01) and e.high == pytest.approx(0.5 + 0.17, abs=0.01)


def test_all_right_is_not_a_point() -> None:
    e = estimate([1.0] * 30)
    assert e.stderr == 0.0 and e.high == 1.0 and 0.85 < e.low < 0.9  # Wilson over 30 problems


def test_samples_per_problem_lower_the_error() -> None:
    # Same mean 0.5; with 16 samples each problem's estimate is near 0.5: a smaller between-problem variance.
    binary = estimate([1.0, 0.0] * 15)
    sampled = estimate([0.5625, 0.4375] * 15)
    assert sampled.score == binary.score and sampled.stderr < binary.stderr / 5
    assert sampled.high - sampled.low < (binary.high - binary.low) / 5


def test_wilson_known_value() -> None:
    low, high = wilson(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert estimate([]).to_dict() == {"score": 0.0, "stderr": 0.0, "ciLow": 0.0, "ciHigh": 1.0}
