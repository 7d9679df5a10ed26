"""The codebook value type: a fitted clusterer as the monitor, the service and the simulator use it.

A codebook turns embeddings into bucket ids: the cluster id, or ``n_clusters`` (the last bucket) for noise, so
P_ref and P_mon are counted over K + 1 buckets (eq. 3-4). ``infra/codebook/`` stores versions of it on disk
with a pointer in Redis; the drift simulator (``compass/drift/eq3.py``) builds one in memory.

Versions: a fit is its own lineage ``L``; a revision (eq. 2 moved the centroids, cluster ids kept) is ``L.R``.
``lineage_of`` names the fit whose bucket ids a version keeps.

``distance_quantiles`` (paper §6.1, stale clusters) calibrates "far from every centroid": quantiles of the cosine
distance ``1 - max_k x·c_k`` of each training row to its nearest centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compass.cluster.base import Clusterer
from compass.cluster.nearest import NOISE, nearest_cosine_distances
from compass.errors import CompassError

QUANTILES = (0.90, 0.95, 0.99)  # the calibrated distances a manifest records, keyed "0.90", "0.95", "0.99"


class CodebookError(CompassError, RuntimeError):
    """A codebook cannot be published, loaded or used; the message names the version, the path and the fix."""


class EmbedderMismatch(CompassError, ValueError):
    """A codebook was fitted on another embedder's vectors than the ones it is asked to assign."""


def lineage_of(version: str) -> str:
    """The fit a codebook version descends from: ``L`` for ``L`` and for its revisions ``L.R``."""
    return version.split(".", 1)[0]


@dataclass(frozen=True)
class Codebook:
    version: str
    clusterer: Clusterer
    model_id: str = ""  # the embedder whose vectors the clusterer was fitted on ("" in the simulator: one embedder)
    languages: tuple[str, ...] | None = None  # language scope; None = every language
    created_at: float = 0.0  # unix seconds
    parent: str | None = None  # the version this one was derived from (a revision's or a re-fit's origin)
    distance_quantiles: dict[str, float] | None = None  # {"0.95": d, ...} of training distances; None: uncalibrated

    @property
    def lineage(self) -> str:
        """The fit whose cluster ids this version keeps (itself for a fit): windows reset only when it changes."""
        return lineage_of(self.version)

    @property
    def n_clusters(self) -> int:
        return int(self.clusterer.n_clusters_)

    @property
    def n_buckets(self) -> int:
        """Clusters plus one noise bucket, the last one: the layout of a monitor window's counts."""
        return self.n_clusters + 1

    @property
    def centroids(self) -> np.ndarray:
        """(K, dim) float32 centroids; (0, 0) when the clusterer has none (e.g. HDBSCAN found only noise)."""
        return centroids_of(self.clusterer)

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Bucket ids (int64) of the rows of ``X``: the cluster id, or ``n_clusters`` for noise."""
        labels = np.asarray(self.clusterer.predict(X), dtype=np.int64)
        k = self.n_clusters
        bad = (labels < NOISE) | (labels >= k)
        if bad.any():
            raise CodebookError(
                f"codebook {self.version}: the clusterer answered label {int(labels[bad][0])}, outside "
                f"[{NOISE}, {k}); the codebook's files are inconsistent: publish a new one"
            )
        return np.where(labels == NOISE, k, labels)

    def counts(self, buckets: np.ndarray) -> np.ndarray:
        """(n_buckets,) float64 count of each bucket id in ``buckets`` (as ``assign`` returns them)."""
        return np.bincount(buckets, minlength=self.n_buckets).astype(np.float64)

    def nearest_distances(self, X: np.ndarray) -> np.ndarray:
        """Cosine distance (float64) of each row of ``X`` to its nearest centroid; inf without centroids."""
        return checked_distances(X, self.centroids)

    def calibrated_distance(self, quantile: float) -> float | None:
        """The ``quantile`` of the training rows' nearest-centroid distances, or None when the manifest has no
        such quantile (published without its training vectors, or ``quantile`` not among those recorded)."""
        for key, value in (self.distance_quantiles or {}).items():
            if abs(float(key) - quantile) < 1e-9:
                return value
        return None

    def check_model(self, model_id: str) -> None:
        """Raise ``EmbedderMismatch`` unless the codebook was fitted on vectors of ``model_id``."""
        if model_id != self.model_id:
            raise EmbedderMismatch(
                f"codebook {self.version} was fitted on embedder {self.model_id!r} but the vectors come from "
                f"{model_id!r}; clusters of one embedder mean nothing in another's space: configure the same "
                "embedder, or build a codebook for this one (compass codebook build)"
            )


def centroids_of(clusterer: Clusterer) -> np.ndarray:
    """The clusterer's (K, dim) centroids as float32, or an empty (0, 0) array when it has none."""
    centroids = getattr(clusterer, "centroids_", None)
    if centroids is None or np.ndim(centroids) != 2:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(centroids, dtype=np.float32)


def checked_distances(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``nearest_cosine_distances`` after checking that ``X`` is (n, dim) rows of the centroids' dimension."""
    X = np.asarray(X)
    C = np.asarray(centroids)
    if X.ndim != 2 or C.ndim != 2 or (len(C) and X.shape[1] != C.shape[1]):
        raise CodebookError(
            f"vectors of shape {X.shape} do not match centroids of shape {C.shape}; pass (n, dim) rows of the "
            "embedder the codebook was fitted with"
        )
    return nearest_cosine_distances(X, C)


def distance_quantiles(X_fit: np.ndarray, centroids: np.ndarray) -> dict[str, float] | None:
    """``{"0.90": d, "0.95": d, "0.99": d}``: quantiles (numpy's linear) of the training rows' nearest-centroid
    cosine distances; None when there are no centroids (e.g. HDBSCAN found only noise)."""
    X_fit = np.asarray(X_fit)
    if X_fit.ndim != 2 or len(X_fit) == 0:
        raise CodebookError(
            f"X_fit: got an array of shape {X_fit.shape}; pass the (n, dim) vectors the clusterer was fitted on "
            "(n >= 1), or None to publish without a calibrated distance"
        )
    if not np.isfinite(X_fit).all():
        raise CodebookError("X_fit: contains NaN or inf; pass the finite vectors the clusterer was fitted on")
    if np.asarray(centroids).ndim != 2 or len(centroids) == 0:
        return None
    d = checked_distances(X_fit, centroids)
    return {f"{q:.2f}": float(v) for q, v in zip(QUANTILES, np.quantile(d, QUANTILES), strict=True)}
