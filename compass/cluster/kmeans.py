"""Spherical k-means on FAISS with K chosen by cosine silhouette (paper §3.2.1, App. E), plus eq. 2 updates (§3.3.1).

App. E: K from 10 to 120 in steps of 5, k-means++ initialisation with 10 seeds per K, K maximising the
silhouette. Here ``n_init`` defaults to 3 (configurable) to keep the search affordable. Seeding is D² sampling
on cosine distance with a seeded numpy Generator; the seeds are handed to faiss as initial centroids, and faiss
runs Lloyd iterations with inner-product assignment and renormalised centroids (``spherical=True``).

Tractability: the K search fits on at most ``search_max_samples`` rows and scores the silhouette on at most
``silhouette_sample`` of them (one cosine distance matrix reused for every K); the chosen K is then refitted on
at most ``max_fit_samples`` rows; all rows get the label of their nearest centroid. So ``labels_`` and
``predict`` agree exactly on the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from compass.cluster import ksearch
from compass.cluster.base import (
    BaseClusterer,
    check_int,
    check_X,
    compact_labels,
    cosine_silhouette,
    fit_sample,
    param_error,
    silhouette_precomputed,
)
from compass.cluster.errors import ClusterInputError, ClusterParamError
from compass.cluster.nearest import nearest_centroid
from compass.params import check_real

OWNER = "KMeansClusterer"


@dataclass
class KMeansConfig:
    n_clusters: int | None = ksearch.n_clusters_field()
    k_range: tuple[int, ...] = ksearch.k_range_field(
        "Candidate K values for the silhouette search (App. E: 10..120 step 5); clipped to n."
    )
    n_init: int = field(default=3, metadata={"help": "k-means++ seeds per K; the lowest cosine inertia is kept."})
    max_iter: int = field(default=25, metadata={"help": "Lloyd iterations per run (faiss niter)."})
    silhouette_sample: int = ksearch.silhouette_sample_field()
    search_max_samples: int = field(default=20_000, metadata={"help": "Rows the K search fits on (bounded)."})
    max_fit_samples: int = field(default=100_000, metadata={"help": "Rows the final fit uses; the rest are assigned."})
    seed: int = field(default=0, metadata={"help": "Seed of every random choice (samples, k-means++, faiss)."})

    def __post_init__(self) -> None:
        ksearch.check_k(self, OWNER)
        check_int("n_init", OWNER, self.n_init, 1)
        check_int("max_iter", OWNER, self.max_iter, 1)
        check_int("silhouette_sample", OWNER, self.silhouette_sample, 3)
        check_int("search_max_samples", OWNER, self.search_max_samples, 3)
        check_int("max_fit_samples", OWNER, self.max_fit_samples, 1)
        check_int("seed", OWNER, self.seed, 0)
        ksearch.check_k_fits(self, OWNER)
        if self.n_clusters is None and min(self.k_range) >= min(self.silhouette_sample, self.search_max_samples):
            raise param_error(
                "k_range", OWNER, "below silhouette_sample and search_max_samples (the silhouette needs K < rows)",
                self.k_range,
            )


def kmeanspp_init(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii 2007): D² sampling where D is the cosine distance 1 - x·c."""
    n = X.shape[0]
    C = np.empty((k, X.shape[1]), dtype=np.float32)
    i = int(rng.integers(n))
    C[0] = X[i]
    dist = np.clip(1.0 - X @ C[0], 0.0, None)
    for j in range(1, k):
        w = np.square(dist, dtype=np.float64)
        cum = np.cumsum(w)
        # All remaining rows duplicate a seed: any row is as good, so fall back to uniform.
        i = int(rng.integers(n)) if cum[-1] <= 0 else int(min(np.searchsorted(cum, rng.random() * cum[-1]), n - 1))
        C[j] = X[i]
        np.minimum(dist, np.clip(1.0 - X @ C[j], 0.0, None), out=dist)
    return C


def spherical_kmeans(X: np.ndarray, k: int, n_init: int, max_iter: int, rng: np.random.Generator) -> np.ndarray:
    """The (k, d) centroids of the best of ``n_init`` seeded runs (lowest cosine inertia Σ 1 - max_k x·μ_k)."""
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        init = kmeanspp_init(X, k, rng)
        km = faiss.Kmeans(
            X.shape[1], k, niter=max_iter, spherical=True, seed=int(rng.integers(2**31 - 1)), verbose=False,
            # We already bound the rows; stop faiss from subsampling (256/centroid) or warning on small clusters.
            min_points_per_centroid=1, max_points_per_centroid=max(1, X.shape[0]),
        )
        km.train(X, init_centroids=init)
        C = np.ascontiguousarray(km.centroids, dtype=np.float32)
        inertia = float(np.sum(1.0 - nearest_centroid(X, C)[1], dtype=np.float64))
        if inertia < best_inertia:
            best, best_inertia = C, inertia
    assert best is not None
    return best


class KMeansClusterer(ksearch.KSearchState, BaseClusterer):
    """Spherical k-means (cosine); K fixed or chosen by silhouette. See the module docstring."""

    name = "kmeans"
    config_class = KMeansConfig

    def _fit(self, X: np.ndarray) -> None:
        cfg = self.config
        rng, idx, Xf = self._fit_rows(X)
        self.silhouette_scores_: dict[int, float] = {}
        if cfg.n_clusters is not None:
            if cfg.n_clusters > Xf.shape[0]:
                raise ClusterInputError(
                    f"{OWNER}.fit: n_clusters={cfg.n_clusters} but X has only {Xf.shape[0]} rows; "
                    "pass more rows or a smaller n_clusters."
                )
            C = spherical_kmeans(Xf, cfg.n_clusters, cfg.n_init, cfg.max_iter, rng)
            self.chosen_k_ = cfg.n_clusters
        else:
            C = self._search(Xf, rng)
        labels, _ = nearest_centroid(X, C)
        # faiss refills empty clusters, but a centroid can still end up nearest to no row: drop it.
        self.labels_, self.n_clusters_ = compact_labels(labels)
        self.centroids_ = np.ascontiguousarray(C[np.unique(labels)], dtype=np.float32)

    def _search(self, Xf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        sidx = fit_sample(Xf.shape[0], cfg.search_max_samples, rng)
        Xs = Xf if sidx is None else Xf[sidx]
        tidx = fit_sample(Xs.shape[0], cfg.silhouette_sample, rng)
        Xt = Xs if tidx is None else Xs[tidx]
        ks = [k for k in cfg.k_range if k < Xt.shape[0]]
        if not ks:
            raise ClusterInputError(
                f"{OWNER}.fit: no K in k_range {list(cfg.k_range)} is below the {Xt.shape[0]} rows the silhouette "
                "is scored on; pass more rows, a k_range with smaller values, or a fixed n_clusters."
            )
        D = cosine_silhouette(Xt)
        best_k, best_score, best_C = -1, -np.inf, None
        for k in ks:
            C = spherical_kmeans(Xs, k, cfg.n_init, cfg.max_iter, rng)
            score = silhouette_precomputed(D, nearest_centroid(Xt, C)[0])
            self.silhouette_scores_[k] = score
            if score > best_score:  # strict: ties keep the smaller K
                best_k, best_score, best_C = k, score, C
        self.chosen_k_ = best_k
        if sidx is None:
            return best_C
        return spherical_kmeans(Xf, best_k, cfg.n_init, cfg.max_iter, rng)

    def update(self, X_batch: np.ndarray, eta: float) -> np.ndarray:
        """Eq. 2 (§3.3.1): μ_k ← (1-η) μ_k + η·mean(X_k^new), renormalised, for clusters that received rows.

        X_k^new are the batch rows whose nearest centroid is k (before the update). Clusters without new rows
        are unchanged; ``labels_`` (of the fit rows) is left as is. Returns the batch's labels (int64).
        """
        self._check_fitted("update")
        X = check_X(X_batch, f"{OWNER}.update", dim=self.dim_, what="X_batch")
        eta = check_real("eta", f"{OWNER}.update", eta, gt=0.0, le=1.0, error=ClusterParamError)
        labels, _ = nearest_centroid(X, self.centroids_)
        K = self.n_clusters_
        counts = np.bincount(labels, minlength=K)
        sums = np.zeros((K, X.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, X.astype(np.float64))
        hit = counts > 0
        mu = self.centroids_.astype(np.float64)
        new = (1.0 - eta) * mu[hit] + eta * (sums[hit] / counts[hit, None])
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        # A batch mean exactly opposite μ_k with η = 0.5 cancels to zero: keep the old direction then.
        new = np.where(norms > 0, new / np.where(norms > 0, norms, 1.0), mu[hit])
        mu[hit] = new
        self.centroids_ = mu.astype(np.float32)
        return labels


__all__ = ["KMeansClusterer", "KMeansConfig", "kmeanspp_init", "spherical_kmeans"]
