"""fit_selection_clusters (§3.1.1, App. E): the clusters are fitted on exactly D_t ∪ E_t ∪ D_aux of one target.

Data: planted blobs on the unit sphere in 16-d, seeded; centres are random directions (pairwise cos < 0.6) and
members sit within cos > 0.97 of their centre, so every method must recover the planted partition. Small
k_range grids that contain the planted K keep the suite fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from compass.cluster import NOISE, load_clusterer, make_clusterer
from compass.cluster.hdbscan_ import dbcv_sample, exact_dbcv
from compass.select import ClusteringConfig, SelectionClusters, SelectionError, fit_selection_clusters, select
from compass.select.clusters import SELECTION_DEFAULTS
from compass.select.config import SelectionConfig

DIM = 16
FAST = {"k_range": range(2, 9)}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def centres(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    while True:
        C = unit(rng.standard_normal((k, DIM)))
        if (C @ C.T - np.eye(k)).max() < 0.6:
            return C


def blob(c: np.ndarray, n: int, rng: np.random.Generator, sigma: float = 0.03) -> np.ndarray:
    return unit(c + sigma * rng.standard_normal((n, DIM)))


@pytest.fixture(scope="module")
def parts():
    """Blobs 0-2 in every part; blob 3 only in the window (E_t); blob 4 only in the pool (D_aux)."""
    rng = np.random.default_rng(1)
    C = centres(5)
    Xt = np.concatenate([blob(C[0], 12, rng), blob(C[1], 12, rng), blob(C[2], 4, rng)])
    Xw = np.concatenate([blob(C[0], 6, rng), blob(C[1], 6, rng), blob(C[2], 6, rng), blob(C[3], 10, rng)])
    Xp = np.concatenate([blob(C[k], 15, rng) for k in (0, 1, 2, 4)])
    y = {"target": np.repeat([0, 1, 2], [12, 12, 4]), "window": np.repeat([0, 1, 2, 3], [6, 6, 6, 10]),
         "pool": np.repeat([0, 1, 2, 4], 15)}  # fmt: skip
    return Xt, Xw, Xp, y


def all_labels(r: SelectionClusters) -> np.ndarray:
    return np.concatenate([r.target, r.window, r.pool])


def test_kmeans_sees_exactly_target_window_pool_in_that_order(parts):
    Xt, Xw, Xp, y = parts
    r = fit_selection_clusters(Xt, Xw, Xp, ClusteringConfig("kmeans", FAST, seed=3))
    assert (r.target.shape, r.window.shape, r.pool.shape) == ((28,), (28,), (60,))
    assert r.target.dtype == np.int64 and r.centroids.dtype == np.float32
    assert r.centroids.shape == (5, DIM) and np.allclose(np.linalg.norm(r.centroids, axis=1), 1.0, atol=1e-5)
    # The same clusterer with the App. E defaults (n_init 10) on the stacked rows gives the same labels.
    direct = make_clusterer("kmeans", seed=3, **{**SELECTION_DEFAULTS["kmeans"], **FAST})
    assert np.array_equal(all_labels(r), direct.fit_predict(np.concatenate([Xt, Xw, Xp])))
    # Window-only and pool-only blobs get clusters of their own, absent from the other parts.
    (w_only,) = set(r.window[y["window"] == 3].tolist())
    (p_only,) = set(r.pool[y["pool"] == 4].tolist())
    assert w_only != p_only
    assert w_only not in set(r.target.tolist()) | set(r.pool.tolist())
    assert p_only not in set(r.target.tolist()) | set(r.window.tolist())
    truth = np.concatenate([y["target"], y["window"], y["pool"]])
    assert adjusted_rand_score(truth, all_labels(r)) == 1.0
    s = r.summary
    assert s["clusterer"] == "kmeans" and s["n_clusters"] == 5 and s["rows"] == {"target": 28, "window": 28, "pool": 60}
    assert s["rows_total"] == 116 and s["rows_fitted"] == 116 and s["noise_share"] == 0.0
    assert s["chosen"]["criterion"] == "silhouette" and s["chosen"]["K"] == 5 and s["chosen"]["candidates"] == 7
    assert s["params"]["n_init"] == 10 and s["notes"] == []
    assert max(s["chosen"]["scores"], key=s["chosen"]["scores"].get) == "5"
    json.dumps(s)  # JSON-able


def test_without_the_window_its_blob_has_no_cluster(parts):
    Xt, Xw, Xp, y = parts
    r = fit_selection_clusters(Xt, Xw[y["window"] != 3], Xp, ClusteringConfig("kmeans", FAST))
    assert r.summary["n_clusters"] == 4 and r.window.shape == (18,)


def test_a_row_moved_between_parts_keeps_its_cluster(parts):
    Xt, Xw, Xp, y = parts
    cfg = ClusteringConfig("kmeans", FAST, seed=0)
    a = fit_selection_clusters(Xt, Xw, Xp, cfg)
    # The first pool row (blob 0) moves to the end of D_t.
    b = fit_selection_clusters(np.concatenate([Xt, Xp[:1]]), Xw, Xp[1:], cfg)
    assert b.target.shape == (29,) and b.pool.shape == (59,)
    assert b.target[-1] == b.target[0]  # with the other blob-0 rows of D_t
    before = np.concatenate([a.target, a.window, a.pool[1:], a.pool[:1]])
    after = np.concatenate([b.target[:-1], b.window, b.pool, b.target[-1:]])
    assert adjusted_rand_score(before, after) == 1.0


@pytest.mark.parametrize("empty", [np.zeros((0, DIM), np.float32), np.zeros((0, 0), np.float32), []])
def test_empty_window_or_pool(parts, empty):
    Xt, Xw, Xp, y = parts
    no_window = fit_selection_clusters(Xt, empty, Xp, ClusteringConfig("kmeans", FAST))
    assert no_window.window.shape == (0,) and no_window.summary["rows"]["window"] == 0
    assert no_window.summary["n_clusters"] == 4  # blobs 0, 1, 2, 4
    no_pool = fit_selection_clusters(Xt, Xw, empty, ClusteringConfig("kmeans", FAST))
    assert no_pool.pool.shape == (0,) and no_pool.summary["n_clusters"] == 4  # blobs 0, 1, 2, 3
    only_target = fit_selection_clusters(Xt, empty, empty, ClusteringConfig("kmeans", FAST))
    assert adjusted_rand_score(y["target"], only_target.target) == 1.0


def test_no_rows_and_fewer_than_three_rows():
    none = fit_selection_clusters(np.zeros((0, DIM)), np.zeros((0, 0)), np.zeros((0, DIM)))
    assert none.summary["n_clusters"] == 0 and none.centroids.shape == (0, DIM) and none.target.shape == (0,)
    C = centres(2)
    one = fit_selection_clusters(C[:1], np.zeros((0, DIM)), np.zeros((0, DIM)))
    assert one.target.tolist() == [0] and np.allclose(one.centroids, C[:1])
    two = fit_selection_clusters(C[:1], C[1:], np.zeros((0, 0)), ClusteringConfig("hdbscan"))
    assert two.target.tolist() == [0] and two.window.tolist() == [0] and two.centroids.shape == (1, DIM)
    assert np.allclose(two.centroids[0], unit(C.sum(axis=0)), atol=1e-6)
    assert two.summary["notes"] == ["2 row(s): too few to choose a model; one cluster"]


@pytest.mark.parametrize("name", ["kmeans", "hdbscan", "agglomerative", "butina"])
@pytest.mark.parametrize("n", [3, 4, 7, 12, 30])
def test_tiny_inputs_never_fail(name, n):
    rng = np.random.default_rng(n)
    X = blob(centres(3)[rng.integers(3, size=n)], n, rng, sigma=0.05)
    X[-1] = X[0]  # a duplicate row as well
    r = fit_selection_clusters(X[: n // 2], X[n // 2 : n // 2 + 1], X[n // 2 + 1 :], ClusteringConfig(name))
    labels = all_labels(r)
    assert labels.shape == (n,) and r.centroids.shape == (r.summary["n_clusters"], DIM)
    assert 1 <= r.summary["n_clusters"] <= n and labels.max() == r.summary["n_clusters"] - 1
    assert set(labels.tolist()) <= set(range(r.summary["n_clusters"])) | {NOISE}


def test_small_n_clips_the_grids():
    rng = np.random.default_rng(0)
    X = blob(centres(3)[np.arange(12) % 3], 12, rng)
    km = fit_selection_clusters(X[:4], X[4:8], X[8:], ClusteringConfig("kmeans"))
    assert km.summary["params"]["k_range"] == [10]  # App. E's grid, K < 12 rows
    assert km.summary["notes"] == ["k_range clipped to K < 12 rows scored: 10..10"]
    tiny = fit_selection_clusters(X[:3], X[3:5], X[5:7], ClusteringConfig("kmeans"))
    assert tiny.summary["params"]["k_range"] == [2, 3, 4, 5, 6]
    assert tiny.summary["notes"] == ["no K of k_range below the 7 rows scored: K searched over 2..6"]
    hd = fit_selection_clusters(X[:4], X[4:8], X[8:], ClusteringConfig("hdbscan"))
    assert hd.summary["params"]["min_cluster_sizes"] == [5, 10] and hd.summary["params"]["min_samples"] == [1, 5, 10]
    fixed = fit_selection_clusters(X[:2], X[2:3], X[3:4], ClusteringConfig("agglomerative", {"n_clusters": 9}))
    assert fixed.summary["n_clusters"] == 4 and fixed.summary["notes"] == ["n_clusters 9 > 4 rows fitted: clipped to 4"]


@pytest.mark.parametrize(
    ("name", "params"),
    [("kmeans", FAST), ("hdbscan", {}), ("agglomerative", FAST), ("butina", {})],
)
def test_every_clusterer_recovers_the_blobs(parts, name, params):
    Xt, Xw, Xp, y = parts
    r = fit_selection_clusters(Xt, Xw, Xp, ClusteringConfig(name, params))
    truth = np.concatenate([y["target"], y["window"], y["pool"]])
    assert r.summary["clusterer"] == name and r.summary["n_clusters"] == 5
    assert r.summary["noise_share"] == 0.0 and adjusted_rand_score(truth, all_labels(r)) == 1.0


def test_all_noise_falls_back_to_one_cluster():
    rng = np.random.default_rng(0)
    X = unit(rng.standard_normal((20, DIM)))  # random directions: no two within cos 0.999
    r = fit_selection_clusters(X[:10], X[10:15], X[15:], ClusteringConfig("butina", {"threshold": 0.999}))
    assert all_labels(r).tolist() == [0] * 20 and r.centroids.shape == (1, DIM)
    assert r.summary["notes"] == ["butina found no cluster (every row noise): one cluster of all rows"]


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"clusterer": "dbscan"}, ["'clusterer' parameter of ClusteringConfig", "kmeans, hdbscan", "'dbscan'"]),
        ({"params": {"n_clusterz": 3}}, ["'params' parameter of ClusteringConfig", "n_clusters", "['n_clusterz']"]),
        ({"clusterer": "hdbscan", "params": {"n_clusters": 3}}, ["hdbscan parameters", "min_cluster_sizes"]),
        ({"params": {"n_init": 0}}, ["ClusteringConfig.params", "'n_init' parameter of KMeansClusterer",
                                     "an int >= 1", "Got 0"]),
        ({"clusterer": "hdbscan", "params": {"dbcv": "fast"}}, ["'dbcv' parameter", "relative", "'fast'"]),
        ({"params": [("n_init", 3)]}, ["'params' parameter of ClusteringConfig", "a mapping"]),
        ({"seed": -1}, ["'seed' parameter of ClusteringConfig", "an int >= 0", "Got -1"]),
    ],
)
def test_bad_config_names_field_value_and_fix(kwargs, fragments):
    with pytest.raises(SelectionError) as e:
        ClusteringConfig(**kwargs)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_config_copies_params():
    params = {"n_clusters": 3}
    cfg = ClusteringConfig("kmeans", params)
    params["n_clusters"] = 4
    assert cfg.params == {"n_clusters": 3}


def test_inputs_of_different_dimensions_are_refused(parts):
    Xt, Xw, Xp, _ = parts
    with pytest.raises(ValueError, match="different dimensions"):
        fit_selection_clusters(Xt, Xw[:, :8] / np.linalg.norm(Xw[:, :8], axis=1, keepdims=True), Xp)


@pytest.mark.parametrize("dbcv", ["relative", "exact"])
def test_hdbscan_dbcv_kind_is_selectable_and_recorded(parts, dbcv):
    Xt, Xw, Xp, y = parts
    r = fit_selection_clusters(Xt, Xw, Xp, ClusteringConfig("hdbscan", {"dbcv": dbcv}))
    chosen = r.summary["chosen"]
    assert chosen["dbcv"] == dbcv and chosen["candidates"] == 12 and len(chosen["grid"]) == 12
    assert ("dbcv_exact" in chosen["grid"][0]) == (dbcv == "exact")
    assert (chosen["min_cluster_size"], chosen["min_samples"]) == (5, 1)  # the first cell of the best score
    assert chosen["dbcv_sample_rows"] == (116 if dbcv == "exact" else None)  # every fit row is distinct
    assert chosen["score"] == pytest.approx(chosen["dbcv_value"])  # no noise, so no penalty
    assert r.summary["n_clusters"] == 5


def test_exact_and_relative_dbcv_differ_and_both_are_kept(parts):
    Xt, Xw, Xp, _ = parts
    X = np.concatenate([Xt, Xw, Xp])
    c = make_clusterer("hdbscan", dbcv="exact").fit(X)
    rows = c.grid_scores_
    assert all(r["dbcv"] == r["dbcv_exact"] for r in rows)
    assert all(np.isfinite(r["dbcv_exact"]) and np.isfinite(r["dbcv_relative"]) for r in rows)
    assert any(abs(r["dbcv_exact"] - r["dbcv_relative"]) > 1e-3 for r in rows)
    rel = make_clusterer("hdbscan").fit(X)
    assert all("dbcv_exact" not in r for r in rel.grid_scores_)
    assert [r["dbcv"] for r in rel.grid_scores_] == [r["dbcv_relative"] for r in rows]


def test_exact_dbcv_survives_duplicate_rows():
    # The package's all-points core distance divides by zero on repeated rows; the sample drops repeats.
    rng = np.random.default_rng(0)
    C = centres(3)
    X = np.concatenate([blob(C[k], 20, rng) for k in range(3)])
    X = np.concatenate([X, np.repeat(X[:1], 15, axis=0), np.repeat(X[25:26], 15, axis=0)])
    labels = np.concatenate([np.repeat([0, 1, 2], 20), np.zeros(15, int), np.ones(15, int)])
    sample = dbcv_sample(X, 1000, rng)
    assert sample.size == 60
    value = exact_dbcv(X[sample].astype(np.float64), labels[sample])
    assert 0.5 < value <= 1.0
    # One cluster left after dropping the sparse ones: undefined.
    assert np.isnan(exact_dbcv(X[:21].astype(np.float64), np.array([0] * 20 + [1])))


def test_exact_dbcv_sample_is_bounded_and_seeded():
    rng = np.random.default_rng(0)
    X = unit(rng.standard_normal((50, DIM)))
    a = dbcv_sample(X, 10, np.random.default_rng(5))
    assert a.size == 10 and np.array_equal(a, np.sort(a))
    assert np.array_equal(a, dbcv_sample(X, 10, np.random.default_rng(5)))


def test_hdbscan_exact_save_load_round_trip(tmp_path, parts):
    Xt, Xw, Xp, _ = parts
    X = np.concatenate([Xt, Xw, Xp])
    c = make_clusterer("hdbscan", dbcv="exact", dbcv_max_samples=50, noise_penalty=0.0, seed=2).fit(X)
    c.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"]["dbcv"] == "exact" and manifest["params"]["dbcv_max_samples"] == 50
    assert manifest["state"]["dbcv_sample_rows"] == 50
    loaded = load_clusterer(tmp_path)
    assert loaded.config == c.config and loaded.grid_scores_ == json.loads(json.dumps(manifest["state"]["grid_scores"]))
    assert loaded.score_ == pytest.approx(c.score_) and loaded.dbcv_sample_rows_ == 50
    assert np.array_equal(loaded.predict(X), c.predict(X))


@pytest.mark.parametrize("name", ["kmeans", "hdbscan"])
def test_same_seed_same_clusters(parts, name):
    Xt, Xw, Xp, _ = parts
    rng = np.random.default_rng(7)
    noisy = [unit(X + 0.3 * rng.standard_normal(X.shape)) for X in (Xt, Xw, Xp)]  # overlapping blobs
    cfg = ClusteringConfig(name, FAST if name == "kmeans" else {"dbcv": "exact", "dbcv_max_samples": 40}, seed=4)
    a = fit_selection_clusters(*noisy, cfg)
    b = fit_selection_clusters(*noisy, cfg)
    assert np.array_equal(all_labels(a), all_labels(b)) and np.array_equal(a.centroids, b.centroids)
    assert {k: v for k, v in a.summary.items() if k != "seconds"} == {
        k: v for k, v in b.summary.items() if k != "seconds"
    }


def test_labels_feed_select(parts):
    Xt, Xw, Xp, y = parts
    r = fit_selection_clusters(Xt, Xw, Xp, ClusteringConfig("kmeans", FAST))
    sel = select(Xt, Xw, Xp, SelectionConfig(budget=1.0, method="compass-d", seed=0), labels=r.labels)
    picked = y["pool"][sel.pool_indices]
    # §3.2.2: w_k = 0 where n_eval^k = 0, so the pool-only blob 4 (no E_t rows) is never picked; |S| = B |D_t|.
    assert sel.total == 28 and 4 not in set(picked.tolist())
