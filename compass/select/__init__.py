"""COMPASS selection core (§3.1.1-3.2.3): cluster weights, quotas, instance scores, diversity, sampling."""

from compass.select.clusters import ClusteringConfig, SelectionClusters, fit_selection_clusters
from compass.select.config import COMPASS_METHODS, METHODS, SelectionConfig, SelectionError
from compass.select.diversity import ClusterNeighbours, calibrate_tau_sim, neighbour_graph
from compass.select.engine import Selection, select, training_set
from compass.select.mismatch import NOISE, ClusterStats, cluster_stats
from compass.select.quotas import deterministic_quotas, reallocate, stochastic_quotas, total_budget
from compass.select.sampler import ClusterDraw, sample_cluster
from compass.select.scores import alpha, boundary_scores, centroid_distances, mix, proto_scores

__all__ = [
    "COMPASS_METHODS",
    "METHODS",
    "NOISE",
    "ClusterDraw",
    "ClusterNeighbours",
    "ClusteringConfig",
    "ClusterStats",
    "Selection",
    "SelectionClusters",
    "SelectionConfig",
    "SelectionError",
    "alpha",
    "boundary_scores",
    "calibrate_tau_sim",
    "centroid_distances",
    "cluster_stats",
    "deterministic_quotas",
    "fit_selection_clusters",
    "mix",
    "neighbour_graph",
    "proto_scores",
    "reallocate",
    "sample_cluster",
    "select",
    "stochastic_quotas",
    "total_budget",
    "training_set",
]
