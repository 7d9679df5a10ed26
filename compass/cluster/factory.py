"""Build a clusterer by name, or load the one ``save`` wrote: the registry of the four implementations.

Kept apart from ``base.py`` because the implementations import ``base``: a registry there needed imports inside
functions to break the cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compass.cluster.agglomerative import AgglomerativeClusterer
from compass.cluster.base import BaseClusterer, Clusterer, param_error
from compass.cluster.butina import ButinaClusterer
from compass.cluster.errors import ClusterLoadError
from compass.cluster.hdbscan_ import HDBSCANClusterer
from compass.cluster.kmeans import KMeansClusterer
from compass.cluster.persist import read_arrays, read_manifest

REGISTRY: dict[str, type[BaseClusterer]] = {
    c.name: c for c in (KMeansClusterer, HDBSCANClusterer, AgglomerativeClusterer, ButinaClusterer)
}


def make_clusterer(name: str, seed: int = 0, **params: Any) -> Clusterer:
    """A new, unfitted clusterer: ``name`` is kmeans | hdbscan | agglomerative | butina; params go to its config."""
    if name not in REGISTRY:
        raise param_error("name", "make_clusterer", f"one of {sorted(REGISTRY)}", name)
    return REGISTRY[name](seed=seed, **params)


def load_clusterer(path: str | Path) -> Clusterer:
    """The clusterer ``save(path)`` wrote, ready to predict (dispatches on manifest["type"])."""
    manifest = read_manifest(path)
    if manifest["type"] not in REGISTRY:
        raise ClusterLoadError(
            f"{path}: unknown clusterer type {manifest['type']!r}; expected one of {sorted(REGISTRY)}."
        )
    return REGISTRY[manifest["type"]]._from_saved(path, manifest, read_arrays(path, manifest))
