"""compass/adapt/plan.py: the explicit data plan of an update, on hand-built 3-d cases.

Rows are unit vectors near the axes: axis 0 = the old topic (D_t), axis 1 = the new one (the window), axis 2 =
off-topic. The monitoring codebook and the selection clusters are both "nearest axis among 0 and 1" unless a case
says otherwise, so every count is checked by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from compass.adapt import AdaptError
from compass.adapt.gate import gate
from compass.adapt.plan import PlanSettings, WindowRow, plan_update, target_holdout
from compass.data import Record

CENTROIDS = np.eye(2, 3, dtype=np.float32)


def unit(axes: list[int], seed: int) -> np.ndarray:
    if not axes:
        return np.zeros((0, 3), np.float32)
    x = np.eye(3, dtype=np.float32)[axes] + np.random.default_rng(seed).uniform(0, 0.1, (len(axes), 3))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def assign(X: np.ndarray) -> np.ndarray:
    return np.argmax(X @ CENTROIDS.T, axis=1) if len(X) else np.zeros(0, np.int64)


def clusters(Xt, Xr, Xp):
    return SimpleNamespace(target=assign(Xt), window=assign(Xr), pool=assign(Xp), centroids=CENTROIDS,
                           summary={"clusterer": "by hand", "n_clusters": 2})


def make(n_target=10, window=(), pool_axes=(1, 1, 1, 1, 0, 0), **kw):
    """D_t on axis 0; ``window`` = list of (axis, labelled); pool rows on ``pool_axes``."""
    target = [Record(id=f"t{i}", lang="it", text=f"old {i}", response=f"r{i}") for i in range(n_target)]
    rows = [WindowRow(f"q{i}", f"new {i}", f"a{i}" if lab else None) for i, (_, lab) in enumerate(window)]
    pool = [Record(id=f"p{i}", lang="es", text=f"pool {i}") for i in range(len(pool_axes))]
    Xt, Xr, Xp = unit([0] * n_target, 1), unit([a for a, _ in window], 2), unit(list(pool_axes), 3)
    settings = kw.pop("settings", PlanSettings(budget=0.5, seed=7))
    return plan_update("it", target, Xt, assign(Xt), rows, Xr, assign(Xr), pool, Xp, assign(Xp), CENTROIDS,
                       settings=settings, clusters=kw.pop("clusters", clusters(Xt, Xr, Xp)), **kw)


WINDOW = [(1, False)] * 6 + [(1, True)] * 4  # 10 new-topic queries, 4 of them labelled


def gate_ids(p) -> set[str]:
    g = p.data["gate"]
    return set(g["adaptation"]) | set(g["retention"]["anchors"]) | set(g["retention"]["file"]) | set(
        g["retention"]["targets"])


def test_every_d_t_row_trains_and_no_gate_row_does():
    p = make(window=WINDOW, prev_anchors=[("t3", "old 3\nr3"), ("p9", "an old pick")],
             gate_rows=[Record(id="g0", lang="it", text="kept aside")])
    train = {e.id for e in p.train}
    assert set(p.data["train"]["target"]) == {f"t{i}" for i in range(10)} <= train
    assert not gate_ids(p) & train
    assert p.data["gate"]["retention"] == {"anchors": ["p9"], "file": ["g0"], "targets": []}  # t3 trains: not a gate
    assert p.retention == ["an old pick", "kept aside"]
    assert len(p.data["gate"]["adaptation"]) == 2 and len(p.adaptation) == 2  # 20% of 10 window rows


@pytest.mark.parametrize(("train_on_queries", "window_candidates"), [(False, 3), (True, 8)])
def test_unlabelled_window_queries_are_candidates_only_when_configured(train_on_queries, window_candidates):
    p = make(window=WINDOW, settings=PlanSettings(budget=0.5, seed=7, train_on_queries=train_on_queries))
    held = set(p.data["gate"]["adaptation"])
    labelled_kept = {f"q{i}" for i in range(6, 10)} - held
    assert p.data["window"]["candidates"] == window_candidates
    assert p.selection["n_candidates"] == 6 + window_candidates
    excluded = set(p.data["excluded"]["unlabelled_window"])
    if train_on_queries:
        assert excluded == set()
    else:
        assert excluded == {f"q{i}" for i in range(6)} - held and len(labelled_kept) == 3
        assert {i for i, _ in p.data["train"]["window"]} <= labelled_kept
    assert all(e.source != "window" or e.id not in held for e in p.train)


def test_a_selected_labelled_window_row_trains_on_its_response():
    pool_axes = (0, 0)  # the pool has nothing of the new topic: S must come from the labelled window rows
    p = make(window=[(1, True)] * 5, pool_axes=pool_axes)
    window_examples = [e for e in p.train if e.source == "window"]
    assert window_examples and all(e.text == f"new {e.id[1:]}\na{e.id[1:]}" for e in window_examples)
    assert p.selection["source_languages"] == {"it": 5}  # |S| = 0.5 * 10, all from the window


def test_the_budget_is_b_times_the_whole_d_t_even_with_a_d_t_holdout():
    p = make(window=WINDOW, settings=PlanSettings(budget=0.5, seed=7, holdout_from_targets=0.2))
    assert p.selection["n_selected"] == 5 and p.data["budget_rows"] == 5  # 0.5 * |D_t| = 0.5 * 10
    held = p.data["gate"]["retention"]["targets"]
    assert len(held) == 2 and held == p.target_holdout == target_holdout([f"t{i}" for i in range(10)], 0.2, 7)
    assert not set(held) & {e.id for e in p.train}
    assert sorted(p.retention) == sorted(f"old {i[1:]}\nr{i[1:]}" for i in held)


def test_a_stored_d_t_split_is_reused_and_new_rows_train():
    p = make(window=WINDOW, targets_held_out=["t1", "t4", "gone"],
             settings=PlanSettings(budget=0.5, seed=7, holdout_from_targets=0.2))
    assert p.data["gate"]["retention"]["targets"] == ["t1", "t4"]  # "gone" left D_t: nothing to hold out
    assert set(p.data["train"]["target"]) == {f"t{i}" for i in range(10)} - {"t1", "t4"}


def test_target_holdout_table():
    ids = [f"t{i}" for i in range(10)]
    assert target_holdout(ids, 0.0) == [] and target_holdout(ids[:1], 0.5) == []
    assert len(target_holdout(ids, 0.01)) == 1 and len(target_holdout(ids, 0.99)) == 9  # at least 1 out, 1 kept
    assert target_holdout(ids, 0.3, seed=1) == target_holdout(ids, 0.3, seed=1) != target_holdout(ids, 0.3, seed=2)


def test_the_cap_drops_selected_rows_never_d_t():
    p = make(window=WINDOW, settings=PlanSettings(budget=0.5, seed=7, max_examples=12))
    assert len(p.train) == 12 and sum(e.source == "target" for e in p.train) == 10
    assert p.data["train"]["n_examples"] == 12
    small = make(window=WINDOW, settings=PlanSettings(budget=0.5, seed=7, max_examples=4))
    assert sum(e.source == "target" for e in small.train) == 10 and len(small.train) == 10
    assert any("exceeds max_examples" in w for w in small.data["warnings"])


def test_without_a_window_the_plan_is_d_t_only():
    p = make(window=[])
    assert p.kind == "target_only" and {e.source for e in p.train} == {"target"}
    assert p.data["gate"]["adaptation"] == [] and p.selection["n_selected"] == 0


def test_selection_clusters_are_fitted_on_exactly_d_t_window_and_pool(monkeypatch):
    import compass.select.clusters as sc

    seen = {}
    real = sc.fit_selection_clusters

    def spy(X_target, X_window, X_pool, config):
        seen.update(target=X_target.copy(), window=X_window.copy(), pool=X_pool.copy(), config=config)
        return real(X_target, X_window, X_pool, config)

    monkeypatch.setattr(sc, "fit_selection_clusters", spy)
    window = [(1, False)] * 6 + [(2, True)] * 2
    p = make(window=window, clusters=None, clustering=sc.ClusteringConfig(params={"n_clusters": 3}, seed=0),
             settings=PlanSettings(budget=0.5, seed=7, holdout_from_targets=0.2))
    np.testing.assert_array_equal(seen["target"], unit([0] * 10, 1))  # all of D_t, its held-out rows too
    np.testing.assert_array_equal(seen["window"], unit([a for a, _ in window], 2))  # E_t: the whole frozen window
    np.testing.assert_array_equal(seen["pool"], unit([1, 1, 1, 1, 0, 0], 3))
    assert p.data["clusters"]["n_clusters"] == 3


def test_p_ref_stays_on_the_monitoring_codebook_when_the_selection_clusters_differ():
    one_cluster = SimpleNamespace(target=np.zeros(10, np.int64), window=np.zeros(10, np.int64),
                                  pool=np.zeros(6, np.int64), centroids=np.ones((1, 3), np.float32) / np.sqrt(3),
                                  summary={"n_clusters": 1})
    p = make(window=[(1, False)] * 10, clusters=one_cluster)
    assert len(p.counts) == 3  # the codebook's K + 1 buckets, not the selection's
    picked = [int(e.id[1:]) for e in p.train if e.source == "selected"]
    assert len(picked) == 5  # one selection cluster: 0.5 * 10 from any of the 6 pool rows
    # codebook buckets: pool rows 0-3 lie on axis 1 (the window's bucket), 4-5 on axis 0 (D_t's)
    np.testing.assert_array_equal(p.counts, [sum(i >= 4 for i in picked), 10 + sum(i < 4 for i in picked), 0])
    assert np.isclose(p.p_ref.sum(), 1.0)


def test_an_empty_retention_set_is_reported_and_does_not_block():
    p = make(window=WINDOW, prev_anchors=[("t0", "old 0\nr0")])  # the only anchor is a D_t row: it trains
    assert p.retention == [] and any("retention set is empty" in w for w in p.data["warnings"])
    g = gate(2.0, 1.8, None, None)
    assert g.passed and g.retention_change is None and any("not measured" in r for r in g.reasons)
    assert not gate(2.0, 2.1, None, None).passed  # adaptation still decides


def test_bad_settings_name_the_field_and_the_fix():
    with pytest.raises(AdaptError, match="holdout_from_targets"):
        PlanSettings(budget=0.5, holdout_from_targets=1.0)
    with pytest.raises(AdaptError, match="holdout_fraction"):
        PlanSettings(budget=0.5, holdout_fraction=0.0)
    with pytest.raises(AdaptError, match="budget"):
        PlanSettings(budget=-1)
    with pytest.raises(AdaptError, match="gate.holdout_from_targets"):
        make(n_target=2, window=WINDOW, targets_held_out=["t0", "t1"],
             settings=PlanSettings(budget=0.5, holdout_from_targets=0.5))
