"""Nearest centroid in cosine geometry: the one assignment rule of every clusterer, codebook and simulator.

Centroids are unit-norm mean directions (``compass.cluster.base``), so the nearest centroid of a unit-norm row is
the one of largest inner product, searched exactly with a faiss flat index. ``NOISE`` lives here, the lowest
module of the package, because an empty codebook assigns every row to it.
"""

from __future__ import annotations

import faiss
import numpy as np

NOISE = -1


def nearest_centroid(X: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, cosine similarity float32) of each row's nearest centroid, by exact inner product (faiss).

    ``X`` must be float32 (n, d) with unit-norm rows (``compass.cluster.base.check_X``). Without centroids every
    row is ``NOISE`` at similarity -inf.
    """
    n = X.shape[0]
    if centroids.shape[0] == 0:
        return np.full(n, NOISE, dtype=np.int64), np.full(n, -np.inf, dtype=np.float32)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    for s in range(0, n, batch):
        D, Idx = index.search(X[s : s + batch], 1)
        labels[s : s + batch] = Idx[:, 0]
        sims[s : s + batch] = D[:, 0]
    return labels, sims


def unit_rows(X: np.ndarray) -> np.ndarray:
    """``X`` as C-contiguous float32 rows of unit L2 norm (scaled in float64; an all-zero row stays zero)."""
    x = np.asarray(X, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def nearest_cosine_distances(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``1 - max_k cos(x, c_k)`` (float64, in [0, 2]) of each row of ``X``, whatever the norms of the rows and
    centroids (a zero row is at distance 1); inf for every row when there are no centroids. Shapes must agree."""
    C = np.asarray(centroids)
    if len(C) == 0:
        return np.full(len(X), np.inf)
    _, sims = nearest_centroid(unit_rows(X), unit_rows(C))
    # Round-off can put a row equal to a centroid just below 0.
    return np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
