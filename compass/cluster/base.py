"""The clusterer contract (paper §3.2.1) and what the four implementations share.

Every clusterer works in cosine geometry on float32 (n, d) rows of unit L2 norm, as the embedders produce.
``labels_`` are in [0, K) or ``NOISE``; ``centroids_`` are the normalised mean directions of each cluster's
members, so "nearest centroid" is a max inner product. ``predict`` on the rows of the last fit agrees with
``labels_`` exactly for k-means (labels are nearest-centroid by construction); the other methods keep their
own partition for the rows they were fitted on (dendrogram cut, HDBSCAN tree, Butina claims), so a point on a
border may be labelled differently by ``predict``.

Errors live in errors.py, the on-disk format in persist.py, nearest-centroid assignment in nearest.py and the
registry (``make_clusterer``, ``load_clusterer``) in factory.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from compass import params
from compass.cluster.errors import ClusterInputError, ClusterLoadError, ClusterNotFittedError, ClusterParamError
from compass.cluster.nearest import NOISE, nearest_centroid
from compass.cluster.persist import write_dir

NORM_TOL = 1e-3  # float32 embeddings land within ~1e-6 of unit norm; anything further was never normalised


@runtime_checkable
class Clusterer(Protocol):
    name: str
    labels_: np.ndarray
    centroids_: np.ndarray
    n_clusters_: int

    def fit(self, X: np.ndarray) -> Clusterer: ...

    def fit_predict(self, X: np.ndarray) -> np.ndarray: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


# ---------------------------------------------------------------------------------------------- input checks


def check_X(X: Any, owner: str, dim: int | None = None, what: str = "X") -> np.ndarray:
    """``X`` as a C-contiguous float32 (n, d) array, or ClusterInputError naming the problem and the fix.

    Never modifies the caller's array; a float32 C-contiguous input is returned as is (read-only use only).
    """
    try:
        arr = np.asarray(X)
    except Exception as e:  # ragged lists and the like
        raise ClusterInputError(
            f"{owner}: {what} could not be read as an array ({e}); pass a float32 (n, d) array."
        ) from None
    if arr.dtype.kind not in "fiu":
        raise ClusterInputError(f"{owner}: {what} has dtype {arr.dtype}; pass a float32 (n, d) array of embeddings.")
    if arr.ndim != 2:
        hint = " (for one vector use X.reshape(1, -1))" if arr.ndim == 1 else ""
        raise ClusterInputError(f"{owner}: {what} must be 2-D (n, d); got shape {arr.shape}{hint}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ClusterInputError(f"{owner}: {what} is empty (shape {arr.shape}); pass at least one row of d > 0.")
    if dim is not None and arr.shape[1] != dim:
        raise ClusterInputError(
            f"{owner}: {what} has {arr.shape[1]} columns but the clusterer was fitted on d={dim}; "
            "embed with the same model that produced the fit data."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ClusterInputError(
            f"{owner}: {what} has {bad.size} row(s) with NaN or inf (first: row {int(bad[0])}); drop or re-embed them."
        )
    norms = np.linalg.norm(arr, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ClusterInputError(
            f"{owner}: {what} rows must have unit L2 norm (cosine geometry); {int(off.sum())} do not "
            f"(first: row {i}, norm {norms[i]:.4g}). Normalise with compass.embed.l2_normalize first."
        )
    return arr


def param_error(name: str, owner: str, must: str, got: Any) -> ClusterParamError:
    """The project's error sentence (compass/params.py) as a ClusterParamError."""
    return params.bad_param(name, owner, must, got, ClusterParamError)


def check_int(name: str, owner: str, value: Any, minimum: int) -> int:
    """``value`` when it is an int (numpy ints too: grids often come from np.arange) >= minimum."""
    return params.check_int(name, owner, value, minimum, ClusterParamError, allow_numpy=True)


def check_int_seq(name: str, owner: str, value: Any, minimum: int) -> tuple[int, ...]:
    """A non-empty sequence of ints >= minimum, as a sorted tuple without duplicates."""
    must = f"a non-empty sequence of ints >= {minimum} (e.g. range(10, 121, 5))"
    try:
        items = list(value)
    except TypeError:
        raise param_error(name, owner, must, value) from None
    if not items or not all(params.is_int(v, allow_numpy=True) and v >= minimum for v in items):
        raise param_error(name, owner, must, value)
    return tuple(sorted({int(v) for v in items}))


# ---------------------------------------------------------------------------------------------- shared maths


def fit_sample(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted row indices of a uniform sample of ``max_rows`` rows, or None when all n rows fit."""
    if n <= max_rows:
        return None
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def normalised_means(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, d) float32: the unit-norm mean direction of the rows labelled j, for j in [0, k). NOISE rows are ignored."""
    keep = labels >= 0
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[keep], X[keep])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    # An empty cluster or members cancelling exactly would divide by zero; callers drop empty clusters first.
    return (sums / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Used non-noise labels renumbered 0..K-1 (keeping their order); returns (labels int64, K)."""
    used = np.unique(labels[labels >= 0])
    out = np.full(labels.shape, NOISE, dtype=np.int64)
    if used.size:
        remap = np.full(int(used.max()) + 1, NOISE, dtype=np.int64)
        remap[used] = np.arange(used.size)
        keep = labels >= 0
        out[keep] = remap[labels[keep]]
    return out, int(used.size)


def cosine_silhouette(Xs: np.ndarray) -> np.ndarray:
    """Cosine distance matrix (float64) of a bounded sample, computed once and reused for every K scored."""
    S = Xs.astype(np.float64) @ Xs.astype(np.float64).T
    D = np.clip(1.0 - S, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    return D


def silhouette_precomputed(D: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette on a precomputed distance matrix; -1 when it is undefined (one cluster, or every row its own)."""
    from sklearn.metrics import silhouette_score

    n_labels = np.unique(labels).size
    if n_labels < 2 or n_labels > labels.size - 1:
        return -1.0
    return float(silhouette_score(D, labels, metric="precomputed"))


# ---------------------------------------------------------------------------------------------- shared behaviour


class BaseClusterer:
    """Config handling, input checks, predict/fit_predict/save plumbing; subclasses implement ``_fit``."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, seed: int = 0, **params: Any):
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ClusterParamError(
                f"{type(self).__name__} got unknown parameter(s) {unknown}; valid ones are {sorted(fields - {'seed'})}."
            )
        self.config = self.config_class(seed=seed, **params)

    @property
    def seed(self) -> int:
        return self.config.seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # --- fitting
    def fit(self, X: np.ndarray) -> BaseClusterer:
        X = check_X(X, f"{type(self).__name__}.fit")
        self._fit(X)
        return self

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).labels_.copy()

    def _fit_rows(self, X: np.ndarray) -> tuple[np.random.Generator, np.ndarray | None, np.ndarray]:
        """(seeded rng, sorted sample indices or None, the rows to fit on): every method fits on at most
        ``config.max_fit_samples`` rows so large pools stay tractable; the rest are assigned afterwards."""
        rng = np.random.default_rng(self.config.seed)
        idx = fit_sample(X.shape[0], self.config.max_fit_samples, rng)
        return rng, idx, (X if idx is None else X[idx])

    def _fit(self, X: np.ndarray) -> None:
        raise NotImplementedError

    # --- prediction
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "centroids_"):
            raise ClusterNotFittedError(f"{type(self).__name__}.{method}() called before fit(); call fit(X) first.")

    @property
    def dim_(self) -> int:
        return int(self.centroids_.shape[1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted("predict")
        X = check_X(X, f"{type(self).__name__}.predict", dim=self.dim_)
        return self._predict(X)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return nearest_centroid(X, self.centroids_)[0]

    # --- persistence
    def _state(self) -> dict[str, Any]:
        """JSON-able learned scalars beyond labels_/centroids_ (e.g. the chosen K's scores)."""
        return {}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels_, "centroids": self.centroids_}

    def save(self, path: str | Path) -> None:
        self._check_fitted("save")
        saved = json.loads(json.dumps(dataclasses.asdict(self.config)))  # tuples become lists, as on load
        state = {"n_clusters": self.n_clusters_, "dim": self.dim_, **self._state()}
        write_dir(path, self.name, saved, state, self._arrays())

    @classmethod
    def _from_saved(cls, path: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseClusterer:
        try:
            obj = cls(**manifest["params"])
        except (ClusterParamError, TypeError) as e:
            raise ClusterLoadError(f"{path}: saved params are not valid for {cls.__name__} ({e}).") from None
        for name in ("labels", "centroids"):
            if name not in arrays:
                raise ClusterLoadError(f"{path}: {name}.npy is missing; save the clusterer again.")
        obj.labels_ = arrays["labels"].astype(np.int64, copy=False)
        obj.centroids_ = np.ascontiguousarray(arrays["centroids"], dtype=np.float32)
        obj.n_clusters_ = int(manifest["state"]["n_clusters"])
        if obj.centroids_.ndim != 2 or obj.centroids_.shape[0] != obj.n_clusters_:
            raise ClusterLoadError(
                f"{path}: centroids.npy has shape {obj.centroids_.shape} but n_clusters is {obj.n_clusters_}."
            )
        obj._restore(manifest["state"], arrays, path)
        return obj

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path) -> None:
        """Subclass hook: restore extra learned state written by ``_state``/``_arrays``."""
