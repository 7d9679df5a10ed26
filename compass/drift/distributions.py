"""Cluster distributions compared by the drift trigger (paper §3.3.2).

P_ref (eq. 3) is built here; P_mon (eq. 4) is never materialised: ``js_divergence`` normalises the window counts.
Both are vectors over the same buckets: the K clusters of the codebook the adapter was trained with, plus
the noise bucket at index K when the clusterer has one. Comparing vectors of different lengths means the
codebook changed under the adapter, which is an error, not drift.
"""

from __future__ import annotations

import numpy as np

from compass.errors import CompassError


class DistributionError(CompassError, ValueError):
    """Counts that cannot form a distribution (negative, empty, mismatched buckets)."""


def _counts(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DistributionError(f"{name} must be a non-empty 1-D vector of counts; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DistributionError(f"{name} must hold finite counts >= 0; got {arr.tolist()}")
    return arr


def reference_distribution(n_eval: np.ndarray, n_aux_selected: np.ndarray) -> np.ndarray:
    """P_ref (eq. 3): cluster proportions of the last cycle's usage proxy plus the auxiliary rows it selected."""
    a, b = _counts("n_eval", n_eval), _counts("n_aux_selected", n_aux_selected)
    if a.shape != b.shape:
        raise DistributionError(f"n_eval has {a.size} buckets but n_aux_selected has {b.size}; they must match")
    total = a + b
    if total.sum() == 0:
        raise DistributionError("n_eval + n_aux_selected is all zeros; the cycle had no data to form P_ref")
    return total / total.sum()

