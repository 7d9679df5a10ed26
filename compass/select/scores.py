"""Instance scores of §3.2.3: s_proto, s_boundary and their alpha-schedule mix (eq. 1).

dist(a, b) = 1 - a·b (cosine distance; rows and centroids are L2-normalised).

Boundary orientation: the paper's margin m(x) = min_{j != k} dist(x, mu_j) - dist(x, mu_k) is *large* far
from the decision boundary, yet the text says s_boundary "favours examples near decision boundaries" and the
alpha curriculum goes from prototypical to boundary cases. By default (``SelectionConfig.boundary = "near"``)
we follow the text: s_boundary = 1 - minmax(m) within the cluster, so the row closest to another centroid
scores 1 and the most central-by-margin scores 0. ``boundary = "margin"`` takes the formula literally:
s_boundary = minmax(m), so the row farthest from every other centroid scores 1.
A cluster whose margins are all equal (one candidate, or K = 1 so there is no other centroid) gets 0.5:
no row is more ambiguous than another.

Noise rows (label -1) have no centroid of their own; they are scored against their nearest centroid.
"""

from __future__ import annotations

import numpy as np

from compass.select.config import BOUNDARY_MODES, bad_param
from compass.select.mismatch import NOISE

NEUTRAL_BOUNDARY = 0.5


def centroid_distances(
    X: np.ndarray, labels: np.ndarray, centroids: np.ndarray, chunk: int = 32768, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(d_own, d_other): distance to the row's own centroid and to the nearest other one, float64 (n,).

    Chunked X @ centroids.T, so memory is O(chunk * K). d_other is nan when K < 2. For NOISE rows the
    nearest centroid stands in for the own one. With K = 0 both are nan. ``rows``: score only X[rows]
    (labels then align with rows), without copying X[rows] whole.
    """
    n, k = (len(X) if rows is None else len(rows)), len(centroids)
    d_own = np.full(n, np.nan)
    d_other = np.full(n, np.nan)
    if k == 0 or n == 0:
        return d_own, d_other
    C = np.ascontiguousarray(centroids, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    for lo in range(0, n, chunk):
        part = X[lo : lo + chunk] if rows is None else X[rows[lo : lo + chunk]]
        sims = np.asarray(part, dtype=np.float32) @ C.T  # (c, K)
        lab = labels[lo : lo + chunk]
        at = np.arange(len(lab))
        own = np.where(lab == NOISE, sims.argmax(axis=1), lab)
        d_own[lo : lo + len(lab)] = 1.0 - sims[at, own].astype(np.float64)
        if k > 1:
            sims[at, own] = -np.inf  # best of the others = the top-2 search with the own column masked
            d_other[lo : lo + len(lab)] = 1.0 - sims.max(axis=1).astype(np.float64)
    return d_own, d_other


def proto_scores(d_own: np.ndarray) -> np.ndarray:
    """s_proto = 1 / (1 + dist(x, mu_k)) (§3.2.3), in [1/3, 1]; 1.0 where there is no centroid (nan)."""
    s = 1.0 / (1.0 + np.asarray(d_own, dtype=np.float64))
    return np.where(np.isnan(s), 1.0, s)


def boundary_scores(d_own: np.ndarray, d_other: np.ndarray, groups: np.ndarray, boundary: str = "near") -> np.ndarray:
    """s_boundary (§3.2.3): the margin d_other - d_own, min-max normalised within each group; ``boundary``
    "near" inverts it so rows near a decision boundary score 1, "margin" does not (see the module doc).
    Constant or undefined groups -> 0.5."""
    if boundary not in BOUNDARY_MODES:
        raise bad_param("boundary", "boundary_scores", f"one of {', '.join(BOUNDARY_MODES)}", boundary)
    margin = np.asarray(d_other, dtype=np.float64) - np.asarray(d_own, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    out = np.full(len(margin), NEUTRAL_BOUNDARY)
    if len(margin) == 0:
        return out
    size = int(groups.max()) + 1
    m = np.where(np.isnan(margin), np.inf, margin)
    lo = np.full(size, np.inf)
    np.minimum.at(lo, groups, m)
    m = np.where(np.isnan(margin), -np.inf, margin)
    hi = np.full(size, -np.inf)
    np.maximum.at(hi, groups, m)
    span = (hi - lo)[groups]
    ok = np.isfinite(span) & (span > 0) & ~np.isnan(margin)
    scaled = (margin[ok] - lo[groups][ok]) / span[ok]
    out[ok] = 1.0 - scaled if boundary == "near" else scaled
    return out


def alpha(sampled: int, quota: int) -> float:
    """alpha_k = min(1, sampled_count_k / target_quota_k) (§3.2.3); 1 for an empty quota."""
    return 1.0 if quota <= 0 else min(1.0, sampled / quota)


def mix(s_proto: np.ndarray, s_boundary: np.ndarray, a: float) -> np.ndarray:
    """eq. 1: s = (1 - alpha^2) s_proto + alpha^2 s_boundary."""
    a2 = a * a
    return (1.0 - a2) * s_proto + a2 * s_boundary
