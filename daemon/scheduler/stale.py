"""Stale clusters (paper §6.1): traffic the codebook no longer describes, measured per language.

Two shares of the window, each compared with its configured level (``daemon.stale_noise_share``,
``daemon.stale_far_share``):

- noise share: the window's noise-bucket count / window size (the last bucket is noise, infra/window.py);
- far share: the share of recent points farther from every centroid than a calibrated distance, the
  ``stale_distance_quantile`` quantile of the training points' distances to their nearest centroid. The service
  measures it in cosine distance (``infra.codebook``: the quantiles are recorded in the codebook's manifest
  when it is published, ``scheduler.farshare.RecentFarShare`` applies them); the Euclidean helpers below compute the
  same on arbitrary vectors.

Either past its level means re-clustering, not an adapter update: an adapter trained on clusters that no
longer cover the traffic cannot be fixed by reweighting them.
"""

from __future__ import annotations

import numpy as np

from compass.drift.stale import StaleReading, assess  # the rule itself is pure, in compass/


def noise_share(counts: np.ndarray) -> float | None:
    """Share of the window in the noise bucket (the last one); None for an empty window."""
    counts = np.asarray(counts)
    total = int(counts.sum())
    return None if total == 0 else float(counts[-1]) / total


def nearest_distances(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of X to its nearest centroid."""
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(centroids, dtype=np.float64)
    sq = (X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0))  # clamp round-off below 0


def calibrated_distance(train_X: np.ndarray, centroids: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of training points' nearest-centroid distances: beyond it a point is 'far'."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile: got {quantile!r}; must be in (0, 1) (daemon.stale_distance_quantile)")
    return float(np.quantile(nearest_distances(train_X, centroids), quantile))


def far_share(X: np.ndarray, centroids: np.ndarray, radius: float) -> float | None:
    """Share of rows of X strictly farther than ``radius`` from every centroid; None for no rows."""
    if len(X) == 0:
        return None
    return float(np.mean(nearest_distances(X, centroids) > radius))


def share_beyond(distances: np.ndarray, radius: float) -> float | None:
    """Share of ``distances`` strictly greater than ``radius`` (any metric); None for none."""
    distances = np.asarray(distances)
    return None if len(distances) == 0 else float(np.mean(distances > radius))


__all__ = ["StaleReading", "assess", "calibrated_distance", "far_share", "nearest_distances", "noise_share",
           "share_beyond"]
