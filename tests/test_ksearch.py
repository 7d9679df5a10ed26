"""compass/cluster/ksearch.py: the K-search fields and checks KMeansConfig and AgglomerativeConfig share."""

from __future__ import annotations

import dataclasses

import pytest

from compass.cluster.agglomerative import AgglomerativeConfig
from compass.cluster.errors import ClusterParamError
from compass.cluster.kmeans import KMeansConfig
from compass.cluster.ksearch import K_RANGE, KSearchState


@pytest.mark.parametrize("config_class", [KMeansConfig, AgglomerativeConfig])
def test_shared_fields_keep_their_place_and_defaults(config_class):
    fields = dataclasses.fields(config_class)
    assert [f.name for f in fields[:2]] == ["n_clusters", "k_range"]
    cfg = config_class()
    assert cfg.n_clusters is None and cfg.k_range == K_RANGE and cfg.silhouette_sample == 5000
    assert K_RANGE[0] == 10 and K_RANGE[-1] == 120 and len(K_RANGE) == 23  # App. E: 10..120 step 5


@pytest.mark.parametrize(
    ("config_class", "kwargs", "expected"),
    [
        (KMeansConfig, {"k_range": [20, 10, 10]}, (10, 20)),  # sorted, duplicates dropped
        (AgglomerativeConfig, {"k_range": (7, 3)}, (3, 7)),
    ],
)
def test_k_range_is_normalised(config_class, kwargs, expected):
    assert config_class(**kwargs).k_range == expected


@pytest.mark.parametrize(
    ("config_class", "kwargs", "message"),
    [
        (KMeansConfig, {"n_clusters": 0}, "'n_clusters' parameter of KMeansClusterer"),
        (AgglomerativeConfig, {"n_clusters": 0}, "'n_clusters' parameter of AgglomerativeClusterer"),
        (KMeansConfig, {"k_range": [1]}, "'k_range' parameter of KMeansClusterer"),
        (AgglomerativeConfig, {"n_clusters": 11, "max_fit_samples": 10}, r"<= max_fit_samples \(10\)"),
        (KMeansConfig, {"n_clusters": 11, "max_fit_samples": 10}, r"<= max_fit_samples \(10\)"),
    ],
)
def test_bad_k_parameters_are_refused(config_class, kwargs, message):
    with pytest.raises(ClusterParamError, match=message):
        config_class(**kwargs)


@pytest.mark.parametrize(
    ("found", "state"),
    [
        ({}, {"chosen_k": None, "silhouette_scores": {}}),  # a fixed K: nothing searched
        ({"chosen_k_": 15, "silhouette_scores_": {10: 0.25, 15: 0.5}},
         {"chosen_k": 15, "silhouette_scores": {"10": 0.25, "15": 0.5}}),
    ],
)
def test_search_state_round_trips(found, state):
    saved = KSearchState()
    saved.__dict__.update(found)
    assert saved._state() == state
    restored = KSearchState()
    restored._restore(state, {}, "unused")
    assert getattr(restored, "chosen_k_", None) == found.get("chosen_k_")
    assert restored.silhouette_scores_ == found.get("silhouette_scores_", {})
