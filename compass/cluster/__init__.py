"""Clustering of embeddings (paper §3.2.1, §3.3.1, App. E): one interface, four methods.

``make_clusterer("kmeans" | "hdbscan" | "agglomerative" | "butina", seed=0, **params)`` builds one;
``fit(X)`` / ``labels_`` / ``centroids_`` / ``predict(X)`` / ``save(dir)``; ``load_clusterer(dir)`` reads it
back without pickle. X is float32 (n, d) with unit-norm rows. See base.py for the contract.
"""

from compass.cluster.agglomerative import AgglomerativeClusterer, AgglomerativeConfig
from compass.cluster.base import NOISE, Clusterer
from compass.cluster.butina import ButinaClusterer, ButinaConfig
from compass.cluster.errors import (
    ClusterError,
    ClusterInputError,
    ClusterLoadError,
    ClusterNotFittedError,
    ClusterParamError,
)
from compass.cluster.factory import load_clusterer, make_clusterer
from compass.cluster.hdbscan_ import HDBSCANClusterer, HDBSCANConfig
from compass.cluster.kmeans import KMeansClusterer, KMeansConfig

__all__ = [
    "NOISE",
    "AgglomerativeClusterer",
    "AgglomerativeConfig",
    "ButinaClusterer",
    "ButinaConfig",
    "ClusterError",
    "ClusterInputError",
    "ClusterLoadError",
    "ClusterNotFittedError",
    "ClusterParamError",
    "Clusterer",
    "HDBSCANClusterer",
    "HDBSCANConfig",
    "KMeansClusterer",
    "KMeansConfig",
    "load_clusterer",
    "make_clusterer",
]
