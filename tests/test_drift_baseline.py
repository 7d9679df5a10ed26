"""compass/drift/baseline.py: a re-fit reference's baseline counts and the burn-in armed from them (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest

from compass.drift.baseline import armed_burn_in, baseline_counts, carried_over
from compass.drift.calibrated import BurnIn, JsThreshold
from compass.drift.reference_rows import ReferenceRows
from compass.drift.sequential import Cusum


def rows(sources: tuple[str, ...], weights: list[float]) -> ReferenceRows:
    return ReferenceRows(tuple(f"r{i}" for i in range(len(sources))), sources, np.array(weights),
                         np.eye(len(sources), 4))


# (case, sources, weights, buckets on the new codebook, k, expected counts)
COUNT_CASES = [
    ("window rows only; selected ignored", ("window", "window", "selected", "window"), [1, 1, 3, 1], [0, 1, 1, 1], 2,
     [1.0, 2.0, 0.0]),
    ("noise (-1 and k) counted last", ("window", "window", "window"), [1, 1, 1], [-1, 2, 0], 2, [1.0, 0.0, 2.0]),
    ("no window rows: target (D_t) stands in", ("target", "target", "selected"), [1, 2, 5], [1, 1, 0], 2,
     [0.0, 3.0, 0.0]),
    ("window preferred to target", ("target", "window"), [1, 1], [0, 1], 1, [0.0, 1.0]),
    ("selected only: none", ("selected",), [2], [0], 1, None),
]


@pytest.mark.parametrize("case, sources, weights, buckets, k, want", COUNT_CASES, ids=[c[0] for c in COUNT_CASES])
def test_baseline_counts(case, sources, weights, buckets, k, want):
    got = baseline_counts(rows(sources, weights), np.array(buckets), k)
    assert (None if got is None else got.tolist()) == want


THR = JsThreshold(theta_full=0.1, theta_min=0.2, window_size=500, min_samples=200, per_check_alpha=0.002,
                  queries_per_check=100.0, dispersion=1.7, null_mean=0.05, burn_in_js_max=0.04,
                  burn_in_queries=500, n_boot=2000)
CUSUM = Cusum(null=(1.0, 1.0), h=6.9, phi=2.5, queries_per_check=50.0)
# two checks [10, 0], [0, 10]: X^2 / df = 20 (test_lifecycle.py), upper bound 20 (1 + 1.28 sqrt(2)) = 56.204...
BURN = BurnIn(seen=20, checks=2, counts=(10, 10), batches=((10, 0), (0, 10)))

# (case, threshold, cusum, burn-in, queries this check, expected (m, phi))
CARRY_CASES = [
    ("the calibrated threshold's", THR, CUSUM, BURN, 7, (100.0, 1.7)),
    ("the CUSUM's", None, CUSUM, BURN, 7, (50.0, 2.5)),
    ("the unfinished burn-in's", None, None, BURN, 7, (10.0, 20 * (1 + 1.28 * 2 ** 0.5))),
    ("nothing learned: this check's queries, phi 1", None, None, BurnIn(), 7, (7.0, 1.0)),
    ("an empty check: m 1", None, None, BurnIn(), 0, (1.0, 1.0)),
]


@pytest.mark.parametrize("case, thr, cusum, burn, now, want", CARRY_CASES, ids=[c[0] for c in CARRY_CASES])
def test_carried_over(case, thr, cusum, burn, now, want):
    assert carried_over(thr, cusum, burn, now) == pytest.approx(want)


# (case, baseline, m, phi, expected burn-in)
ARM_CASES = [
    ("8 queries in checks of 4", [3, 5, 0], 4.0, 1.5, BurnIn("r", 8, 2, (3, 5, 0), phi=1.5)),
    ("checks rounded: 8 / 3 -> 3", [3, 5, 0], 3.0, 1.0, BurnIn("r", 8, 3, (3, 5, 0), phi=1.0)),
    ("at least one check; phi at least 1", [1, 0], 50.0, 0.4, BurnIn("r", 1, 1, (1, 0), phi=1.0)),
    ("weights rounded to whole queries", [2.4, 0.6], 1.0, 1.0, BurnIn("r", 3, 3, (2, 1), phi=1.0)),
    ("empty: none (a live burn-in)", [0, 0], 4.0, 1.0, None),
]


@pytest.mark.parametrize("case, baseline, m, phi, want", ARM_CASES, ids=[c[0] for c in ARM_CASES])
def test_armed_burn_in(case, baseline, m, phi, want):
    got = armed_burn_in("r", np.array(baseline, dtype=float), m, phi)
    assert got == want
    if got is not None:
        assert got.over_dispersion() == got.phi and BurnIn.from_dict(got.to_dict()) == got
