"""compass.cluster: one shared check suite run on every clusterer (river checks/common.py style), then the
method-specific cases (k-means silhouette + eq. 2, HDBSCAN noise + approximate_predict, Butina's search).

Data: planted blobs on the unit sphere in 32-d, seeded; blob centres are random directions (pairwise cos < 0.5)
and members sit within cos > 0.97 of each other, so every method must recover the partition exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from compass.cluster import (
    NOISE,
    AgglomerativeClusterer,
    ButinaClusterer,
    Clusterer,
    ClusterInputError,
    ClusterLoadError,
    ClusterNotFittedError,
    ClusterParamError,
    HDBSCANClusterer,
    KMeansClusterer,
    load_clusterer,
    make_clusterer,
)
from compass.cluster.butina import NeighbourLists, butina
from compass.cluster.kmeans import kmeanspp_init
from compass.errors import CompassError

K_TRUE, PER, DIM = 5, 40, 32

# Small search ranges that contain the planted K, so the suite stays fast.
PARAMS = {
    "kmeans": {"k_range": range(2, 9)},
    "hdbscan": {},
    "agglomerative": {"k_range": range(2, 9)},
    "butina": {},
}
NAMES = list(PARAMS)
CLASSES = {
    "kmeans": KMeansClusterer,
    "hdbscan": HDBSCANClusterer,
    "agglomerative": AgglomerativeClusterer,
    "butina": ButinaClusterer,
}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_blobs(k: int = K_TRUE, per: int = PER, d: int = DIM, sigma: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((k, d)))
    y = np.repeat(np.arange(k), per)
    X = unit(centres[y] + sigma * rng.standard_normal((k * per, d)))
    return X, y, centres


@pytest.fixture(scope="module")
def blobs():
    X, y, centres = make_blobs()
    S = X @ X.T
    same = y[:, None] == y[None, :]
    assert S[same].min() > 0.95 and S[~same].max() < 0.6  # the planted geometry the suite relies on
    X.setflags(write=False)  # any in-place change by a clusterer raises
    return X, y, centres


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _, _ = blobs
    return {name: make_clusterer(name, seed=0, **PARAMS[name]).fit(X) for name in NAMES}


def exact_partition(labels: np.ndarray, y: np.ndarray) -> bool:
    return adjusted_rand_score(y, labels) == 1.0 and not (labels == NOISE).any()


# ---------------------------------------------------------------------------------------------- shared suite


@pytest.mark.parametrize("name", NAMES)
def test_recovers_planted_partition(name, blobs, fitted):
    X, y, _ = blobs
    c = fitted[name]
    assert c.name == name and isinstance(c, CLASSES[name]) and isinstance(c, Clusterer)
    assert c.n_clusters_ == K_TRUE
    assert exact_partition(c.labels_, y)
    assert c.labels_.dtype == np.int64 and c.labels_.shape == (len(X),)
    assert set(np.unique(c.labels_)) == set(range(K_TRUE))


@pytest.mark.parametrize("name", NAMES)
def test_centroids_are_normalised_member_means(name, blobs, fitted):
    X, _, _ = blobs
    c = fitted[name]
    assert c.centroids_.dtype == np.float32 and c.centroids_.shape == (K_TRUE, DIM)
    np.testing.assert_allclose(np.linalg.norm(c.centroids_, axis=1), 1.0, atol=1e-6)
    for k in range(K_TRUE):
        mean = X[c.labels_ == k].astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(c.centroids_[k], mean / np.linalg.norm(mean), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fit_predict_and_predict_agree_with_labels(name, blobs, fitted):
    X, _, _ = blobs
    c = make_clusterer(name, seed=0, **PARAMS[name])
    labels = c.fit_predict(X)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, c.labels_)
    pred = c.predict(X)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, labels)
    np.testing.assert_array_equal(c.predict(X[7:9]), labels[7:9])  # small batches take the same path


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name, blobs, fitted):
    X, _, _ = blobs
    again = make_clusterer(name, seed=0, **PARAMS[name]).fit(X)
    np.testing.assert_array_equal(again.labels_, fitted[name].labels_)
    np.testing.assert_array_equal(again.centroids_, fitted[name].centroids_)


@pytest.mark.parametrize("name", NAMES)
def test_input_not_mutated(name, blobs):
    X, _, _ = blobs
    X2 = X.copy()  # writable this time: a clusterer that normalised in place would change it
    before = X2.copy()
    c = make_clusterer(name, seed=0, **PARAMS[name]).fit(X2)
    c.predict(X2)
    np.testing.assert_array_equal(X2, before)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_predicts_identically(name, blobs, fitted, tmp_path):
    X, _, centres = blobs
    c = fitted[name]
    c.save(tmp_path / "model")
    loaded = load_clusterer(tmp_path / "model")
    assert type(loaded) is type(c) and loaded.n_clusters_ == c.n_clusters_
    assert loaded.config == c.config
    np.testing.assert_array_equal(loaded.labels_, c.labels_)
    np.testing.assert_array_equal(loaded.centroids_, c.centroids_)
    rng = np.random.default_rng(1)
    new = np.concatenate([X, unit(centres[[0, 3]] + 0.02 * rng.standard_normal((2, DIM))),
                          unit(rng.standard_normal((5, DIM)))])
    np.testing.assert_array_equal(loaded.predict(new), c.predict(new))


@pytest.mark.parametrize("name", NAMES)
def test_saved_directory_has_no_pickle(name, fitted, tmp_path):
    fitted[name].save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["type"] == name and manifest["format_version"] == 1 and "params" in manifest
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["manifest.json", *(f"{a}.npy" for a in manifest["arrays"])])
    for f in tmp_path.glob("*.npy"):
        arr = np.load(f, allow_pickle=False)
        assert arr.dtype != object


@pytest.mark.parametrize("name", NAMES)
def test_bounded_fit_sample_still_labels_every_row(name, blobs):
    X, y, _ = blobs
    params = dict(PARAMS[name], max_fit_samples=100)
    if name == "kmeans":
        params["search_max_samples"] = 60
    c = make_clusterer(name, seed=0, **params).fit(X)
    assert c.labels_.shape == (len(X),)
    assert exact_partition(c.labels_, y)
    np.testing.assert_array_equal(c.predict(X), c.labels_)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_named(name, blobs, fitted):
    X, _, _ = blobs
    c = make_clusterer(name, seed=0, **PARAMS[name])
    with pytest.raises(ClusterInputError, match=r"must be 2-D \(n, d\); got shape \(32,\)"):
        c.fit(X[0])
    with pytest.raises(ClusterInputError, match="is empty"):
        c.fit(np.zeros((0, DIM), dtype=np.float32))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ClusterInputError, match=r"1 row\(s\) with NaN or inf \(first: row 3\)"):
        c.fit(bad)
    with pytest.raises(ClusterInputError, match=r"unit L2 norm.*first: row 0, norm 2"):
        c.fit(X * 2)
    with pytest.raises(ClusterInputError, match="has dtype <U1"):
        c.fit(np.array([["a", "b"]]))
    with pytest.raises(ClusterNotFittedError, match=r"predict\(\) called before fit\(\)"):
        c.predict(X)
    with pytest.raises(ClusterInputError, match="has 16 columns but the clusterer was fitted on d=32"):
        fitted[name].predict(unit(np.ones((2, 16))))
    err = pytest.raises(ValueError, fitted[name].predict, X[0]).value
    assert isinstance(err, CompassError)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_lists_valid_ones(name):
    with pytest.raises(ClusterParamError, match=r"unknown parameter\(s\) \['bogus'\]; valid ones are \["):
        make_clusterer(name, bogus=1)


# ---------------------------------------------------------------------------------------------- factory, loading


def test_make_clusterer_unknown_name_lists_the_valid_ones():
    with pytest.raises(ClusterParamError) as e:
        make_clusterer("dbscan")
    assert str(e.value) == (
        "The 'name' parameter of make_clusterer must be one of "
        "['agglomerative', 'butina', 'hdbscan', 'kmeans']. Got 'dbscan' instead."
    )


def test_param_errors_name_parameter_value_and_fix():
    with pytest.raises(ClusterParamError) as e:
        make_clusterer("kmeans", k_range=[])
    assert str(e.value) == (
        "The 'k_range' parameter of KMeansClusterer must be a non-empty sequence of ints >= 2 "
        "(e.g. range(10, 121, 5)). Got [] instead."
    )
    with pytest.raises(ClusterParamError, match="The 'threshold_range' parameter of ButinaClusterer"):
        make_clusterer("butina", threshold_range=(0.9, 0.8))
    with pytest.raises(ClusterParamError, match="The 'n_clusters' parameter of AgglomerativeClusterer"):
        make_clusterer("agglomerative", n_clusters=10, max_fit_samples=5)
    with pytest.raises(ClusterParamError, match="The 'algorithm' parameter of HDBSCANClusterer"):
        make_clusterer("hdbscan", algorithm="fast")


def test_load_errors(tmp_path, fitted):
    with pytest.raises(ClusterLoadError, match="no manifest.json"):
        load_clusterer(tmp_path)
    fitted["kmeans"].save(tmp_path / "km")
    m = json.loads((tmp_path / "km/manifest.json").read_text())
    m["format_version"] = 99
    (tmp_path / "km/manifest.json").write_text(json.dumps(m))
    with pytest.raises(ClusterLoadError, match="format_version 99, this compass reads 1"):
        load_clusterer(tmp_path / "km")


def test_hdbscan_load_refuses_a_refit_that_does_not_reproduce(tmp_path, fitted):
    fitted["hdbscan"].save(tmp_path)
    labels = np.load(tmp_path / "fit_labels.npy")
    labels[0] = (labels[0] + 1) % K_TRUE
    np.save(tmp_path / "fit_labels.npy", labels)
    with pytest.raises(ClusterLoadError, match="did not reproduce fit_labels.npy"):
        load_clusterer(tmp_path)


# ---------------------------------------------------------------------------------------------- k-means


def test_kmeans_picks_planted_k_by_silhouette(fitted):
    c = fitted["kmeans"]
    assert c.chosen_k_ == K_TRUE
    assert sorted(c.silhouette_scores_) == list(range(2, 9))
    assert max(c.silhouette_scores_, key=c.silhouette_scores_.get) == K_TRUE


def test_kmeans_fixed_k_skips_search_and_k_range_is_clipped(blobs):
    X, y, _ = blobs
    c = make_clusterer("kmeans", n_clusters=K_TRUE).fit(X)
    assert c.silhouette_scores_ == {} and c.chosen_k_ == K_TRUE and exact_partition(c.labels_, y)
    # K values >= the rows scored are skipped, not an error.
    small = make_clusterer("kmeans", k_range=[2, 3, 500], silhouette_sample=50).fit(X)
    assert sorted(small.silhouette_scores_) == [2, 3]
    with pytest.raises(ClusterInputError, match=r"no K in k_range \[10, 15\] is below the 8 rows"):
        make_clusterer("kmeans", k_range=[10, 15]).fit(X[:8])


def test_kmeanspp_seeds_one_per_blob(blobs):
    X, y, _ = blobs
    seeds = kmeanspp_init(X, K_TRUE, np.random.default_rng(0))
    rows = [int(np.flatnonzero((s == X).all(axis=1))[0]) for s in seeds]
    assert sorted(y[rows]) == list(range(K_TRUE))


def _two_centroid_kmeans() -> KMeansClusterer:
    X = np.array([[1, 0], [1, 0], [-1, 0], [-1, 0]], dtype=np.float32)
    c = make_clusterer("kmeans", n_clusters=2).fit(X)
    assert sorted(map(tuple, c.centroids_.tolist())) == [(-1.0, 0.0), (1.0, 0.0)]
    return c


def test_kmeans_update_eq2_hand_computed():
    c = _two_centroid_kmeans()
    right = int(np.argmax(c.centroids_[:, 0]))
    left = 1 - right
    # μ_right = (1,0); batch row (0.6, 0.8) goes right; η = 0.5:
    # 0.5*(1,0) + 0.5*(0.6,0.8) = (0.8, 0.4) → normalised (2, 1)/√5. μ_left got nothing: unchanged.
    labels = c.update(np.array([[0.6, 0.8]], dtype=np.float32), eta=0.5)
    assert labels.tolist() == [right]
    np.testing.assert_allclose(c.centroids_[right], [2 / math.sqrt(5), 1 / math.sqrt(5)], atol=1e-7)
    assert c.centroids_[left].tolist() == [-1.0, 0.0]
    assert c.centroids_.dtype == np.float32


def test_kmeans_update_eq2_batch_mean_and_eta_one():
    c = _two_centroid_kmeans()
    right = int(np.argmax(c.centroids_[:, 0]))
    left = 1 - right
    # Right gets (0.6,0.8) and (0.8,-0.6): mean (0.7, 0.1); η = 0.25: 0.75*(1,0) + 0.25*(0.7,0.1) = (0.925, 0.025).
    # Left gets (-0.6, 0.8): 0.75*(-1,0) + 0.25*(-0.6,0.8) = (-0.9, 0.2).
    batch = np.array([[0.6, 0.8], [0.8, -0.6], [-0.6, 0.8]], dtype=np.float32)
    assert c.update(batch, eta=0.25).tolist() == [right, right, left]
    np.testing.assert_allclose(c.centroids_[right], np.array([0.925, 0.025]) / math.hypot(0.925, 0.025), atol=1e-7)
    np.testing.assert_allclose(c.centroids_[left], np.array([-0.9, 0.2]) / math.hypot(0.9, 0.2), atol=1e-7)
    # η = 1 replaces a centroid by the normalised batch mean.
    c = _two_centroid_kmeans()
    c.update(np.array([[0.6, 0.8], [0.8, 0.6]], dtype=np.float32), eta=1.0)
    np.testing.assert_allclose(c.centroids_[right], [math.sqrt(0.5), math.sqrt(0.5)], atol=1e-7)
    with pytest.raises(ClusterParamError, match=r"The 'eta' parameter of KMeansClusterer.update must be a float in \(0, 1\]. Got 0 instead."):
        c.update(batch, eta=0)
    with pytest.raises(ClusterNotFittedError):
        KMeansClusterer().update(batch, eta=0.5)


# ---------------------------------------------------------------------------------------------- HDBSCAN


def test_hdbscan_outliers_are_noise_and_new_points_join_their_blob(blobs):
    X, y, centres = blobs
    rng = np.random.default_rng(3)
    outliers = unit(rng.standard_normal((3, DIM)))
    assert (outliers @ centres.T).max() < 0.6
    c = make_clusterer("hdbscan").fit(np.concatenate([X, outliers]))
    assert c.labels_[-3:].tolist() == [NOISE] * 3
    assert exact_partition(c.labels_[:-3], y)
    near = unit(centres + 0.02 * rng.standard_normal(centres.shape))  # one new point by each blob centre
    blob_label = [int(np.bincount(c.labels_[:-3][y == k]).argmax()) for k in range(K_TRUE)]
    assert c.predict(near).tolist() == blob_label
    # "Far" for approximate_predict means farther than the blobs are from each other (they merge at cos ~ 0):
    # a point's lambda must fall below every cluster's birth lambda. Directions opposite all blobs are.
    away = unit(-centres.sum(axis=0))
    far = unit(np.stack([away, away + 0.05 * rng.standard_normal(DIM)]))
    assert (far @ centres.T).max() < -0.2
    assert c.predict(far).tolist() == [NOISE, NOISE]
    best = max(c.grid_scores_, key=lambda r: r["score"])
    assert (best["min_cluster_size"], best["min_samples"]) == (c.min_cluster_size_, c.min_samples_)
    assert len(c.grid_scores_) == 12


# ---------------------------------------------------------------------------------------------- Butina


def test_butina_hand_computed_claims():
    # Unit vectors at 0°, 10°, 20°, 90°, 100°, 200°; neighbours within 15° (cos ≥ cos 15°).
    # Counts 2,3,2,2,2,1: 10° is the first centre and claims 0°,10°,20°; 90° claims 90°,100°; 200° is a singleton.
    deg = np.radians([0, 10, 20, 90, 100, 200])
    X = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)
    t = math.cos(math.radians(15))
    assert butina(NeighbourLists(X, t, 1000), len(X), t).tolist() == [0, 0, 0, 1, 1, NOISE]
    c = make_clusterer("butina", threshold=t).fit(X)
    assert c.labels_.tolist() == [0, 0, 0, 1, 1, NOISE] and c.threshold_ == t
    assert c.coverage_ == 5 / 6


def test_butina_search_meets_the_95_percent_rule(blobs, fitted):
    X, _, _ = blobs
    c = fitted["butina"]
    # Every threshold in range keeps each blob whole, so the search stops at the top of the range.
    assert c.threshold_ == 0.95 and c.coverage_ == 1.0
    # Looser blobs: high thresholds leave singletons, so the bisection has to come down.
    Xw, _, _ = make_blobs(sigma=0.08, seed=1)
    w = make_clusterer("butina").fit(Xw)
    assert 0.70 < w.threshold_ < 0.95
    assert w.coverage_ >= 0.95 and np.mean(w.labels_ != NOISE) == w.coverage_
    trace = {t: (cov, k) for t, cov, k in w.search_trace_}
    assert trace[0.95][0] < 0.95  # the top of the range breaks the rule...
    feasible = {t: k for t, (cov, k) in trace.items() if cov >= 0.95}
    assert w.threshold_ in feasible and feasible[w.threshold_] == max(feasible.values())  # ...the most clusters wins


def test_butina_range_that_cannot_meet_the_rule_uses_its_low_end(blobs):
    X, _, _ = blobs
    c = make_clusterer("butina", threshold_range=(0.999, 0.9999)).fit(X)
    assert c.threshold_ == 0.999 and c.coverage_ < 0.95


def test_butina_neighbour_budget_is_enforced(blobs):
    X, _, _ = blobs
    with pytest.raises(ClusterInputError, match="more than 100 neighbour pairs at cosine >= 0.700"):
        make_clusterer("butina", max_neighbour_pairs=100).fit(X)


def test_agglomerative_fixed_k(blobs):
    X, y, _ = blobs
    c = make_clusterer("agglomerative", n_clusters=K_TRUE).fit(X)
    assert c.n_clusters_ == K_TRUE and exact_partition(c.labels_, y) and c.silhouette_scores_ == {}


def test_saved_params_round_trip_through_json(tmp_path, fitted):
    fitted["kmeans"].save(tmp_path)
    params = json.loads((Path(tmp_path) / "manifest.json").read_text())["params"]
    assert params["k_range"] == list(range(2, 9)) and params["seed"] == 0
