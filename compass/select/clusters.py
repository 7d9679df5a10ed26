"""The clusters COMPASS selects with, fitted per target on D_t ∪ E_t ∪ D_aux (§3.1.1, §3.2.1, App. E).

§3.1.1 clusters "the combined set of embeddings of D_t ∪ D_aux ∪ E_t" of one target; ``fit_selection_clusters``
does exactly that (rows stacked as D_t, E_t, D_aux, in that order) and hands back the labels per part and the
centroids that ``compass.select.select(..., labels=...)`` takes. Model selection is App. E's by default:

  * kmeans: K in 10..120 step 5 by cosine silhouette, k-means++ with 10 seeds per K (``n_init=10``; the
    monitoring codebook keeps the clusterer's default 3 for speed, selection runs once per job and pays for 10);
  * hdbscan: min_cluster_size [5, 10, 15, 20] × min_samples [1, 5, 10] by DBCV (see compass/cluster/hdbscan_.py
    for which DBCV and the noise penalty);
  * agglomerative: Ward, K by silhouette over the same K grid; butina: App. E's adaptive threshold.

Bounds: every clusterer already searches and fits on a seeded sample (kmeans here: K search and silhouette on
5k rows, final fit on 50k, see SELECTION_DEFAULTS; the others on 5k) and assigns the remaining rows to the
nearest centroid (HDBSCAN: by ``approximate_predict``), so a 1M-row pool costs one assignment pass beyond the
bounded search (timings in benchmarks/results/selection/).

Small inputs never fail a job: a search grid is clipped to what the rows allow (K < rows the silhouette is scored
on; when App. E's K grid has no such K, K in 2..rows-1; HDBSCAN cells with min_cluster_size <= rows and
min_samples < rows, else the smallest cell that fits), fewer than 3 rows make one cluster, and a method that
finds no cluster at all (all noise) falls back to one cluster. ``summary["notes"]`` says what was done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compass.cluster import NOISE, make_clusterer
from compass.cluster.base import check_X, normalised_means
from compass.cluster.errors import ClusterInputError, ClusterParamError
from compass.cluster.factory import REGISTRY
from compass.select.config import SelectionError, bad_param

CLUSTERERS = ("kmeans", "hdbscan", "agglomerative", "butina")
OWNER = "ClusteringConfig"
PARTS = ("target", "window", "pool")

# Per-target overrides of the clusterers' own defaults (App. E); everything else is the clusterer's default.
# kmeans: App. E's 10 k-means++ seeds per K make the search 23 K x 10 = 230 runs, so it fits on the 5k rows the
# silhouette is scored on (the codebook's 20k would cost ~4x: ~1 s per run at K=120 on 12k rows, one core), and
# the chosen K is refitted on 50k rows (>= 400 rows per centroid for K <= 120) before every row is assigned.
SELECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "kmeans": {"n_init": 10, "search_max_samples": 5000, "max_fit_samples": 50_000},
    "hdbscan": {},
    "agglomerative": {},
    "butina": {},
}


@dataclass(frozen=True)
class ClusteringConfig:
    """Which clusterer fits the selection clusters, with overrides of its config (e.g. {"n_clusters": 20})."""

    clusterer: str = field(default="kmeans", metadata={"help": f"One of {CLUSTERERS}."})
    params: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "Overrides of that clusterer's config (compass/cluster/*.py)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random choice of the fit."})

    def __post_init__(self) -> None:
        if self.clusterer not in CLUSTERERS:
            raise bad_param("clusterer", OWNER, f"one of {', '.join(CLUSTERERS)}", self.clusterer)
        if not isinstance(self.params, Mapping):
            raise bad_param("params", OWNER, 'a mapping of clusterer parameters, e.g. {"n_clusters": 20}',
                            self.params)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise bad_param("seed", OWNER, "an int >= 0", self.seed)
        config_class = REGISTRY[self.clusterer].config_class
        valid = sorted(f.name for f in dataclasses.fields(config_class) if f.name != "seed")
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise bad_param("params", OWNER, f"keys among the {self.clusterer} parameters {valid}", unknown)
        object.__setattr__(self, "params", dict(self.params))  # a copy: the caller's dict may change later
        try:  # the values, checked now by the clusterer's own config (its message names the field and the fix)
            config_class(**{**SELECTION_DEFAULTS[self.clusterer], **self.params, "seed": int(self.seed)})
        except ClusterParamError as e:
            raise SelectionError(f"{OWNER}.params: {e}") from None


@dataclass
class SelectionClusters:
    """Labels of D_t, E_t and D_aux (-1 = noise), the (K, d) unit centroids, and what the fit did (JSON-able)."""

    target: np.ndarray
    window: np.ndarray
    pool: np.ndarray
    centroids: np.ndarray
    summary: dict[str, Any]

    @property
    def labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train, eval, pool labels, centroids): the ``labels`` argument of ``compass.select.select``."""
        return self.target, self.window, self.pool, self.centroids


def _rows(X: Any, name: str) -> np.ndarray:
    """``X`` as float32 (n, d); an empty part may come as (0, d), (0, 0) or (0,)."""
    arr = np.asarray(X)
    if arr.size == 0 and arr.ndim in (1, 2) and arr.shape[0] == 0:
        return np.zeros((0, arr.shape[1] if arr.ndim == 2 else 0), np.float32)
    return check_X(arr, "fit_selection_clusters", what=name)


def _dim(parts: dict[str, np.ndarray]) -> int:
    dims = {name: X.shape[1] for name, X in parts.items() if X.shape[0]}
    if len(set(dims.values())) > 1:
        raise ClusterInputError(
            f"fit_selection_clusters: the parts have different dimensions {dims}; embed D_t, E_t and D_aux "
            "with the same model."
        )
    return next(iter(dims.values()), max(X.shape[1] for X in parts.values()))


def _fit_params(name: str, params: dict[str, Any], n: int, notes: list[str]) -> dict[str, Any]:
    """``params`` with the search grid clipped to what n rows allow (App. E's grids assume hundreds of rows)."""
    cfg = REGISTRY[name].config_class(**{**params, "seed": 0})  # the effective values, defaults included
    out = dict(params)
    if name in ("kmeans", "agglomerative"):
        fit_rows = min(n, cfg.max_fit_samples)
        if cfg.n_clusters is not None:
            if cfg.n_clusters > fit_rows:
                out["n_clusters"] = fit_rows
                notes.append(f"n_clusters {cfg.n_clusters} > {fit_rows} rows fitted: clipped to {fit_rows}")
            return out
        scored = min(fit_rows, cfg.silhouette_sample, getattr(cfg, "search_max_samples", fit_rows))
        ks = [k for k in cfg.k_range if k < scored]
        if not ks:
            ks = list(range(2, scored))
            notes.append(f"no K of k_range below the {scored} rows scored: K searched over 2..{scored - 1}")
        elif len(ks) < len(cfg.k_range):
            notes.append(f"k_range clipped to K < {scored} rows scored: {ks[0]}..{ks[-1]}")
        out["k_range"] = tuple(ks)
    elif name == "hdbscan":
        fit_rows = min(n, cfg.max_fit_samples)
        mcs = [v for v in cfg.min_cluster_sizes if v <= fit_rows] or [max(2, fit_rows // 2)]
        ms = [v for v in cfg.min_samples if v < fit_rows] or [1]
        if (tuple(mcs), tuple(ms)) != (cfg.min_cluster_sizes, cfg.min_samples):
            notes.append(f"HDBSCAN grid clipped to {fit_rows} rows: min_cluster_sizes {mcs}, min_samples {ms}")
        out["min_cluster_sizes"], out["min_samples"] = tuple(mcs), tuple(ms)
    return out


def _chosen(model: Any) -> dict[str, Any]:
    """The model selection's outcome, per method (App. E's criterion and its value)."""
    name = model.name
    if name in ("kmeans", "agglomerative"):
        k = getattr(model, "chosen_k_", None)
        scores = getattr(model, "silhouette_scores_", {})
        return {"criterion": "silhouette" if scores else "fixed K", "K": k,
                "silhouette": scores.get(k) if scores else None, "candidates": len(scores),
                "scores": {str(kk): v for kk, v in scores.items()}}  # fmt: skip
    if name == "hdbscan":
        best = next((r for r in model.grid_scores_ if (r["min_cluster_size"], r["min_samples"])
                     == (model.min_cluster_size_, model.min_samples_)), {})  # fmt: skip
        score = best.get("score")
        return {"criterion": f"DBCV ({model.config.dbcv}) - {model.config.noise_penalty} x noise share",
                "dbcv": model.config.dbcv, "min_cluster_size": model.min_cluster_size_,
                "min_samples": model.min_samples_, "score": score if score is not None and np.isfinite(score) else None,
                "dbcv_value": best.get("dbcv"), "noise_penalty": model.config.noise_penalty,
                "candidates": len(model.grid_scores_), "dbcv_sample_rows": model.dbcv_sample_rows_,
                "grid": model.grid_scores_}  # fmt: skip
    return {"criterion": "Butina threshold search (App. E)", "threshold": model.threshold_,
            "coverage": model.coverage_}  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def fit_selection_clusters(
    X_target: np.ndarray,
    X_window: np.ndarray,
    X_pool: np.ndarray,
    config: ClusteringConfig = ClusteringConfig(),  # noqa: B008  (frozen, so a shared default is safe)
) -> SelectionClusters:
    """Cluster D_t ∪ E_t ∪ D_aux of one target (§3.1.1) with App. E's model selection; see the module docstring.

    Rows: unit-norm float32 embeddings of one model; X_window or X_pool may have 0 rows. Labels are int64 in
    [0, K) or -1 (noise, hdbscan/butina only); centroids (K, d) float32 with unit rows.
    """
    started = time.perf_counter()
    parts = {"target": _rows(X_target, "X_target"), "window": _rows(X_window, "X_window"),
             "pool": _rows(X_pool, "X_pool")}  # fmt: skip
    d = _dim(parts)
    X = np.concatenate([p if p.shape[0] else np.zeros((0, d), np.float32) for p in parts.values()])
    n = X.shape[0]
    notes: list[str] = []
    params = {**SELECTION_DEFAULTS[config.clusterer], **config.params}
    chosen: dict[str, Any] = {}
    params_used: dict[str, Any] = {}
    labels, centroids = np.zeros(n, np.int64), np.zeros((0, d), np.float32)
    one_cluster = 0 < n < 3
    if one_cluster:
        notes.append(f"{n} row(s): too few to choose a model; one cluster")
    elif n:
        params_used = _fit_params(config.clusterer, params, n, notes)
        model = make_clusterer(config.clusterer, seed=int(config.seed), **params_used)
        labels = np.asarray(model.fit_predict(X), dtype=np.int64)
        centroids = np.asarray(model.centroids_, dtype=np.float32)
        chosen = _chosen(model)
        if model.n_clusters_ == 0:
            notes.append(f"{config.clusterer} found no cluster (every row noise): one cluster of all rows")
            one_cluster = True
    if one_cluster:
        labels = np.zeros(n, np.int64)
        centroids = normalised_means(X, labels, 1)
        if not np.any(centroids):  # members cancel exactly (e.g. x and -x): any member's direction will do
            centroids = X[:1].copy()
    cut = np.cumsum([parts["target"].shape[0], parts["window"].shape[0]])
    target, window, pool = np.split(labels, cut)
    K = int(centroids.shape[0])
    max_fit = params_used.get("max_fit_samples", REGISTRY[config.clusterer].config_class(seed=0).max_fit_samples)
    fit_rows = min(n, int(max_fit)) if params_used else n
    summary = {
        "clusterer": config.clusterer,
        "seed": int(config.seed),
        "n_clusters": K,
        "chosen": chosen,
        "params": params_used,
        "rows": {name: int(p.shape[0]) for name, p in parts.items()},
        "rows_total": int(n),
        "rows_fitted": int(fit_rows),
        "noise_share": float(np.mean(labels == NOISE)) if n else 0.0,
        "noise_share_per_part": {name: float(np.mean(lab == NOISE)) if lab.size else 0.0
                                 for name, lab in zip(PARTS, (target, window, pool), strict=True)},  # fmt: skip
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
    return SelectionClusters(target=target, window=window, pool=pool,
                             centroids=np.ascontiguousarray(centroids, dtype=np.float32),
                             summary=_jsonable(summary))  # fmt: skip


__all__ = ["CLUSTERERS", "SELECTION_DEFAULTS", "ClusteringConfig", "SelectionClusters", "fit_selection_clusters"]
