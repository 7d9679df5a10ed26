"""Property tests of compass.select.select on random small problems (hypothesis, bounded examples)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compass.select import SelectionConfig, select, total_budget, training_set

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**16))
    K = draw(st.integers(1, 5))
    d = 6
    n_t, n_e, n_p = draw(st.integers(1, 20)), draw(st.integers(0, 15)), draw(st.integers(0, 60))
    rng = np.random.default_rng(seed)

    def unit(n):
        X = rng.normal(size=(n, d))
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)

    labels = tuple(rng.integers(-1, K, n) for n in (n_t, n_e, n_p))
    config = SelectionConfig(
        budget=draw(st.sampled_from([0.2, 0.8, 1.0, 2.5])),
        method=draw(st.sampled_from(["compass", "compass-d", "no-cluster-weights", "no-instance-weights"])),
        seed=seed,
        sample_noise=draw(st.booleans()),
        tau_sim=draw(st.sampled_from([None, 0.5])),
    )
    return unit(n_t), unit(n_e), unit(n_p), (*labels, unit(K)), config


@SETTINGS
@given(problems())
def test_selection_invariants(problem) -> None:
    Xt, Xe, Xp, labels, config = problem
    sel = select(Xt, Xe, Xp, config, labels=labels)
    K = len(labels[3])
    n_total = total_budget(config.budget, len(Xt))
    pool_b = np.where(labels[2] < 0, K, labels[2])
    candidates = np.bincount(pool_b, minlength=K + 1)

    assert sel.total <= n_total and sel.quotas.sum() in (0, n_total)
    assert (sel.counts >= 1).all() and (sel.counts <= config.max_repeats).all()
    assert len(np.unique(sel.pool_indices)) == len(sel.pool_indices)
    assert (sel.selected_per_cluster <= sel.quotas).all()
    repeated = set(sel.clusters[sel.counts > 1].tolist())
    assert repeated <= set(sel.shortfall_clusters)  # replacement only where the pool ran short
    if config.method != "no-cluster-weights":
        # nothing from a bucket without eval rows (nor from noise unless asked)
        banned = sel.stats.n_eval == 0
        if not config.sample_noise:
            banned[K] = True
        assert sel.selected_per_cluster[banned].sum() == 0
    # quotas always add up to round(B |D_t|) once any bucket may receive some
    if config.method == "no-cluster-weights":
        eligible = candidates[:K].sum() + (candidates[K] if config.sample_noise else 0)
    else:
        eligible = sel.stats.w_tilde.sum()
    assert sel.quotas.sum() == (n_total if eligible > 0 else 0)
    if ((sel.quotas == 0) | (candidates >= sel.quotas)).all():  # the pool suffices
        assert sel.total == sel.quotas.sum() and not sel.shortfall_clusters

    train = [("t", i) for i in range(len(Xt))]
    out = training_set(train, [("p", i) for i in range(len(Xp))], sel)
    assert out[: len(train)] == train and len(out) == len(train) + sel.total


@SETTINGS
@given(problems())
def test_same_seed_same_selection(problem) -> None:
    Xt, Xe, Xp, labels, config = problem
    a, b = select(Xt, Xe, Xp, config, labels=labels), select(Xt, Xe, Xp, config, labels=labels)
    np.testing.assert_array_equal(a.pool_indices, b.pool_indices)
    np.testing.assert_array_equal(a.counts, b.counts)
