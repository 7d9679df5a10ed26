"""The re-clustering of the drift replay (paper §6.1): the stale-cluster reading and the simulated recluster job.

The replay (``compass/drift/replay.py``) measures what the daemon measures and answers a ``recluster`` action the
way the worker does with ``daemon.recluster: auto`` (``daemon/worker/recluster.py``):

  * far share: the share of the language's recent points (the window's rows since its last restart, at most
    ``far_max_rows``, like ``daemon.stale_far_max_texts``) whose cosine distance to the nearest centroid exceeds the
    codebook's calibrated distance (the ``quantile`` of its fit rows' distances, ``daemon.stale_distance_quantile``;
    ``compass/drift/stale.py``), and the noise share of the window; ``lifecycle.step`` compares them with
    ``Limits.stale_far_share`` / ``stale_noise_share``;
  * the job: within ``min_interval`` samples of the last re-clustering it is skipped (the worker's
    ``skipped_interval``); else k-means with the replay's K is fitted on a bounded sample (``max_rows``, at most
    ``pool_share`` of it from the pool; ``compass.cluster.refit``'s ``balanced_sample`` and ``pool_rows``, the
    worker's) of the recent window plus the auxiliary pool (the paper clusters D_t ∪ E_t ∪ D_aux), and the last
    cycle's P_ref is recomputed on it from that cycle's stored rows (``References.rebase``, eq. 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compass.drift.eq3 import SIMULATED, fit_codebook
from compass.drift.stale import noise_share, share_beyond
from compass.params import check_int, check_real

if TYPE_CHECKING:
    from compass.cluster.codebook import Codebook

RECLUSTER_MODES = ("off", "auto")


@dataclass(frozen=True)
class Reclustering:
    """How the replay measures stale clusters and answers a ``recluster`` action (module docstring)."""

    n_clusters: int  # K of every re-fit (the replay's K; the worker's default chooses K by silhouette)
    min_interval: float = 1000.0  # samples between two re-clusterings (daemon.recluster_min_interval_s)
    max_rows: int = 20_000  # rows one re-fit clusters: window + pool (daemon.recluster_max_rows)
    pool_share: float = 0.5  # at most this share of max_rows comes from the pool (daemon.recluster_pool_share)
    quantile: float = 0.95  # the calibrated distance that defines "far" (daemon.stale_distance_quantile)
    far_max_rows: int = 500  # recent points per far-share reading (daemon.stale_far_max_texts)
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_clusters", "Reclustering", self.n_clusters, 1)
        check_real("min_interval", "Reclustering", self.min_interval, ge=0.0)
        check_int("max_rows", "Reclustering", self.max_rows, 2)
        check_real("pool_share", "Reclustering", self.pool_share, ge=0.0, le=1.0)
        check_real("quantile", "Reclustering", self.quantile, gt=0.0, lt=1.0)
        check_int("far_max_rows", "Reclustering", self.far_max_rows, 1)
        check_int("seed", "Reclustering", self.seed, 0)

    def shares(self, book: Codebook, counts: np.ndarray, recent: np.ndarray) -> tuple[float | None, float | None]:
        """(noise share of the window ``counts``, far share of the last ``far_max_rows`` rows of ``recent``)."""
        radius = book.calibrated_distance(self.quantile)
        recent = recent[-self.far_max_rows:]
        far = None if radius is None or len(recent) == 0 else share_beyond(book.nearest_distances(recent), radius)
        return noise_share(counts), far

    def due(self, now: float, last: float | None) -> bool:
        """False inside ``min_interval`` of the last re-clustering (the job is then skipped)."""
        return last is None or now - last >= self.min_interval

    def refit(self, windows: Mapping[str, np.ndarray], pool: np.ndarray, cycle: int) -> tuple[Codebook, dict[str, int]]:
        """A new codebook on a bounded sample of the ``windows`` (rows per language) plus the ``pool``, and the
        sample's sizes ({language: rows, "pool": rows}); ``cycle`` (1, 2, ...) seeds the sample and the fit."""
        from compass.cluster.refit import balanced_sample, pool_rows  # loads faiss: only when a re-fit runs

        seed = self.seed + cycle
        n_pool = pool_rows(len(pool), self.max_rows, self.pool_share)
        picked_pool = balanced_sample({"pool": len(pool)}, n_pool, seed)["pool"]
        picked = balanced_sample({lang: len(x) for lang, x in windows.items()}, self.max_rows - n_pool, seed)
        parts = [windows[lang][idx] for lang, idx in picked.items()] + [pool[picked_pool]]
        x = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts if len(p)])
        book = fit_codebook(x, self.n_clusters, seed, version=f"{SIMULATED}-{cycle}")
        return book, {**{lang: len(idx) for lang, idx in picked.items()}, "pool": len(picked_pool)}


__all__ = ["RECLUSTER_MODES", "Reclustering"]
