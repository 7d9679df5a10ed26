"""The reference a simulated training cycle installs: P_ref by eq. 3, as the worker's ``plan_update`` sets it.

A cycle trains on D_t (the language's target data) plus the auxiliary rows S that COMPASS selects from the pool
D_aux for the usage proxy E_t (§3.2), and the adapter's reference is the cluster mix of that cycle (eq. 3):

    n_ref(k) = n_eval(k) + n_aux,selected(k)          P_ref = n_ref / sum(n_ref)

``References`` computes it for the drift replay (in process, ``compass/drift/replay.py``, and through Kafka,
``daemon/demo/simulate_kafka.py``; one builder for both):

  D_t      the stream's first ``reference_samples`` samples (the initial training data), fixed for the run;
  E_t      the usage part: the first ``reference_samples`` samples for the initial cycle, the monitor window
           at the update (the window the daemon froze) for every later one; n_eval = its bucket counts;
  D_aux    the pool (``Pool``): a given pool file, or the stream's distinct texts (``stream_pool``);
  S        ``compass.select.select`` (COMPASS-S, budget B = the language's ``budget``, |S| = round(B |D_t|)),
           labels from the current codebook (noise = -1), seeded per cycle (``seed + cycle``), tau_sim
           calibrated once on the pool. Unlike ``plan_update`` nothing is held out (the replay trains nothing,
           so no gate needs held-out rows): E_t is the whole window and D_t all of the reference part.

``mode="window"`` is the simplification the replay used before: P_ref = the usage part's counts (no S).

Every cycle also keeps its rows (``last_rows``, a ``ReferenceRows``: the usage part, weight 1, and the selected
pool rows, weight = their repetition count), as the worker stores them with each adapter version, so that
``rebase`` can recompute the cycle's P_ref on a re-fitted codebook (eq. 3 on the new buckets, no new selection),
together with the baseline the cycle's adapter was trained for (its usage rows on the new buckets,
``compass/drift/baseline.py``): the learned detectors are armed from it instead of from traffic that has already
shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from compass.drift.baseline import recount
from compass.drift.reference_rows import ReferenceRows
from compass.embed import l2_normalize

if TYPE_CHECKING:  # compass.cluster loads faiss and hdbscan: only when a codebook is fitted
    from compass.cluster.codebook import Codebook

REFERENCE_MODES = ("eq3", "window")
SIMULATED = "simulated"  # the version of an in-memory codebook: never published, one lineage per run


def fit_codebook(embeddings: np.ndarray, n_clusters: int, seed: int = 0, fit_on: str = "pool",
                 reference_samples: int = 0, version: str = SIMULATED) -> Codebook:
    """Seeded k-means on the stream's distinct rows (``fit_on="pool"``) or on its first ``reference_samples``
    rows (``"reference"``), with the calibrated distances of its fit rows (the far share's radius, §6.1)."""
    from compass.cluster import make_clusterer
    from compass.cluster.codebook import Codebook, centroids_of, distance_quantiles

    x = np.asarray(embeddings, dtype=np.float32)
    x = x[:reference_samples] if fit_on == "reference" else x
    x = np.unique(x, axis=0)  # a replayed stream repeats texts; the codebook is fitted on the texts once
    if len(x) < n_clusters:
        raise ValueError(f"SimulationConfig.n_clusters: got {n_clusters} but the {fit_on} data has only {len(x)} "
                         f"distinct rows; use n_clusters <= {len(x)}")
    clusterer = make_clusterer("kmeans", seed=seed, n_clusters=n_clusters)
    clusterer.fit_predict(x)
    return Codebook(version, clusterer, distance_quantiles=distance_quantiles(x, centroids_of(clusterer)))


@dataclass(frozen=True)
class Pool:
    """The auxiliary pool D_aux: one embedding row (unit norm) and one language code per row."""

    embeddings: np.ndarray
    langs: tuple[str, ...]

    def __post_init__(self) -> None:
        x = np.asarray(self.embeddings)
        if x.ndim != 2 or len(x) != len(self.langs):
            raise ValueError(f"Pool: {x.shape} embeddings for {len(self.langs)} language codes; give one (n, d) "
                             "row and one code per pool row")

    def __len__(self) -> int:
        return len(self.langs)


def stream_pool(embeddings: np.ndarray, lang: str) -> Pool:
    """The default pool: the stream's distinct rows (sorted, so deterministic), tagged with its language."""
    x = np.unique(np.asarray(embeddings, dtype=np.float32), axis=0)
    return Pool(x, (lang,) * len(x))


class References:
    """Eq. 3 references of one replay (module docstring): ``initial()``, then ``after_update(...)`` per cycle."""

    def __init__(self, book: Codebook, embeddings: np.ndarray, lang: str, reference_samples: int, *,
                 budget: float, pool: Pool | None = None, mode: Literal["eq3", "window"] = "eq3", seed: int = 0):
        if mode not in REFERENCE_MODES:
            raise ValueError(f"reference: got {mode!r}; use 'eq3' (usage part + COMPASS selection) or 'window'")
        self.book, self.lang, self.mode, self.budget, self.seed = book, lang, mode, float(budget), int(seed)
        self.x_target = _unit(np.asarray(embeddings, dtype=np.float32)[:reference_samples])
        self.pool = pool if pool is not None else stream_pool(embeddings, lang)
        self.x_pool = _unit(np.asarray(self.pool.embeddings, dtype=np.float32))
        self.cycle = 0
        self._tau: float | None = None
        self.last_selected: np.ndarray | None = None  # n_aux,selected of the last cycle (None in window mode)
        self.last_rows: ReferenceRows | None = None  # the rows behind the last cycle's counts (``rebase``)

    def initial(self) -> np.ndarray:
        """The eq. 3 counts of the initial training cycle: usage part = D_t = the reference samples."""
        return self.counts(self.x_target)

    def after_update(self, window_x: np.ndarray) -> np.ndarray:
        """The eq. 3 counts installed by an update whose frozen window held the rows ``window_x``."""
        self.cycle += 1
        return self.counts(window_x)

    def counts(self, usage_x: np.ndarray) -> np.ndarray:
        """n_eval + n_aux,selected per bucket for the usage part ``usage_x`` under the current codebook."""
        usage = _unit(np.asarray(usage_x, dtype=np.float32))
        n_eval = self.book.counts(self.book.assign(usage))
        source = "target" if self.cycle == 0 else "window"  # the initial cycle's usage part is D_t itself
        rows = [ReferenceRows(tuple(f"{source}-{i}" for i in range(len(usage))), (source,) * len(usage),
                              np.ones(len(usage)), usage)]
        if self.mode == "window":
            self.last_selected = None
            self.last_rows = rows[0]
            return n_eval
        selected, picked = self.selected(usage)
        self.last_selected = selected
        rows.append(picked)
        self.last_rows = ReferenceRows.concat(rows, usage.shape[1])
        return n_eval + selected

    def rebase(self, book: Codebook) -> tuple[np.ndarray, np.ndarray | None]:
        """Switch to the re-fitted ``book`` and return the last cycle's eq. 3 counts on it (its stored rows,
        float16 as the worker stores them, assigned anew) and its baseline counts (the usage rows alone, None
        without any): what the worker's recluster job installs."""
        self.book = book
        if self.last_rows is None:
            raise ValueError("References.rebase: no cycle yet; call initial() first")
        return recount(self.last_rows, book)

    def selected(self, usage: np.ndarray) -> tuple[np.ndarray, ReferenceRows]:
        """n_aux,selected: COMPASS's selection per bucket for D_t, E_t = ``usage`` and the pool (labels now), and
        the selected pool rows (weight = repetition count)."""
        from compass.select import SelectionConfig, select
        from compass.select.diversity import calibrate_tau_sim

        size = self.book.n_buckets
        if len(self.x_pool) == 0 or len(usage) == 0:
            return np.zeros(size), ReferenceRows.concat([], self.x_pool.shape[1] if self.x_pool.ndim == 2 else 0)
        k = size - 1
        if self._tau is None:  # what select() would calibrate on every call: the pool's, once
            self._tau = calibrate_tau_sim(self.x_pool, np.random.default_rng([self.seed, 1]))
        labels = tuple(_noise_minus_one(self.book.assign(x), k) for x in (self.x_target, usage, self.x_pool))
        sel = select(self.x_target, usage, self.x_pool,
                     SelectionConfig(budget=self.budget, seed=self.seed + self.cycle, tau_sim=self._tau),
                     labels=(*labels, self.book.centroids), pool_langs=list(self.pool.langs), target_lang=self.lang)
        idx = np.asarray(sel.pool_indices, dtype=np.int64)
        picked = ReferenceRows(tuple(f"pool-{i}" for i in idx.tolist()), ("selected",) * len(idx),
                               np.asarray(sel.counts, dtype=np.float64), self.x_pool[idx])
        return np.asarray(sel.selected_per_cluster, dtype=np.float64), picked


def _noise_minus_one(buckets: np.ndarray, k: int) -> np.ndarray:
    return np.where(buckets >= k, -1, buckets).astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    """Unit rows (select() requires them); rows already of unit norm come back unchanged."""
    return l2_normalize(x) if len(x) else np.zeros((0, x.shape[1] if x.ndim == 2 else 0), np.float32)


def probs(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum()


__all__ = ["REFERENCE_MODES", "SIMULATED", "Pool", "References", "fit_codebook", "probs", "stream_pool"]
