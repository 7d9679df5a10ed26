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

Reallocation (``reallocate``): the paper leaves open what happens when a cluster cannot fill q_k even with
replacement (§3.2.3: "requiring further modifications to enforce sum_k |S_k| = B |D_t|"); we move the unfilled
remainder to other clusters. A cluster's sampler delivers min(q_k, max_repeats * n_aux^k) (sampler.py), so the
plan needs only counts and is made before any sampling; each cluster is then sampled once with its final quota,
which keeps alpha_k of eq. 1 running from 0 to 1 over what the cluster really delivers. The remainder R goes, in
rounds, to the receivers that still have room, split by their w~_k with the same exact-total rounding as above
(largest remainder for COMPASS-D, systematic sampling for COMPASS-S), each share capped at the room; what the
caps refuse goes round again. Fresh rows come first (room n_aux^k - selected_k), repeats only once no receiver
has a fresh row left (room max_repeats * n_aux^k - selected_k, the paper's 0.5^n decay then applies). Only
clusters with w_k > 0 receive, so a cluster with n_eval^k = 0 still gets nothing. If no receiver has room, |S|
stays below N and the caller reports the gap.
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


def deliverable(quotas: np.ndarray, n_aux: np.ndarray, max_repeats: int) -> np.ndarray:
    """What ``sample_cluster`` delivers for each quota: q_k, or max_repeats * n_aux^k when that is less."""
    return np.minimum(np.asarray(quotas, np.int64), max_repeats * np.asarray(n_aux, np.int64))


def reallocate(
    quotas: np.ndarray,
    weights: np.ndarray,
    n_aux: np.ndarray,
    max_repeats: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Final quotas after moving what clusters cannot deliver to those with room (see the module doc).

    ``weights``: w~_k of the receivers (0 = never receives); ``rng`` None rounds deterministically (COMPASS-D),
    otherwise stochastically (COMPASS-S). sum(result) = sum(quotas) unless every receiver is full.
    """
    quotas, n_aux = np.asarray(quotas, np.int64), np.asarray(n_aux, np.int64)
    w = np.asarray(weights, np.float64)
    if not quotas.shape == n_aux.shape == w.shape:
        raise bad_param("weights", "reallocate", f"arrays of one shape like quotas {quotas.shape}", w.shape)
    final = deliverable(quotas, n_aux, max_repeats)
    rest = int(quotas.sum() - final.sum())
    for limit in (n_aux, max_repeats * n_aux):  # fresh rows first, then repeats
        rest = _spread(final, rest, w, limit, rng)
    return final


def _spread(final: np.ndarray, rest: int, w: np.ndarray, limit: np.ndarray, rng: np.random.Generator | None) -> int:
    """Add up to ``rest`` units to ``final`` in place, never beyond ``limit``; returns what is left."""
    while rest > 0:
        room = np.where(w > 0, np.maximum(limit - final, 0), 0)
        if not room.any():
            break
        eligible = np.where(room > 0, w, 0.0)
        share = deterministic_quotas(eligible, rest) if rng is None else stochastic_quotas(eligible, rest, rng)
        give = np.minimum(share, room)  # a capped receiver is full: the next round splits its excess among the rest
        final += give
        rest -= int(give.sum())
    return rest
