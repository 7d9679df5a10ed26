"""Formula-level tests of compass.select on small hand-computed cases (§3.1.1-3.2.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compass.select import (
    SelectionConfig,
    SelectionError,
    boundary_scores,
    calibrate_tau_sim,
    centroid_distances,
    cluster_stats,
    deterministic_quotas,
    mix,
    neighbour_graph,
    proto_scores,
    reallocate,
    sample_cluster,
    select,
    stochastic_quotas,
    total_budget,
    training_set,
)
from compass.select.diversity import ClusterNeighbours
from compass.select.report import build_report
from compass.select.scores import alpha


def unit(*rows: tuple[float, ...]) -> np.ndarray:
    X = np.asarray(rows, dtype=np.float64)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- config


def test_config_defaults_and_messages() -> None:
    c = SelectionConfig()
    assert (c.budget, c.method, c.eps, c.tau_sim, c.max_repeats, c.decay, c.langsim_k) == (
        0.8,
        "compass",
        1.0,
        None,
        3,
        0.5,
        3,
    )
    with pytest.raises(
        SelectionError,
        match=r"The 'budget' parameter of SelectionConfig must be a float in \(0, 10\]"
        r"\. Got -1 instead\.",
    ):
        SelectionConfig(budget=-1)
    for bad in (
        {"method": "nope"},
        {"eps": 0},
        {"tau_sim": 1.5},
        {"delta": -0.1},
        {"max_repeats": 0},
        {"decay": 0},
        {"langsim_k": 0},
        {"seed": -1},
        {"budget": True},
        {"boundary": "far"},
    ):
        with pytest.raises(ValueError, match=repr(next(iter(bad)))):
            SelectionConfig(**bad)
    assert "budget" in SelectionConfig.help() and c.boundary == "near"


# ---------------------------------------------------------------- §3.1.1 / §3.2.2


def test_cluster_stats_hand_computed() -> None:
    # K = 5; n_t = [3, 1, 0, 2, 0 | noise 1], n_eval = [1, 1, 2, 0, 0 | noise 1]
    lt = np.array([0, 0, 0, 1, 3, 3, -1])
    le = np.array([0, 2, 2, 1, -1])
    la = np.array([0, 1, 1, 2, 4, 4, 4, -1])
    s = cluster_stats(lt, le, la, 5)
    assert s.n_t.tolist() == [3, 1, 0, 2, 0, 1]
    assert s.n_eval.tolist() == [1, 1, 2, 0, 0, 1]
    assert s.n_aux.tolist() == [1, 2, 1, 0, 3, 1]
    # w_k = n_eval / (n_t + 1); zero where n_eval = 0; noise bucket 0 by default
    np.testing.assert_allclose(s.w, [1 / 4, 1 / 2, 2.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(s.w_tilde, np.array([1, 2, 8, 0, 0, 0]) / 11)
    # P_eval uses the eval total (5), P_train the train total (7)
    np.testing.assert_allclose(s.p_eval, np.array([1, 1, 2, 0, 0, 1]) / 5)
    assert s.rho[0] == pytest.approx((1 / 5) / (3 / 7))
    assert s.rho[1] == pytest.approx(7 / 5)
    assert s.rho[2] == math.inf  # P_train = 0 < P_eval: a hole in D_t
    assert s.rho[3] == 0.0
    assert math.isnan(s.rho[4])  # neither set visits cluster 4
    # eps changes the smoothing; sample_noise gives the noise bucket a weight like a cluster
    s2 = cluster_stats(lt, le, la, 5, eps=0.5, sample_noise=True)
    np.testing.assert_allclose(s2.w, [1 / 3.5, 1 / 1.5, 4.0, 0.0, 0.0, 1 / 1.5])
    assert s2.w_tilde.sum() == pytest.approx(1.0)


def test_cluster_without_pool_candidates_leaves_the_normalisation() -> None:
    # K = 3: cluster 2 has eval rows but no pool rows. n_t = [1, 0, 1], n_eval = [1, 1, 2]: w = [1/2, 1/1, 2/2];
    # w~ over clusters 0 and 1 only:
    # [0.5, 1] / 1.5 = [1/3, 2/3], so the whole budget lands where the pool can serve it
    lt = np.array([0, 2])
    le = np.array([0, 1, 2, 2])
    la = np.array([0, 0, 0, 1, 1, 1])
    s = cluster_stats(lt, le, la, 3)
    np.testing.assert_allclose(s.w, [0.5, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(s.w_tilde, [1 / 3, 2 / 3, 0.0, 0.0])
    # through the engine: |S| = round(0.8 * 5) = 4 even though the neediest cluster cannot be served
    rng = np.random.default_rng(0)
    centroids = np.eye(3, 8, dtype=np.float32)
    X_pool = (centroids[la] + rng.normal(0, 0.01, (6, 8))).astype(np.float32)
    X_pool /= np.linalg.norm(X_pool, axis=1, keepdims=True)
    X_train = np.repeat(centroids[:1], 5, axis=0)
    labels = (np.zeros(5, np.int64), le, la, centroids)
    sel = select(X_train, centroids[le], X_pool, SelectionConfig(budget=0.8, method="compass-d"), labels=labels)
    assert sel.total == 4
    assert sel.quotas.tolist() == [1, 3, 0, 0]
    assert sel.shortfall_clusters == []


def test_cluster_stats_rejects_out_of_range_labels() -> None:
    with pytest.raises(SelectionError, match="'labels_aux'.*Got 3"):
        cluster_stats(np.array([0]), np.array([0]), np.array([3]), 3)


# ---------------------------------------------------------------- quotas


def test_total_budget_rounds_half_up() -> None:
    assert [total_budget(0.8, 10), total_budget(0.25, 10), total_budget(0.05, 10), total_budget(2.0, 7)] == [
        8,
        3,
        1,
        14,
    ]


def test_deterministic_quotas_largest_remainder() -> None:
    # exact shares [10/11, 20/11, 80/11, 0] = [0.91, 1.82, 7.27, 0]: floors [0, 1, 7], 2 units to the top remainders
    assert deterministic_quotas(np.array([1, 2, 8, 0]) / 11, 10).tolist() == [1, 2, 7, 0]
    assert deterministic_quotas(np.full(4, 0.25), 2).tolist() == [1, 1, 0, 0]  # ties -> lower index
    assert deterministic_quotas(np.zeros(3), 5).tolist() == [0, 0, 0]


def test_stochastic_quotas_bounds_total_and_mean() -> None:
    w = np.array([0.3, 0.45, 0.25, 0.0])
    n, draws = 7, 4000
    exact = w * n  # [2.1, 3.15, 1.75, 0]
    rng = np.random.default_rng(0)
    qs = np.array([stochastic_quotas(w, n, rng) for _ in range(draws)])
    assert (qs.sum(axis=1) == n).all()
    assert (qs >= np.floor(exact)).all() and (qs <= np.ceil(exact)).all()
    assert (qs[:, 3] == 0).all()
    frac = exact - np.floor(exact)
    tol = 5 * np.sqrt(frac * (1 - frac) / draws) + 1e-12  # 5 standard errors of a Bernoulli mean
    assert (np.abs(qs.mean(axis=0) - exact) <= tol).all()


# w~ = [8, 2, 1, 0 | noise 0] / 11 and n_aux = [1, 3, 5, 6 | 4]: the reallocation cases below
REALLOC_W = np.array([8, 2, 1, 0, 0]) / 11
REALLOC_N = np.array([1, 3, 5, 6, 4])


def test_reallocate_fresh_first_then_repeats() -> None:
    # N = 10: quotas [7, 2, 1]. Cluster 0 delivers 3 * 1 = 3, 4 units left. Fresh round 1: rooms [0, 1, 4],
    # 4 * [2/3, 1/3] = [2.67, 1.33] -> [3, 1], capped at [1, 1]; round 2: 2 units, only cluster 2 has room -> +2.
    q10 = deterministic_quotas(REALLOC_W, 10)
    assert q10.tolist() == [7, 2, 1, 0, 0]
    assert reallocate(q10, REALLOC_W, REALLOC_N, 3).tolist() == [3, 3, 4, 0, 0]
    # N = 20: quotas [14, 4, 2]; delivered [3, 4, 2] (cluster 1: 3 rows, one repeat). Fresh: only cluster 2 has
    # room (3) -> 5. Repeats: 8 units, rooms [0, 5, 10], 8 * [2/3, 1/3] = [5.33, 2.67] -> [5, 3].
    q20 = deterministic_quotas(REALLOC_W, 20)
    assert q20.tolist() == [14, 4, 2, 0, 0]
    assert reallocate(q20, REALLOC_W, REALLOC_N, 3).tolist() == [3, 9, 8, 0, 0]
    # N = 40 > 3 * (1 + 3 + 5) = 27 that the clusters with w > 0 can supply: all full, 13 stay unmet;
    # clusters 3 (n_eval = 0) and noise never receive although they have rows
    assert reallocate(deterministic_quotas(REALLOC_W, 40), REALLOC_W, REALLOC_N, 3).tolist() == [3, 9, 15, 0, 0]
    # COMPASS-S rounding: round 1 caps cluster 1 at its one fresh row whatever the draw, so [3, 3, 4] every time
    for seed in range(5):
        assert reallocate(q10, REALLOC_W, REALLOC_N, 3, np.random.default_rng(seed)).tolist() == [3, 3, 4, 0, 0]
    # max_repeats = 1: no repeats at all; 10 > 1 + 3 + 5 so cluster 2 ends full at 5 and 1 unit is unmet
    assert reallocate(q10, REALLOC_W, REALLOC_N, 1).tolist() == [1, 3, 5, 0, 0]


# ---------------------------------------------------------------- §3.2.3 scores, eq. 1


def test_centroid_distances_and_scores() -> None:
    C = unit((1, 0), (0, 1))
    X = unit((1, 0), (0.6, 0.8), (0.8, 0.6), (0.6, 0.8))
    labels = np.array([0, 0, 0, -1])
    d_own, d_other = centroid_distances(X, labels, C, chunk=2)
    np.testing.assert_allclose(d_own, [0.0, 0.4, 0.2, 0.2], atol=1e-6)  # noise row -> nearest centroid (mu_1)
    np.testing.assert_allclose(d_other, [1.0, 0.2, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(proto_scores(d_own), [1.0, 1 / 1.4, 1 / 1.2, 1 / 1.2], atol=1e-6)
    # margins in cluster 0: [1, -0.2, 0.2] -> inverted min-max: [0, 1, 2/3]; a lone row gets 0.5
    groups = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(boundary_scores(d_own, d_other, groups), [0.0, 1.0, 2 / 3, 0.5], atol=1e-6)
    # boundary="margin": the formula literally, min-max without inversion: [1, 0, 1/3]; a lone row still 0.5
    literal = boundary_scores(d_own, d_other, groups, "margin")
    np.testing.assert_allclose(literal, [1.0, 0.0, 1 / 3, 0.5], atol=1e-6)
    with pytest.raises(SelectionError, match="'boundary' parameter of boundary_scores.*Got 'far'"):
        boundary_scores(d_own, d_other, groups, "far")


@pytest.mark.parametrize(("boundary", "second", "score"), [("near", 1, 0.875), ("margin", 2, 0.8125)])
def test_engine_boundary_orientation(boundary: str, second: int, score: float) -> None:
    # Cluster 0 (mu_0 = e0, other centroid e1), quota 2 = round(1.0 * |D_t|). Rows: r0 = e0 (d_own 0, margin 1),
    # r1 = (0.8, 0.6, 0) leans to e1 (d_own 0.2, margin 0.2), r2 = (0.8, 0, 0.6) leans away (d_own 0.2, margin 0.8).
    # s_proto = [1, 1/1.2, 1/1.2]. "near": s_boundary = 1 - (m - 0.2) / 0.8 = [0, 1, 1/4]; "margin": [1, 0, 3/4].
    # Step 0 (alpha 0) takes r0; step 1 (alpha 1/2): s = 0.75 s_proto + 0.25 s_boundary
    # near: r1 0.625 + 0.25 = 0.875 > r2 0.6875; margin: r1 0.625 < r2 0.625 + 0.1875 = 0.8125.
    C = unit((1, 0, 0), (0, 1, 0))
    Xp = unit((1, 0, 0), (0.8, 0.6, 0), (0.8, 0, 0.6), (0, 1, 0))
    labels = (np.array([1, 1]), np.array([0]), np.array([0, 0, 0, 1]), C)  # w = [1/1, 0/3]: all quota to 0
    config = SelectionConfig(budget=1.0, method="compass-d", delta=0.0, boundary=boundary)
    sel = select(unit((0, 1, 0), (0, 1, 0)), unit((1, 0, 0)), Xp, config, labels=labels)
    assert sel.pool_indices.tolist() == [0, second]
    np.testing.assert_allclose(sel.scores, [1.0, score], atol=1e-6)


def test_boundary_scores_single_centroid_is_neutral() -> None:
    d_own, d_other = centroid_distances(unit((1, 0), (0.6, 0.8)), np.array([0, 0]), unit((1, 0)))
    assert np.isnan(d_other).all()
    assert boundary_scores(d_own, d_other, np.array([0, 0])).tolist() == [0.5, 0.5]


def test_alpha_schedule_endpoints() -> None:
    p, b = np.array([0.9, 0.5]), np.array([0.1, 1.0])
    assert alpha(0, 4) == 0.0 and alpha(2, 4) == 0.5 and alpha(4, 4) == 1.0 and alpha(9, 4) == 1.0
    np.testing.assert_array_equal(mix(p, b, 0.0), p)  # step 0: pure s_proto
    np.testing.assert_array_equal(mix(p, b, 1.0), b)  # alpha = 1: pure s_boundary
    np.testing.assert_allclose(mix(p, b, 0.5), 0.75 * p + 0.25 * b)


def test_sampler_follows_alpha_schedule() -> None:
    # step 0 (alpha 0): argmax s_proto -> row 0 at 0.9. step 1 (alpha 1/2): s = 0.75 p + 0.25 b
    # = [., 0.625, 0.5] -> row 1, although s_proto alone would pick row 2.
    draw = sample_cluster(np.array([0.9, 0.5, 0.6]), np.array([0.0, 1.0, 0.2]), 2, None, greedy=True)
    assert draw.rows.tolist() == [0, 1]
    np.testing.assert_allclose(draw.scores, [0.9, 0.625])
    assert draw.counts.tolist() == [1, 1] and not draw.shortfall


# ---------------------------------------------------------------- diversity


def test_neighbour_penalty_changes_the_pick() -> None:
    X = unit((1, 0, 0), (0.99, 0.14, 0), (0.6, 0, 0.8))  # rows 0 and 1 are twins (cos 0.99)
    s = np.array([0.9, 0.85, 0.8])
    nb = ClusterNeighbours(X, tau_sim=0.95)
    assert nb(0).tolist() == [1] and nb(2).tolist() == []
    plain = sample_cluster(s, s, 2, None, greedy=True)
    assert plain.rows.tolist() == [0, 1]  # without delta the twin is next
    diverse = sample_cluster(s, s, 2, None, greedy=True, neighbours=nb, delta=0.25)
    assert diverse.rows.tolist() == [0, 2]  # 0.85 - 0.25 = 0.60 < 0.80
    np.testing.assert_allclose(diverse.scores, [0.9, 0.8])


def test_neighbour_graph_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    lims, nbrs = neighbour_graph(X, 0.8, chunk=16)
    sims = X @ X.T
    nb = ClusterNeighbours(X, 0.8)
    for i in range(len(X)):
        expect = [j for j in range(len(X)) if j != i and sims[i, j] > 0.8]
        assert nbrs[lims[i] : lims[i + 1]].tolist() == expect
        assert nb(i).tolist() == expect
    assert lims[-1] > 0  # the case is not vacuous


def test_calibrate_tau_sim_maps_the_paper_threshold() -> None:
    n = 50
    for b in (0.78, 0.0):
        X = np.zeros((n, n + 1))
        X[:, 0] = math.sqrt(b)
        X[np.arange(n), np.arange(1, n + 1)] = math.sqrt(1 - b)  # every pair has cosine exactly b
        tau = calibrate_tau_sim(X.astype(np.float32), np.random.default_rng(0))
        assert tau == pytest.approx(b + 0.9 * (1 - b), abs=1e-6)  # 0.978 for b = 0.78, 0.90 when centred


# ---------------------------------------------------------------- §3.2.3 shortfall


def test_shortfall_decay_is_half_per_pick() -> None:
    # quota 3 > 2 candidates. Row 0 (1.0) is picked, then 0.5 > x, then 0.25 against x:
    # x = 0.26 beats 0.5**2 = 0.25, x = 0.24 does not.
    a = sample_cluster(np.array([1.0, 0.26]), np.array([1.0, 0.26]), 3, None, greedy=True)
    assert a.rows.tolist() == [0, 1] and a.counts.tolist() == [2, 1] and a.shortfall
    b = sample_cluster(np.array([1.0, 0.24]), np.array([1.0, 0.24]), 3, None, greedy=True)
    assert b.rows.tolist() == [0] and b.counts.tolist() == [3]


def test_shortfall_caps_at_max_repeats() -> None:
    s = np.array([0.9, 0.5])
    d = sample_cluster(s, s, 10, np.random.default_rng(0))
    assert d.counts.tolist() == [3, 3] and d.total == 6  # 2 rows x 3 picks cannot fill 10
    d = sample_cluster(s, s, 10, np.random.default_rng(0), max_repeats=1)
    assert d.total == 2


# ---------------------------------------------------------------- engine


def toy_problem(seed: int = 0, n_pool: int = 300, K: int = 4, d: int = 8):
    """Four well-separated clusters; D_t sits in clusters 0-1, E_t in 1-2, nothing of E_t in cluster 3."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(K, d))
    C /= np.linalg.norm(C, axis=1, keepdims=True)

    def around(labels):
        X = C[labels] + 0.15 * rng.normal(size=(len(labels), d))
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)

    lt = np.array([0] * 12 + [1] * 3)
    le = np.array([1] * 5 + [2] * 5)
    lp = rng.integers(0, K, n_pool)
    return around(lt), around(le), around(lp), (lt, le, lp, C.astype(np.float32))


@pytest.mark.parametrize("method", ["compass", "compass-d", "no-cluster-weights", "no-instance-weights"])
def test_engine_compass_methods(method: str) -> None:
    Xt, Xe, Xp, labels = toy_problem()
    sel = select(Xt, Xe, Xp, SelectionConfig(budget=0.8, method=method), labels=labels)
    assert sel.total == 12 == sel.quotas.sum() == sel.selected_per_cluster.sum()  # round(0.8 * 15)
    assert len(set(sel.pool_indices.tolist())) == len(sel.pool_indices)
    assert (labels[2][sel.pool_indices] == sel.clusters).all()
    if method == "no-cluster-weights":
        assert sel.quotas.tolist() == [3, 3, 3, 3, 0]  # even over clusters with candidates, noise excluded
    else:
        # w = [0/13, 5/4, 5/1, 0] -> w~ = [0, 0.2, 0.8, 0]: 12 -> [0, 2.4, 9.6, 0]
        assert sel.quotas[[0, 3, 4]].tolist() == [0, 0, 0] and sel.quotas[1] in (2, 3)
        assert sel.selected_per_cluster[3] == 0
    if method == "no-instance-weights":
        assert np.isnan(sel.scores).all() and sel.tau_sim is None
    else:
        assert ((sel.scores > 0) & (sel.scores <= 1)).all() and sel.tau_sim is not None


def test_compass_d_reproducible_and_compass_s_seeded() -> None:
    Xt, Xe, Xp, labels = toy_problem()
    run = lambda **kw: select(Xt, Xe, Xp, SelectionConfig(**kw), labels=labels)  # noqa: E731
    d1, d2 = run(method="compass-d", seed=0), run(method="compass-d", seed=7)
    np.testing.assert_array_equal(d1.pool_indices, d2.pool_indices)  # no randomness at all
    np.testing.assert_array_equal(d1.scores, d2.scores)
    s1, s2, s3 = run(seed=1), run(seed=1), run(seed=2)
    np.testing.assert_array_equal(s1.pool_indices, s2.pool_indices)
    assert s1.pool_indices.tolist() != s3.pool_indices.tolist()


def test_compass_d_first_pick_is_most_prototypical() -> None:
    Xt, Xe, Xp, labels = toy_problem()
    sel = select(Xt, Xe, Xp, SelectionConfig(method="compass-d"), labels=labels)
    k = int(sel.clusters[0])
    members = np.flatnonzero(labels[2] == k)
    proto = 1 / (1 + (1 - Xp[members] @ labels[3][k]))
    assert sel.pool_indices[0] == members[np.argmax(proto)]
    assert sel.scores[0] == pytest.approx(proto.max(), abs=1e-6)


def test_engine_reports_shortfall() -> None:
    Xt, Xe, Xp, (lt, le, lp, C) = toy_problem(n_pool=40)
    lp = lp.copy()
    lp[lp == 2] = 3
    lp[:2] = 2  # cluster 2 (quota ~10) has 2 candidates
    # n_aux = [5, 14, 2, 19 | 0]; w~ = [0, 0.2, 0.8, 0]: 12 -> quotas [0, 2, 10, 0]. Cluster 2 delivers
    # 2 rows x max_repeats 3 = 6; the 4 left go to cluster 1 (the only other w > 0), which has 12 fresh rows.
    for method in ("compass-d", "compass"):
        sel = select(Xt, Xe, Xp, SelectionConfig(method=method), labels=(lt, le, lp, C))
        assert sel.quotas.tolist() == [0, 2, 10, 0, 0]
        assert sel.final_quotas.tolist() == sel.selected_per_cluster.tolist() == [0, 6, 6, 0, 0]
        assert sel.extra.tolist() == [0, 4, 0, 0, 0] and sel.total == 12
        assert sel.shortfall_clusters == [2] == sel.fell_short_clusters
        assert sel.counts[sel.clusters == 2].tolist() == [3, 3] and (sel.counts[sel.clusters != 2] == 1).all()


def realloc_problem():
    """K = 4 clusters on axes e0..e3 + 4 noise rows: n_t = [0, 1, 3, 0], n_eval = [2, 1, 1, 0],
    n_aux = [1, 3, 5, 6 | 4] (REALLOC_N): w = [2, 1/2, 1/4, 0] -> w~ = REALLOC_W; |D_t| = 4."""
    rng = np.random.default_rng(5)
    C = np.eye(4, 6, dtype=np.float32)
    lt, le = np.array([1, 2, 2, 2]), np.array([0, 0, 1, 2])
    lp = np.array([0] + [1] * 3 + [2] * 5 + [3] * 6 + [-1] * 4)

    def around(labels):
        X = np.where(labels[:, None] >= 0, C[np.maximum(labels, 0)], 0.5) + 0.05 * rng.normal(size=(len(labels), 6))
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)

    return around(lt), around(le), around(lp), (lt, le, lp, C)


@pytest.mark.parametrize(
    ("budget", "per_cluster", "extra", "shortfall"),
    [
        (2.5, [3, 3, 4, 0, 0], [0, 1, 3, 0, 0], [0]),  # N = 10, fresh rows suffice
        (5.0, [3, 9, 8, 0, 0], [0, 5, 6, 0, 0], [0, 1, 2]),  # N = 20, repeats needed in clusters 1 and 2
        (10.0, [3, 9, 15, 0, 0], [0, 2, 11, 0, 0], [0, 1, 2]),  # N = 40 > 27 the pool can supply
    ],
)
def test_engine_reallocates_unfilled_quota(budget, per_cluster, extra, shortfall) -> None:
    Xt, Xe, Xp, labels = realloc_problem()
    sel = select(Xt, Xe, Xp, SelectionConfig(budget=budget, method="compass-d"), labels=labels)
    n_total = total_budget(budget, 4)
    assert sel.quotas.tolist() == deterministic_quotas(REALLOC_W, n_total).tolist()
    assert sel.selected_per_cluster.tolist() == per_cluster == sel.final_quotas.tolist()
    assert sel.extra.tolist() == extra and sel.total == min(n_total, 27)
    assert sel.shortfall_clusters == shortfall and sel.fell_short_clusters == [0]
    assert sel.counts.max() <= 3 and sel.counts[sel.clusters == 0].tolist() == [3]
    assert (sel.counts[sel.clusters == 2] == 1).all() == (budget == 2.5)  # fresh rows before repeats
    report = build_report(sel, ["es"] * len(Xp), "it")
    c0, c1, c2 = report["clusters"][:3]
    assert (c0["quota"], c0["extra"], c0["unfilled"], c0["fell_short"], c0["selected"]) == (
        int(sel.quotas[0]), 0, int(sel.quotas[0]) - 3, True, 3,
    )  # fmt: skip
    assert (c1["extra"], c1["fell_short"], c2["extra"], c2["fell_short"]) == (extra[1], False, extra[2], False)
    assert report["summary"]["reallocated"] == sum(extra) and report["summary"]["fell_short_clusters"] == [0]
    assert report["summary"]["unmet"] == n_total - min(n_total, 27) and report["summary"]["selected"] == sel.total


def test_engine_reallocation_compass_s_seeded() -> None:
    # COMPASS-S at N = 10: any stochastic quotas (q0 in {7, 8}) end as [3, 3, 4] (see the reallocate test)
    Xt, Xe, Xp, labels = realloc_problem()
    for seed in range(4):
        sel = select(Xt, Xe, Xp, SelectionConfig(budget=2.5, seed=seed), labels=labels)
        assert sel.selected_per_cluster.tolist() == [3, 3, 4, 0, 0] and sel.fell_short_clusters == [0]


def test_baseline_sizes_and_langsim() -> None:
    Xt, Xe, Xp, labels = toy_problem()
    sizes = {m: select(Xt, Xe, Xp, SelectionConfig(method=m), labels=labels).total for m in ("target", "random", "all")}
    assert sizes == {"target": 0, "random": 12, "all": 300}
    r = select(Xt, Xe, Xp, SelectionConfig(method="random"))  # baselines need no clustering
    assert len(set(r.pool_indices.tolist())) == 12 and np.isnan(r.scores).all()
    from compass.select.langsim import most_similar

    langs = np.array(["pt", "it", "fr", "de", "ja", "es"])[np.arange(300) % 6]
    chosen = set(most_similar("es", langs.tolist(), 3))
    sel = select(
        Xt, Xe, Xp, SelectionConfig(method="langsim", budget=10.0), pool_langs=langs.tolist(), target_lang="es"
    )
    assert sel.total == 150  # 3 languages x 50 rows, under the cap of round(10 * 15)
    assert set(langs[sel.pool_indices].tolist()) == chosen and "es" not in chosen
    capped = select(Xt, Xe, Xp, SelectionConfig(method="langsim"), pool_langs=langs.tolist(), target_lang="es")
    assert capped.total == 12 and set(langs[capped.pool_indices].tolist()) <= chosen
    with pytest.raises(SelectionError, match="'pool_langs'"):
        select(Xt, Xe, Xp, SelectionConfig(method="langsim"), target_lang="es")


def test_engine_input_errors() -> None:
    Xt, Xe, Xp, labels = toy_problem()
    with pytest.raises(SelectionError, match="'labels' parameter of select"):
        select(Xt, Xe, Xp, SelectionConfig())
    with pytest.raises(SelectionError, match="'X_pool'.*L2-normalised.*row 0"):
        select(Xt, Xe, Xp * 2, SelectionConfig(), labels=labels)
    with pytest.raises(SelectionError, match="'pool_labels'"):
        select(Xt, Xe, Xp, SelectionConfig(), labels=(labels[0], labels[1], labels[2][:5], labels[3]))


def test_engine_with_clusterer_and_progress() -> None:
    Xt, Xe, Xp, (lt, le, lp, C) = toy_problem()

    class Fixed:  # stands in for compass.cluster: labels rows by their nearest centroid
        centroids_ = C
        n_clusters_ = len(C)

        def fit_predict(self, X):
            self.seen = len(X)
            return np.argmax(X @ C.T, axis=1)

    calls = []
    cl = Fixed()
    sel = select(Xt, Xe, Xp, SelectionConfig(), clusterer=cl, progress=lambda done, total: calls.append((done, total)))
    assert cl.seen == len(Xt) + len(Xe) + len(Xp)
    np.testing.assert_array_equal(sel.eval_labels, np.argmax(Xe @ C.T, axis=1))
    assert calls and calls[-1][0] == calls[-1][1] == int((sel.final_quotas > 0).sum())


def test_training_set_keeps_d_t_first_and_whole() -> None:
    Xt, Xe, Xp, (lt, le, lp, C) = toy_problem(n_pool=40)
    lp = lp.copy()
    lp[lp == 2] = 3
    lp[:2] = 2
    sel = select(Xt, Xe, Xp, SelectionConfig(), labels=(lt, le, lp, C))
    train = [f"t{i}" for i in range(len(Xt))]
    pool = [f"p{i}" for i in range(len(Xp))]
    out = training_set(train, pool, sel)
    assert out[: len(train)] == train
    assert len(out) == len(train) + sel.total
    assert sorted(out[len(train) :]) == sorted(
        f"p{i}" for i, c in zip(sel.pool_indices, sel.counts, strict=True) for _ in range(c)
    )
