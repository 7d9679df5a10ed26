"""Ward agglomerative clustering for the ablation (paper §3.2.1, App. E).

App. E: Ward linkage builds the tree, ``fcluster`` cuts it at an optimised number of clusters, and the cluster
centres (member means) allocate assignments. Rows are L2-normalised, so Ward's Euclidean geometry is the chordal
distance sqrt(2 - 2 cos), monotone with cosine (App. E: "for cosine similarity, we normalize embeddings").

Ward needs the O(n²) condensed distance matrix, so it runs on at most ``max_fit_samples`` seeded rows (default
5000, ~100 MB). K is fixed or chosen by cosine silhouette of the cut over ``k_range``. The fitted rows keep their
cut label; every other row, and ``predict``, takes the nearest centroid (normalised member mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from compass.cluster import ksearch
from compass.cluster.base import (
    BaseClusterer,
    check_int,
    compact_labels,
    cosine_silhouette,
    fit_sample,
    normalised_means,
    silhouette_precomputed,
)
from compass.cluster.errors import ClusterInputError
from compass.cluster.nearest import nearest_centroid

OWNER = "AgglomerativeClusterer"


@dataclass
class AgglomerativeConfig:
    n_clusters: int | None = ksearch.n_clusters_field()
    k_range: tuple[int, ...] = ksearch.k_range_field("Candidate K values for the dendrogram cut.")
    max_fit_samples: int = field(default=5000, metadata={"help": "Rows Ward runs on (O(n²) memory); rest assigned."})
    silhouette_sample: int = ksearch.silhouette_sample_field()
    seed: int = field(default=0, metadata={"help": "Seed of the row samples."})

    def __post_init__(self) -> None:
        ksearch.check_k(self, OWNER)
        check_int("max_fit_samples", OWNER, self.max_fit_samples, 2)
        check_int("silhouette_sample", OWNER, self.silhouette_sample, 3)
        check_int("seed", OWNER, self.seed, 0)
        ksearch.check_k_fits(self, OWNER)


class AgglomerativeClusterer(ksearch.KSearchState, BaseClusterer):
    """Ward linkage + fcluster cut (fixed K or silhouette); nearest-centroid assignment beyond the fit rows."""

    name = "agglomerative"
    config_class = AgglomerativeConfig

    def _fit(self, X: np.ndarray) -> None:
        cfg = self.config
        rng, idx, Xf = self._fit_rows(X)
        if Xf.shape[0] < 2:
            raise ClusterInputError(f"{OWNER}.fit: Ward needs at least 2 rows; got {Xf.shape[0]}.")
        Z = linkage(Xf.astype(np.float64), method="ward")
        self.silhouette_scores_: dict[int, float] = {}
        if cfg.n_clusters is not None:
            cut = fcluster(Z, cfg.n_clusters, criterion="maxclust")
            self.chosen_k_ = cfg.n_clusters
        else:
            tidx = fit_sample(Xf.shape[0], cfg.silhouette_sample, rng)
            ks = [k for k in cfg.k_range if k < (Xf.shape[0] if tidx is None else tidx.size)]
            if not ks:
                raise ClusterInputError(
                    f"{OWNER}.fit: no K in k_range {list(cfg.k_range)} is below the {Xf.shape[0]} rows fitted; "
                    "pass more rows, a k_range with smaller values, or a fixed n_clusters."
                )
            D = cosine_silhouette(Xf if tidx is None else Xf[tidx])
            best_score, cut = -np.inf, None
            for k in ks:
                c = fcluster(Z, k, criterion="maxclust")
                score = silhouette_precomputed(D, c if tidx is None else c[tidx])
                self.silhouette_scores_[k] = score
                if score > best_score:  # strict: ties keep the smaller K
                    best_score, cut = score, c
                    self.chosen_k_ = k
        fit_labels, K = compact_labels(np.asarray(cut, dtype=np.int64) - 1)
        self.centroids_ = normalised_means(Xf, fit_labels, K)
        self.n_clusters_ = K
        if idx is None:
            self.labels_ = fit_labels
        else:
            self.labels_ = nearest_centroid(X, self.centroids_)[0]
            self.labels_[idx] = fit_labels


__all__ = ["AgglomerativeClusterer", "AgglomerativeConfig"]
