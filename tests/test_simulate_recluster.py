"""The replay's re-clustering (§6.1, ``recluster="auto"``): stale clusters are re-fitted and re-referenced in process.

The planted stream of test_simulate.py: blobs A, B, C, (A, B, C) = (50, 50, 0) per 100-sample block until sample
600, (20, 20, 60) after. The first codebook (K = 3) is fitted on the reference part (samples 0-199: A and B only),
so it splits A or B in two and has no cluster for C: C's rows (orthogonal to A and B) scatter over the three
clusters, the window's mix barely moves and a fixed theta of 0.1 never fires. C's rows are at cosine distance ~1
from every centroid, far beyond the calibrated 0.95 distance of the fit rows (~0.01), so the far share of the window
500-699 is 60/200 C rows plus the A/B rows beyond the quantile: > 0.3 at check 700 (and ~0.05 before).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_simulate import CENTERS, INC, SHIFT, WINDOW, _blob_rows, _cli, _config, _planted

from compass.divergence import js_divergence
from compass.drift.eq3 import References, fit_codebook, stream_pool
from compass.drift.lifecycle import Limits
from compass.drift.reclustering import Reclustering
from compass.drift.replay import replay
from compass.drift.simulate import SimulationConfig, simulate


def _blob_of(rows: np.ndarray) -> np.ndarray:
    """The blob each row was drawn around: its nearest centre (by hand, no codebook)."""
    return np.argmax(np.asarray(rows, np.float32) @ CENTERS[:3].T, axis=1)


def _auto(thetas: tuple[float, ...] = (0.1,), **kw) -> SimulationConfig:
    return _config(thetas, fit_on="reference", **{"recluster": "auto", **kw})


@pytest.mark.parametrize("reference", ["window", "eq3"])
def test_off_misses_the_planted_topic_and_auto_reclusters_then_detects_it(reference):
    # auto: re-cluster at 700 (window restarted), the window 700-899 = (40, 40, 120) against the rebased reference
    # (A and B only) gives JS 0.396 > 0.1 at 900, the first check with min_samples (200) after the restart
    x, periods, _ = _planted()
    [off] = simulate(x, periods, _auto(recluster="off", reference=reference))
    [auto] = simulate(x, periods, _auto(reference=reference))
    assert (off.fired_at, off.delays, off.reclusterings, off.reclustered_at) == ((), (None,), 0, ())
    assert (auto.fired_at, auto.delays, auto.reclusterings, auto.reclustered_at) == ((900,), (900 - SHIFT,), 1, (700,))
    assert (auto.detected, auto.false_positives, auto.avg_delay) == (1, 0, 300.0)
    assert auto.extra["recluster_skipped"] == [] and len(auto.extra["recluster_s"]) == 1
    assert round(js_divergence(np.array([100, 100, 0]), np.array([40, 40, 120])), 3) == 0.396


@pytest.mark.parametrize("reference", ["window", "eq3"])
def test_the_rebased_reference_is_a_hand_assignment_of_the_last_cycles_rows(reference):
    # the new codebook has one cluster per blob; P_ref on it = the initial cycle's rows counted per blob: D_t
    # (100 A, 100 B) plus, with eq. 3, the selected pool rows weighted by their repetition counts. theta 0.45 is
    # above every JS here: no update follows, so the References' last rows are still the initial cycle's
    x, periods, _ = _planted()
    config = _auto(reference=reference)
    settings = config.settings("js", 0.45)
    book = fit_codebook(x, config.n_clusters, 0, "reference", WINDOW)
    refs = References(book, x, "it", WINDOW, budget=0.8, mode=reference)
    policy = Reclustering(n_clusters=3, seed=0)
    trace = replay(x, book, refs, settings, increment=INC, reclustering=policy)
    [(at, new)] = trace.codebooks
    assert at == 700 and trace.reclustered == [700] and trace.fired == []
    order = new.assign(CENTERS[:3])  # the new clusters of A, B, C
    assert sorted(order.tolist()) == [0, 1, 2]
    rows = refs.last_rows  # no update since the initial cycle: its rows
    blobs = _blob_of(rows.X.astype(np.float32))
    by_hand = [float(rows.weights[blobs == b].sum()) for b in range(3)]
    if reference == "window":
        assert by_hand == [100.0, 100.0, 0.0] and rows.sources == ("target",) * 200
    else:
        assert by_hand[0] >= 100 and by_hand[1] >= 100 and set(rows.sources) == {"target", "selected"}
    installed = trace.references[1]
    assert installed[0] == 700 and installed[1][order].tolist() == by_hand and installed[1][3] == 0


@pytest.mark.parametrize("detector", ["calibrated", "sequential"])
def test_the_learned_detectors_keep_the_adapters_baseline_after_the_recluster(detector, monkeypatch):
    # the burn-in after the re-clustering at 700 would run on p2 traffic (a live one learns (40, 40, 120) as the
    # no-drift mix: nothing fires, asserted below with the baseline taken away); armed from the initial cycle's
    # D_t rows (100 A, 100 B) re-assigned on the new codebook, both detectors fire at 900, the first check after
    # the restart with min_samples (200) in the window. The thresholds: r0's learned at 200 (the end of its
    # burn-in), the re-fit's at 800, the check that installed it (no live burn-in)
    x, periods, _ = _planted()
    config = _auto(detectors=(detector,))
    [row] = simulate(x, periods, config)
    assert (row.fired_at, row.reclustered_at, row.delays) == ((900,), (700,), (900 - SHIFT,))
    assert [t["at"] for t in row.thresholds] == [200, 800]
    rebase = References.rebase
    monkeypatch.setattr(References, "rebase", lambda self, book: (rebase(self, book)[0], None))
    [live] = simulate(x, periods, config)
    assert (live.fired_at, live.reclustered_at) == ((), (700,))
    assert [t["at"] for t in live.thresholds] == [200, 900]


def test_a_persisting_drift_still_triggers_an_update_after_the_recluster():
    # after the re-clustering the update at 900 installs the window 700-899 (40, 40, 120) as the new reference;
    # later windows are p2 too: no further update, no second re-clustering (C now has a cluster)
    x, periods, _ = _planted()
    x2 = np.concatenate([x, x[SHIFT:]])  # 400 more p2 samples
    [row] = simulate(x2, periods + ["p2"] * (len(x) - SHIFT), _auto(reference="window"))
    assert (row.fired_at, row.reclustered_at) == ((900,), (700,))


def test_the_minimum_interval_skips_a_recluster_and_the_job_is_answered():
    # stale_far_share 0.01 is below the ~5% of fit rows beyond the 0.95 distance: every full window is stale.
    # Re-clusterings at 200, 500, 800; the ones asked for at 400, 700, 1000 are within 300 samples: skipped (the
    # window restarts only with a new codebook: 100 samples after a re-clustering are not min_samples)
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _auto(stale_far_share=0.01, recluster_min_interval=300, thetas=(0.45,)))
    assert (row.reclustered_at, row.extra["recluster_skipped"], row.updates) == ((200, 500, 800), [400, 700, 1000], 0)


def test_shares_and_refit_by_hand():
    book = fit_codebook(_blob_rows(0, 10), 1)  # one cluster around A
    policy = Reclustering(n_clusters=1, far_max_rows=4)
    recent = np.concatenate([_blob_rows(2, 3), CENTERS[[0, 0]], _blob_rows(1, 1)])
    # the last 4 rows: one C, A's centre twice, one B; C and B are orthogonal to A (distance ~1 > the ~0.01
    # radius), A's centre is at distance ~0 from the centroid
    assert policy.shares(book, np.array([3.0, 1.0]), recent) == (0.25, 0.5)
    assert policy.shares(book, np.array([0.0, 0.0]), recent[:0]) == (None, None)
    assert (policy.due(500, None), policy.due(1499, 500), policy.due(1500, 500)) == (True, False, True)
    windows = {"it": _blob_rows(0, 30), "ja": _blob_rows(1, 6)}
    pool = _blob_rows(2, 40)
    for max_rows, sizes in [(10, {"it": 3, "ja": 2, "pool": 5}), (20, {"it": 5, "ja": 5, "pool": 10}),
                            (30, {"it": 9, "ja": 6, "pool": 15}),
                            (100, {"it": 30, "ja": 6, "pool": 40})]:
        new, got = Reclustering(n_clusters=3, max_rows=max_rows).refit(windows, pool, 1)
        assert got == sizes and new.n_clusters == 3 and new.parent is None
        assert sorted(new.assign(CENTERS[:3]).tolist()) == [0, 1, 2] and new.calibrated_distance(0.95) is not None


@pytest.mark.parametrize("field, value, message", [
    ("n_clusters", 0, "The 'n_clusters' parameter of Reclustering must be an int >= 1. Got 0 instead."),
    ("max_rows", 1, "The 'max_rows' parameter of Reclustering must be an int >= 2. Got 1 instead."),
    ("quantile", 1.0, "The 'quantile' parameter of Reclustering must be a float in (0, 1). Got 1.0 instead."),
    ("min_interval", -1, "The 'min_interval' parameter of Reclustering must be a float >= 0. Got -1 instead."),
])
def test_reclustering_errors_name_the_parameter(field, value, message):
    with pytest.raises(ValueError) as e:
        Reclustering(**{"n_clusters": 3, field: value})
    assert str(e.value) == message


@pytest.mark.parametrize("kw, fragment", [
    ({"recluster": "manual"}, "SimulationConfig.recluster: got 'manual'; use 'off'"),
    ({"recluster_min_interval": -1}, "SimulationConfig.recluster_min_interval: got -1"),
    ({"stale_far_share": 0.0}, "SimulationConfig.stale_far_share: got 0.0; use a share in (0, 1]"),
    ({"recluster": "auto", "stale_distance_quantile": 0.5}, "records the quantiles 0.90, 0.95 and 0.99"),
])
def test_config_errors(kw, fragment):
    with pytest.raises(ValueError, match=None) as e:
        SimulationConfig(**kw)
    assert fragment in str(e.value)


def test_off_reads_no_share_and_keeps_the_old_replay():
    x, _, _ = _planted()
    book = fit_codebook(x, 3, 0, "reference", WINDOW)
    settings = _config((0.1,)).settings("js", 0.1)
    refs = References(book, x, "it", WINDOW, budget=0.8, mode="window", pool=stream_pool(x, "it"))
    trace = replay(x, book, refs, settings, increment=INC, limits=Limits(stale_far_share=0.01))
    assert trace.reclustered == [] and "stale_clusters" not in trace.checks


def test_cli_recluster_column_and_flags(tmp_path, monkeypatch):
    args = ["--thetas", "0.1", "--window-size", "200", "--cooldown", "0", "--detectors", "js,never",
            "--codebook-fit", "reference"]
    auto = _cli(tmp_path, monkeypatch, [*args, "--recluster", "auto"])
    assert auto.exit_code == 0, auto.output
    assert "reclusterings" in auto.output and "re-clustered at [700]" in auto.output
    assert "codebook fit on reference, recluster auto" in auto.output
    off = _cli(tmp_path, monkeypatch, [*args, "--json"])
    rows = json.loads(off.stdout)["languages"][0]["rows"]
    assert [(r["detector"], r["reclusterings"], r["fired_at"]) for r in rows] == [("js", 0, []), ("never", 0, [])]
    bad = _cli(tmp_path, monkeypatch, [*args, "--recluster", "sometimes"])
    assert bad.exit_code == 2 and "use off or auto" in bad.output
