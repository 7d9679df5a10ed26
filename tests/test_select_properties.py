"""Property tests of compass.select.select on random small problems (hypothesis, bounded examples)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compass.select import SelectionConfig, select, total_budget, training_set

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, tight: bool = False):
    """Random small problems; ``tight``: several clusters with eval rows and a small pool of uneven cluster
    sizes (Dirichlet shares), so quotas often exceed what a cluster holds and the reallocation runs."""
    seed = draw(st.integers(0, 2**16))
    K = draw(st.integers(2, 5) if tight else st.integers(1, 5))
    d = 6
    n_t, n_e = draw(st.integers(1, 20)), draw(st.integers(4, 15) if tight else st.integers(0, 15))
    n_p = draw(st.integers(n_t // 2, 2 * n_t) if tight else st.integers(0, 60))
    rng = np.random.default_rng(seed)

    def unit(n):
        X = rng.normal(size=(n, d))
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)

    labels = tuple(rng.integers(-1, K, n) for n in (n_t, n_e))
    if tight:  # every cluster has eval rows, so all may receive
        labels = (labels[0], np.concatenate([np.arange(K), labels[1]]))
    shares = rng.dirichlet(np.full(K + 1, 0.5)) if tight else np.full(K + 1, 1 / (K + 1))
    labels += (rng.choice(np.arange(-1, K), n_p, p=shares),)
    config = SelectionConfig(
        budget=draw(st.sampled_from([0.8, 1.0, 2.5] if tight else [0.2, 0.8, 1.0, 2.5, 6.0])),
        method=draw(st.sampled_from(["compass", "compass-d", "no-cluster-weights", "no-instance-weights"])),
        seed=seed,
        sample_noise=draw(st.booleans()),
        tau_sim=draw(st.sampled_from([None, 0.5])),
    )
    return unit(n_t), unit(len(labels[1])), unit(n_p), (*labels, unit(K)), config


@settings(SETTINGS, max_examples=100)  # more draws: roughly one in ten reallocates
@given(st.one_of(problems(), problems(tight=True)))
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
    assert (sel.selected_per_cluster == sel.final_quotas).all()  # every final quota is delivered exactly
    repeated = set(sel.clusters[sel.counts > 1].tolist())
    assert repeated <= set(sel.shortfall_clusters)  # replacement only where the pool ran short
    # the buckets that may receive: w_k > 0 (even weights over buckets with candidates for no-cluster-weights)
    if config.method == "no-cluster-weights":
        receivers = candidates > 0
        if not config.sample_noise:
            receivers[K] = False
    else:
        receivers = sel.stats.w_tilde > 0
        assert not receivers[sel.stats.n_eval == 0].any()
    # nothing ever from a bucket that may not receive (no eval rows, or noise unless asked)
    assert sel.selected_per_cluster[~receivers].sum() == 0
    # quotas always add up to round(B |D_t|) once any bucket may receive some
    assert sel.quotas.sum() == (n_total if receivers.any() else 0)
    # reallocation: |S| = round(B |D_t|) whenever the receivers can supply it, else every receiver is full
    supply = int(config.max_repeats * candidates[receivers].sum())
    assert sel.total == min(n_total, supply) if receivers.any() else sel.total == 0
    cap = config.max_repeats * candidates
    fell_short = sel.final_quotas < sel.quotas
    assert (sel.final_quotas[fell_short] == cap[fell_short]).all()  # gave away only what it could not deliver
    assert not (fell_short & (sel.extra > 0)).any()
    # fresh rows first: a receiver takes repeats beyond its own quota only once no receiver has a fresh row left
    if ((sel.extra > 0) & (sel.final_quotas > candidates)).any():
        assert (sel.final_quotas[receivers] >= candidates[receivers]).all()
    if ((sel.quotas == 0) | (candidates >= sel.quotas)).all():  # the pool suffices: no reallocation
        assert sel.total == sel.quotas.sum() and not sel.shortfall_clusters
        assert (sel.final_quotas == sel.quotas).all()

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
