"""JS / KL divergence in bits on hand-computed distributions (eq. 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from compass.divergence import DivergenceError, js_divergence, kl_divergence
from compass.errors import CompassError


def test_identical_is_zero_and_disjoint_is_exactly_one():
    assert js_divergence([1, 2, 3], [2, 4, 6]) == 0.0  # counts are normalised: same distribution
    assert js_divergence([1, 0], [0, 1]) == 1.0
    assert js_divergence([3, 0, 0, 0], [0, 0, 5, 1]) == 1.0


def test_hand_computed_with_a_zero():
    # p = (1/2, 1/2), q = (1, 0): M = (3/4, 1/4);
    # KL(p||M) = 1/2 log2(2/3) + 1/2 log2(2), KL(q||M) = log2(4/3)  =>  JS = 3/2 - 3/4 log2(3)
    assert js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(1.5 - 0.75 * math.log2(3), abs=1e-15)
    # p = (1/2, 0, 1/2), q = (1/2, 1/2, 0): M = (1/2, 1/4, 1/4); each KL = 1/2 log2(2) = 1/2  =>  JS = 1/2
    assert js_divergence([1, 0, 1], [1, 1, 0]) == pytest.approx(0.5, abs=1e-15)


def test_symmetric_and_matches_scipy_squared():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.integers(0, 5, size=6), rng.integers(0, 5, size=6)
        p[0] += 1
        q[1] += 1
        assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), abs=1e-15)
        assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


def test_kl_hand_computed_zero_terms_and_infinity():
    # KL((1/2, 1/2, 0) || (1/4, 1/4, 1/2)) = 2 * 1/2 log2(2) = 1; the 0 entry of p contributes 0
    assert kl_divergence([1, 1, 0], [1, 1, 2]) == pytest.approx(1.0, abs=1e-15)
    assert kl_divergence([1, 1], [1, 1]) == 0.0
    assert kl_divergence([1, 1], [1, 0]) == math.inf


@pytest.mark.parametrize(
    ("p", "q", "fragment"),
    [
        ([0, 0], [1, 1], "p: sums to 0"),
        ([1, 1], [0, 0], "q: sums to 0"),
        ([1, -1], [1, 1], "p: entry 1 is -1.0"),
        ([1, 1], [1, 1, 1], "lengths differ (2 vs 3)"),
        ([1, float("nan")], [1, 1], "NaN"),
        ([[1, 1]], [[1, 1]], "1-d vector"),
    ],
)
def test_bad_input_names_the_problem(p, q, fragment):
    with pytest.raises(DivergenceError, match=None) as info:
        js_divergence(p, q)
    assert fragment in str(info.value)
    assert isinstance(info.value, CompassError)
