"""One entry point for every method: ``select`` returns the pool rows S to add to D_t (§3.2, Table 2).

Flow for the COMPASS methods: labels (cluster D_t ∪ E_t ∪ D_aux together, §3.1.1, or take precomputed
ones) -> ClusterStats (§3.2.2) -> quotas -> reallocation -> per cluster: eq. 1 scores and the sampling loop
(§3.2.3).

Unfilled quota: §3.2.3 lets a cluster with fewer candidates than q_k sample with replacement (at most
max_repeats picks per row), but when even that cannot fill q_k the paper leaves open where the rest goes; we
move it to the clusters that still have room, in proportion to their w~_k (the even weights for the
no-cluster-weights ablation), with the quotas' exact-total rounding, fresh rows before repeats, only to
clusters with w_k > 0 (see quotas.reallocate). Every cluster is then sampled once with its final quota, so
alpha_k = min(1, sampled_k / q_k) of eq. 1 uses the final q_k. |S| = round(B |D_t|) whenever the receivers
can supply it (sum of max_repeats * n_aux^k >= N); ``Selection.quotas`` keeps the original q_k and
``Selection.final_quotas`` what each cluster was sampled with.

Random streams are derived from ``config.seed`` per purpose (quotas, calibration, each cluster, baselines,
reallocation),
so a cluster's draw does not depend on the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from compass import langcodes
from compass.select.config import COMPASS_METHODS, SelectionConfig, bad_param
from compass.select.diversity import ClusterNeighbours, calibrate_tau_sim
from compass.select.mismatch import NOISE, ClusterStats, buckets, cluster_stats
from compass.select.quotas import deterministic_quotas, reallocate, stochastic_quotas, total_budget
from compass.select.sampler import sample_cluster
from compass.select.scores import boundary_scores, centroid_distances, proto_scores

T = TypeVar("T")
_NORM_TOL = 1e-2
_STREAM_QUOTAS, _STREAM_CALIBRATE, _STREAM_CLUSTER, _STREAM_BASELINE, _STREAM_REALLOC = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Selection:
    pool_indices: np.ndarray  # int64 (m,) distinct pool rows selected, in selection order
    counts: np.ndarray  # int64 (m,) times each row was selected (1..max_repeats; >1 only in shortfall)
    scores: np.ndarray  # float64 (m,) s(x) when the row was first selected (nan for methods without scores)
    clusters: np.ndarray  # int64 (m,) bucket of each selected row (K = noise bucket)
    train_labels: np.ndarray  # int64, NOISE = -1
    eval_labels: np.ndarray
    pool_labels: np.ndarray
    centroids: np.ndarray  # float32 (K, d)
    stats: ClusterStats  # n_t, n_eval, n_aux, rho, w, w_tilde (length K + 1)
    quotas: np.ndarray  # int64 (K + 1,) original q_k from w~_k (zeros for the baselines)
    final_quotas: np.ndarray  # int64 (K + 1,) q_k after reallocation: what each cluster was sampled with
    selected_per_cluster: np.ndarray  # int64 (K + 1,) selections incl. repeats
    shortfall_clusters: list[int]  # clusters with fewer candidates than their final quota (rows repeated)
    tau_sim: float | None  # threshold used by the neighbour graph (None when unused)
    method: str
    config: SelectionConfig

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def extra(self) -> np.ndarray:
        """int64 (K + 1,) quota units each cluster received from the reallocation."""
        return np.maximum(self.final_quotas - self.quotas, 0)

    @property
    def fell_short_clusters(self) -> list[int]:
        """Clusters that could not deliver their original q_k (the rest was moved elsewhere)."""
        return np.flatnonzero(self.final_quotas < self.quotas).tolist()


def training_set(train_records: Sequence[T], pool_records: Sequence[T], selection: Selection) -> list[T]:
    """D_t ∪ S (§3.2.4): all of D_t first, in order, then each selected pool record ``count`` times
    (repeats exist only in a shortfall, where they stand for sampling with replacement)."""
    out = list(train_records)
    for i, c in zip(selection.pool_indices.tolist(), selection.counts.tolist(), strict=True):
        out.extend([pool_records[i]] * c)
    return out


def _embeddings(name: str, X: Any, d: int | None) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.floating):
        raise bad_param(name, "select", "a 2-d float array (n, d)", f"array of dtype {X.dtype}, shape {X.shape}")
    if d is not None and X.shape[1] != d:
        raise bad_param(name, "select", f"an array with d = {d} columns like X_train", f"shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if len(X):
        norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        if not np.all(np.abs(norms - 1) < _NORM_TOL):  # also catches nan/inf
            bad = int(np.flatnonzero(~(np.abs(norms - 1) < _NORM_TOL))[0])
            raise bad_param(
                name,
                "select",
                "L2-normalised rows (cosine distance assumes it; normalise first)",
                f"row {bad} with norm {norms[bad]:.4f}",
            )
    return X


def _labels(
    X_train: np.ndarray, X_eval: np.ndarray, X_pool: np.ndarray, clusterer: Any, labels: Any, needed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = X_train.shape[1]
    sizes = (len(X_train), len(X_eval), len(X_pool))
    if clusterer is not None and labels is not None:
        raise bad_param("labels", "select", "None when a clusterer is given (pass one or the other)", "a tuple")
    if clusterer is not None:
        fitted = np.asarray(clusterer.fit_predict(np.concatenate([X_train, X_eval, X_pool])), dtype=np.int64)
        if fitted.shape != (sum(sizes),):
            raise bad_param("clusterer", "select", f"a clusterer labelling all {sum(sizes)} rows", fitted.shape)
        parts = np.split(fitted, np.cumsum(sizes)[:2])
        centroids = np.asarray(clusterer.centroids_, dtype=np.float32)
    elif labels is not None:
        if len(labels) != 4:
            raise bad_param("labels", "select", "(train_labels, eval_labels, pool_labels, centroids)", type(labels))
        *parts, centroids = labels
        parts = [np.asarray(p, dtype=np.int64) for p in parts]
        for name, p, n in zip(("train_labels", "eval_labels", "pool_labels"), parts, sizes, strict=True):
            if p.shape != (n,):
                raise bad_param(name, "select", f"an int array of shape ({n},), one label per row", p.shape)
        centroids = np.asarray(centroids, dtype=np.float32)
    elif needed:
        raise bad_param("labels", "select", "(train, eval, pool labels, centroids), or pass a clusterer", None)
    else:  # a baseline without clustering: everything in the noise bucket of K = 0 clusters
        parts = [np.full(n, NOISE, np.int64) for n in sizes]
        centroids = np.zeros((0, d), np.float32)
    if centroids.ndim != 2 or (len(centroids) and centroids.shape[1] != d):
        raise bad_param("centroids", "select", f"a (K, {d}) float array", centroids.shape)
    return parts[0], parts[1], parts[2], centroids


def _report(progress: Any, done: int, total: int) -> None:
    if progress is None:
        return
    if callable(progress):
        progress(done, total)
    else:  # tqdm-like
        progress.update(1)


def _compass(
    X_pool: np.ndarray,
    pool_b: np.ndarray,
    pool_labels: np.ndarray,
    centroids: np.ndarray,
    stats: ClusterStats,
    n_total: int,
    config: SelectionConfig,
    progress: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int], float | None]:
    method, seed, size = config.method, config.seed, len(stats.n_t)
    if method == "no-cluster-weights":  # Table 2 ablation: even quotas over the buckets that have candidates
        weights = (stats.n_aux > 0).astype(np.float64)
        if not config.sample_noise:
            weights[-1] = 0.0
    else:
        weights = stats.w_tilde
    if config.stochastic:
        quotas = stochastic_quotas(weights, n_total, np.random.default_rng([seed, _STREAM_QUOTAS]))
    else:
        quotas = deterministic_quotas(weights, n_total)
    realloc_rng = np.random.default_rng([seed, _STREAM_REALLOC]) if config.stochastic else None
    final = reallocate(quotas, weights, stats.n_aux, config.max_repeats, realloc_rng)

    uniform = method == "no-instance-weights"
    use_diversity = not uniform and config.delta > 0
    tau = None
    if use_diversity:
        tau = config.tau_sim
        if tau is None:
            tau = calibrate_tau_sim(X_pool, np.random.default_rng([seed, _STREAM_CALIBRATE]))

    # Only rows of buckets with a quota are scored; grouping by bucket keeps pool order inside a bucket.
    rows = np.flatnonzero(final[pool_b] > 0)
    rows = rows[np.argsort(pool_b[rows], kind="stable")]
    row_b = pool_b[rows]
    if uniform:
        s_proto = s_bound = np.ones(len(rows))
    else:
        d_own, d_other = centroid_distances(X_pool, pool_labels[rows], centroids, rows=rows)
        s_proto, s_bound = proto_scores(d_own), boundary_scores(d_own, d_other, row_b, config.boundary)

    out_rows, out_counts, out_scores, shortfall = [], [], [], []
    active = [k for k in range(size) if final[k] > 0]
    starts = np.searchsorted(row_b, np.arange(size + 1))
    for done, k in enumerate(active, 1):
        lo, hi = starts[k], starts[k + 1]
        members = rows[lo:hi]
        draw = sample_cluster(
            s_proto[lo:hi],
            s_bound[lo:hi],
            int(final[k]),  # eq. 1's alpha runs over the final quota
            None if not config.stochastic else np.random.default_rng([seed, _STREAM_CLUSTER, k]),
            greedy=not config.stochastic,
            neighbours=ClusterNeighbours(X_pool[members], tau) if use_diversity else None,
            delta=config.delta if use_diversity else 0.0,
            floor=config.score_floor,
            max_repeats=config.max_repeats,
            decay=config.decay,
        )
        if draw.shortfall:
            shortfall.append(k)
        out_rows.append(members[draw.rows])
        out_counts.append(draw.counts)
        out_scores.append(np.full(len(draw.rows), np.nan) if uniform else draw.scores)
        _report(progress, done, len(active))
    rows_out, counts_out = _cat(out_rows, np.int64), _cat(out_counts, np.int64)
    return rows_out, counts_out, _cat(out_scores, np.float64), quotas, final, shortfall, tau


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _baseline(
    config: SelectionConfig, n_pool: int, n_total: int, pool_langs: Sequence[str] | None, target_lang: str | None
) -> np.ndarray:
    rng = np.random.default_rng([config.seed, _STREAM_BASELINE])
    if config.method == "target":
        return np.zeros(0, np.int64)
    if config.method == "all":
        return np.arange(n_pool, dtype=np.int64)
    if config.method == "random":
        return rng.choice(n_pool, min(n_total, n_pool), replace=False).astype(np.int64)
    # langsim: rows in the langsim_k auxiliary languages most similar to the target, capped to the same budget
    # uniformly at random so it is compared with COMPASS at equal size.
    if pool_langs is None or len(pool_langs) != n_pool:
        got = None if pool_langs is None else f"{len(pool_langs)} languages"
        raise bad_param("pool_langs", "select", f"one language code per pool row ({n_pool}) for langsim", got)
    if not target_lang:
        raise bad_param("target_lang", "select", "the target language code for langsim", target_lang)
    from compass.select.langsim import most_similar  # lazy: only this baseline needs it

    # most_similar normalises codes ("pt-BR" -> "pt") and skips the target; match pool rows the same way.
    distinct, inverse = np.unique(np.asarray(pool_langs, dtype=str), return_inverse=True)
    chosen = set(most_similar(target_lang, distinct.tolist(), config.langsim_k))
    keep = np.array([_normalize(lang) in chosen for lang in distinct.tolist()], dtype=bool)
    rows = np.flatnonzero(keep[inverse]) if len(distinct) else np.zeros(0, np.int64)
    if len(rows) > n_total:
        rows = rng.choice(rows, n_total, replace=False)
    return rows.astype(np.int64)


def _normalize(code: str) -> str:
    try:
        return langcodes.normalize(code)
    except ValueError:  # unknown to the code table: most_similar keeps such codes as they are
        return code


def select(
    X_train: np.ndarray,
    X_eval: np.ndarray,
    X_pool: np.ndarray,
    config: SelectionConfig,
    *,
    clusterer: Any = None,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    pool_langs: Sequence[str] | None = None,
    target_lang: str | None = None,
    progress: Callable[[int, int], Any] | Any = None,
) -> Selection:
    """Select S ⊂ D_aux for ``config.method``; D_t is not part of the result (see ``training_set``).

    Pass either ``clusterer`` (unfitted; fit on D_t ∪ E_t ∪ D_aux, §3.1.1) or ``labels`` =
    (train_labels, eval_labels, pool_labels, centroids). Baselines may pass neither. ``progress``:
    callable(n_done, n_total) or a tqdm-like object, advanced once per sampled cluster.
    """
    if not isinstance(config, SelectionConfig):
        raise bad_param("config", "select", "a SelectionConfig", type(config).__name__)
    X_train = _embeddings("X_train", X_train, None)
    d = X_train.shape[1]
    X_eval, X_pool = _embeddings("X_eval", X_eval, d), _embeddings("X_pool", X_pool, d)
    needed = config.method in COMPASS_METHODS
    train_l, eval_l, pool_l, centroids = _labels(X_train, X_eval, X_pool, clusterer, labels, needed)
    K = len(centroids)
    stats = cluster_stats(train_l, eval_l, pool_l, K, config.eps, config.sample_noise)
    pool_b = buckets(pool_l, K)
    n_total = total_budget(config.budget, len(X_train))
    size = K + 1
    if needed:
        rows, counts, scores, quotas, final, shortfall, tau = _compass(
            X_pool, pool_b, pool_l, centroids, stats, n_total, config, progress
        )
    else:
        rows = _baseline(config, len(X_pool), n_total, pool_langs, target_lang)
        counts, scores = np.ones(len(rows), np.int64), np.full(len(rows), np.nan)
        quotas, shortfall, tau = np.zeros(size, np.int64), [], None
        final = quotas
    clusters = pool_b[rows]
    per_cluster = np.bincount(clusters, weights=counts, minlength=size).astype(np.int64)
    return Selection(
        pool_indices=rows,
        counts=counts,
        scores=scores,
        clusters=clusters,
        train_labels=train_l,
        eval_labels=eval_l,
        pool_labels=pool_l,
        centroids=centroids,
        stats=stats,
        quotas=quotas,
        final_quotas=final,
        selected_per_cluster=per_cluster,
        shortfall_clusters=shortfall,
        tau_sim=tau,
        method=config.method,
        config=config,
    )
