"""The confidence intervals every benchmark reports, against textbook values."""

import math

import pytest

from parapolicy.metrics import score_ci, success_ci


def test_score_ci_is_the_mean_and_the_normal_half_width():
    mean, half = score_ci([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and half == pytest.approx(1.96 * 0.5 / 2)  # sample std 0.5, sqrt(4) = 2
    assert score_ci([0.3]) == (0.3, 0.0)  # one seed: no spread to estimate


@pytest.mark.parametrize("successes, low, high", [
    ([0] * 10, 0.0, 0.2775),  # Wilson 95% for 0 of 10 (the normal approximation would give 0-0)
    ([1] * 10, 0.7225, 1.0),
    ([1] * 5 + [0] * 5, 0.2366, 0.7634),
])
def test_success_ci_is_the_wilson_interval(successes, low, high):
    rate, (lo, hi) = success_ci(successes)
    assert rate == sum(successes) / len(successes)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert 0.0 <= lo <= rate <= hi <= 1.0 and not math.isnan(lo)
