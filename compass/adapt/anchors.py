"""The distributional anchor buffer B_anchor (§3.3.3, App. D.3): "prototypical examples selected from the
centroids of high-density clusters of the previous reference distribution", |B_anchor| = 5% of the cycle's data.

Rule implemented here (the paper gives no finer recipe):
  1. budget m = round(fraction * n_total), at least 1 when there is data, at most the number of clustered rows;
  2. clusters are ranked by their P_ref mass, highest first ("high-density");
  3. m is split over the clusters in proportion to P_ref mass by largest remainder (remainder ties: higher mass,
     then lower cluster id), so with a small m only the densest clusters receive a share; a cluster's share is
     capped at its size and the overflow goes to the next clusters in rank order;
  4. within a cluster the rows nearest its centroid by cosine similarity are taken (ties: lower row index).
Rows labelled < 0 (noise, e.g. HDBSCAN) are never anchors. The result lists cluster by cluster in rank order,
nearest first.
"""

from __future__ import annotations

import numpy as np

from compass.adapt.config import bad_param

_OWNER = "select_anchors"


def anchor_budget(fraction: float, n_total: int, available: int) -> int:
    """round(fraction * n_total) (half to even, as Python's round), at least 1 when data exists, at most available."""
    if n_total <= 0 or available <= 0:
        return 0
    return int(min(available, max(1, round(fraction * n_total))))


def _allocate(budget: int, mass: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    k = len(mass)
    order = sorted(range(k), key=lambda c: (-mass[c], c))  # rank: mass desc, id asc
    quota = np.zeros(k, dtype=np.int64)
    total = mass.sum()
    if total > 0:
        exact = budget * mass / total
        quota = np.floor(exact).astype(np.int64)
        rem = budget - int(quota.sum())
        by_rem = sorted(range(k), key=lambda c: (-(exact[c] - quota[c]), -mass[c], c))
        for c in by_rem[:rem]:
            quota[c] += 1
    overflow = budget - int(np.minimum(quota, sizes).sum())
    quota = np.minimum(quota, sizes)
    for c in order:  # redistribute what did not fit (or everything, when all mass is 0) down the ranking
        if overflow <= 0:
            break
        add = min(overflow, int(sizes[c] - quota[c]))
        quota[c] += add
        overflow -= add
    return quota


def select_anchors(
    X: np.ndarray, labels: np.ndarray, centroids: np.ndarray, p_ref: np.ndarray, fraction: float, n_total: int
) -> np.ndarray:
    """Row indices of ``X`` forming B_anchor. ``labels[i]`` is row i's cluster id (an index into ``centroids`` and
    ``p_ref``, the previous reference distribution's cluster masses), negative for noise."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    centroids = np.asarray(centroids, dtype=np.float64)
    p_ref = np.asarray(p_ref, dtype=np.float64)
    if X.ndim != 2:
        raise bad_param("X", _OWNER, "a 2-D (rows, dim) embedding matrix", X.shape)
    if labels.shape != (X.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise bad_param("labels", _OWNER, f"an int vector of length {X.shape[0]}", labels.shape)
    if centroids.ndim != 2 or centroids.shape[1] != X.shape[1]:
        raise bad_param("centroids", _OWNER, f"a (k, {X.shape[1]}) matrix", centroids.shape)
    k = centroids.shape[0]
    if p_ref.shape != (k,) or not np.all(np.isfinite(p_ref)) or np.any(p_ref < 0):
        raise bad_param("p_ref", _OWNER, f"{k} finite non-negative cluster masses (one per centroid)", p_ref.shape)
    if labels.size and labels.max() >= k:
        raise bad_param("labels", _OWNER, f"cluster ids < {k} (the number of centroids)", int(labels.max()))
    if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise bad_param("fraction", _OWNER, "a float in (0, 1] (App. D.3 uses 0.05)", fraction)
    if not isinstance(n_total, int | np.integer) or n_total < 0:
        raise bad_param("n_total", _OWNER, "an int >= 0 (the size of this cycle's data)", n_total)
    clustered = labels >= 0
    budget = anchor_budget(fraction, int(n_total), int(clustered.sum()))
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.bincount(labels[clustered], minlength=k)
    quota = _allocate(budget, p_ref, sizes)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    Cn = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    out: list[np.ndarray] = []
    for c in sorted(range(k), key=lambda c: (-p_ref[c], c)):
        if quota[c] == 0:
            continue
        rows = np.flatnonzero(labels == c)
        sim = Xn[rows] @ Cn[c]
        nearest = np.lexsort((rows, -sim))[: quota[c]]  # similarity desc, then row index asc
        out.append(rows[nearest])
    return np.concatenate(out).astype(np.int64)
