"""theta calibration by bootstrap (compass/drift/calibrate.py) and `compass calibrate` (suggestion file only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from compass.divergence import js_divergence
from compass.drift.calibrate import (
    THETA_FLOOR,
    CalibrationError,
    null_js_samples,
    per_check_alpha,
    propose_theta,
    theta_from_null,
)
from compass.languages import load_languages
from daemon.cli import app

P = [0.5, 0.3, 0.2, 0.0]


def test_one_bucket_null_is_zero_and_theta_is_the_floor():
    null = null_js_samples([7.0], 500, 100, np.random.default_rng(0))
    assert null.tolist() == [0.0] * 100
    prop = propose_theta([7.0, 0.0], 500, 100, 1.0, n_boot=200)
    assert prop.theta == THETA_FLOOR and prop.floored
    assert prop.null_mean == 0.0 and prop.null_max == 0.0


def test_window_of_one_from_a_fair_coin_has_one_null_value():
    # every window is [1, 0] or [0, 1]: M = [3/4, 1/4], JS = 1/4 log2(4/3) + 1/2 log2(4/3) = 3/4 log2(4/3)
    null = null_js_samples([0.5, 0.5], 1, 50, np.random.default_rng(1))
    assert np.allclose(null, 0.75 * math.log2(4 / 3), rtol=0, atol=1e-12)


def test_null_samples_are_js_of_the_drawn_windows():
    null = null_js_samples(P, 10, 5, np.random.default_rng(3))
    windows = np.random.default_rng(3).multinomial(10, np.array(P), size=5)
    assert null.tolist() == pytest.approx([js_divergence(P, w) for w in windows], abs=1e-12)


def test_larger_windows_propose_smaller_theta():
    thetas = [propose_theta(P, w, 100, 1.0).theta for w in (50, 100, 200, 400, 800, 1600, 3200)]
    assert all(a > b for a, b in zip(thetas, thetas[1:], strict=False))
    assert all(t > THETA_FLOOR for t in thetas)


def test_per_check_alpha_is_budget_times_check_spacing():
    assert per_check_alpha(1.0, 100) == pytest.approx(0.01, abs=1e-15)
    assert per_check_alpha(2.5, 40) == pytest.approx(0.01, abs=1e-15)
    with pytest.raises(CalibrationError, match="false_alarms_per_10k"):
        per_check_alpha(0.0, 100)
    with pytest.raises(CalibrationError, match=r"= 1 >= 1"):
        per_check_alpha(10.0, 1000)


def test_quantile_is_an_order_statistic_of_the_null():
    null = np.arange(1, 101) / 1000  # 0.001 ... 0.100
    # (1 - 0.05) quantile, "higher": position 99 * 0.95 = 94.05 -> index 95 -> 0.096
    assert theta_from_null(null, 0.05) == 0.096
    assert theta_from_null(null, 0.01) == 0.100  # position 98.01 -> index 99
    assert theta_from_null(null[::-1], 0.05) == 0.096  # order of the draws does not matter
    with pytest.raises(CalibrationError, match="alpha"):
        theta_from_null(null, 1.0)


def test_proposal_records_how_it_was_computed():
    prop = propose_theta(P, 2000, 100, 1.0, n_boot=2000, seed=0)
    assert prop.quantile == pytest.approx(0.99) and prop.per_check_alpha == pytest.approx(0.01)
    assert prop.resolved and not prop.floored
    assert prop.null_mean < prop.null_p99 <= prop.theta <= prop.null_max
    assert propose_theta(P, 2000, 100, 1.0, n_boot=50).resolved is False  # 50 * 0.01 < 1
    assert prop == propose_theta(P, 2000, 100, 1.0, n_boot=2000, seed=0)  # seeded


@pytest.mark.parametrize("bad, match", [([], "p_ref"), ([1.0, -1.0], "p_ref"), ([0.0, 0.0], "sums to 0")])
def test_bad_reference_names_the_problem(bad, match):
    with pytest.raises(CalibrationError, match=match):
        propose_theta(bad, 100, 10, 1.0)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def files(tmp_path):
    languages = tmp_path / "languages.yaml"
    languages.write_text("defaults:\n  window_size: 400\nlanguages:\n  sw: {theta: 0.12}\n  yo: {}\n")
    return languages, tmp_path / "languages.suggested.yaml"


def test_cli_writes_a_suggestion_and_never_the_languages_file(files):
    languages, suggestion = files
    before = languages.read_bytes()
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "50,30,20,0", "--languages", str(languages)])
    assert result.exit_code == 0, result.output
    prop = propose_theta([50, 30, 20, 0], 400, 100, 1.0)
    assert "current theta 0.12" in result.output
    assert f"proposed theta {prop.theta:.6g}" in result.output
    assert languages.read_bytes() == before
    text = suggestion.read_text()
    assert text.startswith("# PROPOSAL ONLY")
    assert load_languages(suggestion).languages["sw"].theta == float(f"{prop.theta:.6g}")

    # a second language joins the file; the first one's entry is kept
    result = CliRunner().invoke(app, ["calibrate", "yo", "--counts", "1,1", "--languages", str(languages),
                                      "--check-every", "50", "--false-alarms-per-10k", "2"])
    assert result.exit_code == 0, result.output
    suggested = load_languages(suggestion).languages
    assert sorted(suggested) == ["sw", "yo"]
    assert suggested["sw"].theta == float(f"{prop.theta:.6g}")
    assert suggested["yo"].theta == float(f"{propose_theta([1, 1], 400, 50, 2.0).theta:.6g}")
    assert languages.read_bytes() == before


def test_cli_explicit_suggestion_path_and_floor_notice(files, tmp_path):
    languages, _ = files
    out = tmp_path / "elsewhere" / "s.yaml"
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "9,0", "--languages", str(languages),
                                      "--write-suggestion", str(out)])
    assert result.exit_code == 0, result.output
    assert "floor" in result.output
    assert load_languages(out).languages["sw"].theta == THETA_FLOOR


@pytest.mark.parametrize("args, match", [
    (["--counts", "1,x"], "numbers separated by commas"),
    (["--counts", "1,1", "--false-alarms-per-10k", "200"], "every check may false-alarm"),
])
def test_cli_rejects_bad_input(files, args, match):
    languages, suggestion = files
    result = CliRunner().invoke(app, ["calibrate", "sw", "--languages", str(languages), *args])
    assert result.exit_code == 2
    assert match in result.output
    assert not suggestion.exists()


def test_cli_with_recorded_labels_runs_the_daemons_calibration(files, tmp_path):
    """--labels: the recorded queries are the burn-in of compass.drift.calibrated.calibrate_js, as in the daemon."""
    from compass.drift.calibrated import BurnIn, calibrate_js

    languages, suggestion = files
    rng = np.random.default_rng(7)
    recorded = rng.choice(4, size=800, p=[0.4, 0.4, 0.2, 0.0]).tolist()
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(map(str, recorded)))
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "50,30,20,0", "--labels", str(path),
                                      "--languages", str(languages), "--false-alarm-every", "5000"])
    assert result.exit_code == 0, result.output
    burn = BurnIn()
    for i in range(0, 800, 100):
        burn = burn.add(np.asarray(recorded[i:i + 100]), 4, None)
    thr = calibrate_js(np.array([0.5, 0.3, 0.2, 0.0]), burn, 400, 200, 5000, seed=0)
    assert f"proposed theta {thr.theta_full:.6g}" in result.output
    assert load_languages(suggestion).languages["sw"].theta == float(f"{thr.theta_full:.6g}")
    # live traffic sits off P_ref (0.4/0.4/0.2 vs 0.5/0.3/0.2): above what P_ref alone proposes
    assert thr.theta_full > propose_theta([50, 30, 20, 0], 400, 100, 10_000 / 5000).theta


def test_cli_labels_outside_the_reference_are_refused(files, tmp_path):
    languages, suggestion = files
    path = tmp_path / "labels.txt"
    path.write_text("0\n1\n7\n")
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "1,1", "--labels", str(path),
                                      "--languages", str(languages)])
    assert result.exit_code == 2 and "outside P_ref's 2 buckets" in result.output and not suggestion.exists()


# ------------------------------------------------------------------------------------------------ sampling (issue 20)


@pytest.mark.parametrize("arrivals, rate, cap, window, check, budget, want", [
    # kept/s, check s, window s, budget s: counts / kept_per_s
    (10, 0.1, None, 400, 100, 50_000, (1.0, 100.0, 400.0, 50_000.0)),
    (10, 1.0, None, 400, 100, 50_000, (10.0, 10.0, 40.0, 5_000.0)),
    (100, 1.0, 50, 500, 100, 10_000, (50.0, 2.0, 10.0, 200.0)),  # a cap below the traffic: min(Q, N) = 50
    (100, 1.0, 400, 500, 100, 10_000, (100.0, 1.0, 5.0, 100.0)),  # above it: every query
])
def test_in_seconds_converts_kept_query_counts(arrivals, rate, cap, window, check, budget, want):
    from compass.drift.calibrate import in_seconds
    from compass.drift.timing import Sampling

    t = in_seconds(Sampling(arrivals, rate, cap), window, check, budget)
    assert (t.kept_per_s, t.check_s, t.window_s, t.false_alarm_every_s) == pytest.approx(want)
    with pytest.raises(CalibrationError, match="false_alarm_every: got 0"):
        in_seconds(Sampling(arrivals, rate, cap), window, check, 0)


def test_sampling_by_id_leaves_the_no_drift_js_of_kept_windows_unchanged():
    # a stationary stream of cluster ids from P; windows of 200 kept queries, at rate 1 and at rate 0.25 (keep by
    # the id's hash, as the consumers do). Both are multinomial(200, P) windows: mean JS near (K - 1) / (8 n ln 2)
    # = 2 / (1600 ln 2) = 0.0018 bits for the K = 3 used buckets (module docstring of compass/drift/calibrate.py)
    from compass.drift.calibrate import js_rows
    from compass.sampling import keep

    p = np.array(P)
    labels = np.random.default_rng(3).choice(4, size=80_000, p=p)
    kept = labels[[i for i in range(len(labels)) if keep(f"q{i}", 0.25)]]

    def mean_js(x: np.ndarray) -> float:
        windows = x[: len(x) // 200 * 200].reshape(-1, 200)
        return float(js_rows(p, np.stack([np.bincount(w, minlength=4) / 200 for w in windows])).mean())

    expected = 2 / (1600 * math.log(2))
    assert 19_000 < len(kept) < 21_000
    assert mean_js(labels) == pytest.approx(expected, rel=0.3)
    assert mean_js(kept) == pytest.approx(expected, rel=0.3)


def test_cli_reports_the_proposal_in_seconds_and_the_same_theta_at_any_rate(files, tmp_path):
    languages, _ = files
    base = ["calibrate", "sw", "--counts", "50,30,20,0", "--languages", str(languages)]
    plain = CliRunner().invoke(app, base)
    sampled = CliRunner().invoke(app, [*base, "--arrival-rate", "10", "--sampling-rate", "0.1"])
    assert plain.exit_code == 0 and sampled.exit_code == 0, sampled.output
    prop = propose_theta([50, 30, 20, 0], 400, 100, 1.0)
    assert f"proposed theta {prop.theta:.6g}" in plain.output and f"proposed theta {prop.theta:.6g}" in sampled.output
    assert "kept/s" not in plain.output
    # 10/s at 0.1 = 1 kept/s: a check (100) 100 s, a window (400) 400 s, 1 per 10k -> 10,000 s = 2.78 h
    assert ("sw: at 10 queries/s kept at rate 0.1 (1 kept/s): a check every 100 kept queries = 100.0 s, a full "
            "window of 400 = 400.0 s") in sampled.output
    assert "one false alarm per 10,000 kept queries = 10,000 s (2.78 h)" in sampled.output
    # the language's own sampling is the default: a cap of 5/s on 10/s -> 5 kept/s
    capped = tmp_path / "capped.yaml"
    capped.write_text("defaults:\n  window_size: 400\nlanguages:\n  sw: {sampling: {rate: 0.5}}\n")
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "50,30,20,0", "--languages", str(capped),
                                      "--arrival-rate", "10"])
    assert result.exit_code == 0, result.output
    assert "kept at rate 0.5 (5 kept/s): a check every 100 kept queries = 20.0 s" in result.output


@pytest.mark.parametrize("args, match", [
    (["--sampling-rate", "0.5"], "give the language's queries a second with --arrival-rate"),
    (["--arrival-rate", "10", "--sampling-rate", "0.5", "--max-per-second", "3"], "give one, a fixed share or a cap"),
    (["--arrival-rate", "10", "--sampling-rate", "2"], "got 2.0; give the share of queries kept"),
    (["--arrival-rate", "-1"], "got -1.0; give the language's offered queries a second"),
])
def test_cli_sampling_flags_errors(files, args, match):
    languages, suggestion = files
    result = CliRunner().invoke(app, ["calibrate", "sw", "--counts", "1,1", "--languages", str(languages), *args])
    assert result.exit_code == 2 and match in " ".join(result.output.replace("│", " ").split()), result.output
    assert not suggestion.exists()
