"""Per-cluster quotas q_k from the normalised weights (§3.2.3).

The paper's formula q_k = (floor(w~_k) + r~_k) * B * |D_t| is garbled (floor(w~_k) is 0 for every k < 1).
What it means: N = round(B * |D_t|) items split as w~_k * N, each share rounded down or up at random so
that E[q_k] = w~_k * N. Here:

* total: N = floor(B * |D_t| + 0.5) (round half up, not Python's round-half-even);
* stochastic (COMPASS-S): q_k = floor(w~_k N) + 1 for exactly R = N - sum floor(w~_k N) buckets, chosen by
  systematic sampling over the fractional parts f_k (in a seeded random order): one uniform u, points
  u, u+1, ..., u+R-1 on the cumulated f_k. Since every f_k < 1 a bucket is hit at most once, and its
  inclusion probability is exactly f_k, so E[q_k] = w~_k N and sum q_k = N always;
* deterministic (COMPASS-D): largest remainder; ties broken by lower bucket index.

Either way floor(w~_k N) <= q_k <= ceil(w~_k N).
"""

from __future__ import annotations

import math

import numpy as np

from compass.select.config import bad_param


def total_budget(budget: float, n_train: int) -> int:
    """N = round(B * |D_t|), halves rounded up."""
    return int(math.floor(budget * n_train + 0.5))


def _parts(w_tilde: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, int]:
    w = np.asarray(w_tilde, dtype=np.float64)
    if w.ndim != 1 or (w < 0).any() or not np.isfinite(w).all():
        raise bad_param("w_tilde", "quotas", "a 1-d array of finite weights >= 0", w_tilde)
    if not isinstance(total, int | np.integer) or total < 0:
        raise bad_param("total", "quotas", "an int >= 0", total)
    s = w.sum()
    if s == 0:
        return np.zeros(len(w), np.int64), np.zeros(len(w)), 0
    exact = w / s * total  # renormalise: tolerate weights that sum to 1 only up to float error
    base = np.floor(exact).astype(np.int64)
    frac = np.clip(exact - base, 0.0, 1.0)
    return base, frac, int(total - base.sum())


def stochastic_quotas(w_tilde: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """COMPASS-S quotas: unbiased (E[q_k] = w~_k N), sum exactly ``total`` (see module doc)."""
    base, frac, rest = _parts(w_tilde, total)
    if rest == 0:
        return base
    order = rng.permutation(len(frac))  # a random order decorrelates neighbouring buckets
    f = frac[order] * (rest / frac.sum())  # fractional parts sum to `rest` up to float error; make it exact
    cum = np.cumsum(f)
    cum[-1] = rest
    points = rng.random() + np.arange(rest)
    hit = np.searchsorted(cum, points, side="right")
    extra = np.zeros(len(frac), np.int64)
    np.add.at(extra, order[np.minimum(hit, len(frac) - 1)], 1)
    return base + extra


def deterministic_quotas(w_tilde: np.ndarray, total: int) -> np.ndarray:
    """COMPASS-D quotas: largest remainder, ties to the lower bucket index; sum exactly ``total``."""
    base, frac, rest = _parts(w_tilde, total)
    if rest == 0:
        return base
    order = np.lexsort((np.arange(len(frac)), -frac))  # by remainder desc, then index asc
    base[order[:rest]] += 1
    return base
