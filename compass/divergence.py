"""Kullback-Leibler and Jensen-Shannon divergence of discrete (cluster) distributions, in bits.

JS is the paper's drift signal (eq. 5): JS(P || Q) = 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q) / 2.
With log base 2 it lies in [0, 1]: 0 for identical distributions, exactly 1 for disjoint supports.

Inputs may be counts or probabilities; each vector is normalised by its own sum. Zero entries follow the
convention 0 * log(0 / q) = 0, computed exactly by leaving those terms out (no epsilon smoothing).
Note: ``scipy.spatial.distance.jensenshannon`` returns the square root of JS (a distance), not JS.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from compass.errors import CompassError


class DivergenceError(CompassError, ValueError):
    """An input to a divergence is not a valid (unnormalised) distribution."""


def _distribution(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise DivergenceError(f"{name}: expected a 1-d vector of counts or probabilities; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DivergenceError(f"{name}: contains NaN or inf at index {int(np.flatnonzero(~np.isfinite(x))[0])}")
    if np.any(x < 0):
        i = int(np.flatnonzero(x < 0)[0])
        raise DivergenceError(f"{name}: entry {i} is {x[i]}; counts and probabilities must be >= 0")
    total = x.sum()
    if total <= 0:
        raise DivergenceError(f"{name}: sums to 0 (length {x.size}); a distribution needs at least one positive entry")
    return x / total


def _pair(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pp, qq = _distribution(p, "p"), _distribution(q, "q")
    if pp.shape != qq.shape:
        raise DivergenceError(f"p and q: lengths differ ({pp.size} vs {qq.size}); give both over the same bins")
    return pp, qq


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    support = p > 0  # 0 * log(0 / q) = 0
    if np.any(q[support] == 0):
        return float("inf")  # p puts mass where q has none
    return float(np.sum(p[support] * np.log2(p[support] / q[support])))


def kl_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """KL(p || q) in bits; ``inf`` when p has mass on a bin where q has none."""
    pp, qq = _pair(p, q)
    return _kl(pp, qq)


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """JS(p || q) in bits (eq. 5), in [0, 1]; symmetric; finite even with disjoint supports."""
    pp, qq = _pair(p, q)
    m = 0.5 * (pp + qq)
    js = 0.5 * _kl(pp, m) + 0.5 * _kl(qq, m)
    return float(min(1.0, max(0.0, js)))  # clamp float round-off (e.g. -1e-17 for identical inputs)
