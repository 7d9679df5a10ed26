"""Distribution mismatch and cluster weights (§3.1.1, §3.2.2).

Buckets: clusters 0..K-1 plus a noise bucket at index K for rows labelled NOISE (-1, e.g. HDBSCAN
outliers), so every array here has length K + 1. The noise bucket counts like any region in the
distributions but gets weight 0 unless ``sample_noise`` (its rows share no centroid or topic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compass.select.config import bad_param

NOISE = -1


@dataclass(frozen=True)
class ClusterStats:
    """Per-bucket counts and weights; index K is the noise bucket."""

    n_t: np.ndarray  # int64 (K+1,) D_t rows per bucket (n_t^k)
    n_eval: np.ndarray  # int64 (K+1,) E_t rows per bucket (n_eval^k)
    n_aux: np.ndarray  # int64 (K+1,) D_aux rows per bucket (n_aux^k)
    p_train: np.ndarray  # float64 (K+1,) n_t^k / sum n_t
    p_eval: np.ndarray  # float64 (K+1,) n_eval^k / sum n_eval
    rho: np.ndarray  # float64 (K+1,) p_eval / p_train; inf where p_train = 0 < p_eval, nan where both are 0
    w: np.ndarray  # float64 (K+1,) n_eval^k / (n_t^k + eps), 0 where n_eval^k = 0 (and for noise by default)
    w_tilde: np.ndarray  # float64 (K+1,) w / sum w over clusters with pool candidates (all 0 when that sum is 0)
    eps: float
    sample_noise: bool

    @property
    def n_clusters(self) -> int:
        return len(self.n_t) - 1


def buckets(labels: np.ndarray, n_clusters: int, name: str = "labels") -> np.ndarray:
    """Map labels in [0, K) ∪ {NOISE} to bucket indices in [0, K]; NOISE -> K."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        got = f"array of dtype {labels.dtype}, ndim {labels.ndim}"
        raise bad_param(name, "cluster_stats", "a 1-d integer array", got)
    labels = labels.astype(np.int64, copy=False)
    bad = (labels < NOISE) | (labels >= n_clusters)
    if bad.any():
        raise bad_param(name, "cluster_stats", f"labels in [0, {n_clusters}) or {NOISE} (noise)", int(labels[bad][0]))
    return np.where(labels == NOISE, n_clusters, labels)


def _share(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts))


def cluster_stats(
    labels_t: np.ndarray,
    labels_eval: np.ndarray,
    labels_aux: np.ndarray,
    n_clusters: int,
    eps: float = 1.0,
    sample_noise: bool = False,
) -> ClusterStats:
    """Counts, mismatch ratios and cluster weights of §3.1.1 / §3.2.2 over K clusters + the noise bucket."""
    if not isinstance(n_clusters, int | np.integer) or n_clusters < 0:
        raise bad_param("n_clusters", "cluster_stats", "an int >= 0", n_clusters)
    if not eps > 0:
        raise bad_param("eps", "cluster_stats", "a float > 0", eps)
    size = int(n_clusters) + 1
    n_t = np.bincount(buckets(labels_t, n_clusters, "labels_t"), minlength=size).astype(np.int64)
    n_eval = np.bincount(buckets(labels_eval, n_clusters, "labels_eval"), minlength=size).astype(np.int64)
    n_aux = np.bincount(buckets(labels_aux, n_clusters, "labels_aux"), minlength=size).astype(np.int64)
    # §3.1.1: the paper divides P_eval by sum n_t (a typo); each distribution is normalised by its own total.
    p_train, p_eval = _share(n_t), _share(n_eval)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = p_eval / p_train  # x/0 -> inf (a hole in D_t), 0/0 -> nan (a region neither set visits)
    # §3.2.2: w_k = n_eval^k / (n_t^k + eps) where n_eval^k > 0, else 0.
    w = np.where(n_eval > 0, n_eval / (n_t + float(eps)), 0.0)
    if not sample_noise:
        w[n_clusters] = 0.0
    # w~_k normalises over the clusters the pool can serve: a cluster without auxiliary candidates cannot take a
    # quota, and leaving it in would lose its share so |S| fell short of round(B |D_t|). w_k stays eq.-exact.
    servable = np.where(n_aux > 0, w, 0.0)
    total = servable.sum()
    w_tilde = servable / total if total > 0 else np.zeros(size)
    return ClusterStats(n_t, n_eval, n_aux, p_train, p_eval, rho, w, w_tilde, float(eps), bool(sample_noise))
