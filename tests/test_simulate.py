"""`compass simulate`: the offline replay of a multi-period stream through the drift lifecycle (App. D.2, Table 11).

The planted stream: three well-separated blobs A, B, C; blocks of 100 samples with exact compositions,
(A, B, C) = (50, 50, 0) for samples 0-599 (period p1) and (20, 20, 60) from sample 600 (period p2). With
increment 100 and window 200 every window is two whole blocks, so P_mon at every check is known exactly
and the expected JS per check is computed here from the counts alone. The initial reference (eq. 3: the first
200 samples (100, 100, 0) plus COMPASS's selection for them, which only draws from A and B in equal numbers) has
the mix (1/2, 1/2, 0), the p1 mix, whatever the pool.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from compass.data import Record
from compass.divergence import js_divergence
from compass.drift.replay import replay
from compass.drift.simulate import (
    CHATTERBOT_PERIODS,
    DETECTORS,
    Pool,
    References,
    SimulationConfig,
    baseline_row,
    build_chatterbot_stream,
    fit_codebook,
    read_pool,
    read_stream,
    score,
    simulate,
    write_stream,
)
from compass.embed import Embedder, l2_normalize
from compass.errors import DataError
from compass.languages import LanguageSettings

P1, P2 = np.array([50, 50, 0]), np.array([20, 20, 60])
SHIFT, N, INC, WINDOW = 600, 1000, 100, 200
CENTERS = np.eye(3, 8, dtype=np.float32)  # orthogonal unit vectors: cosine-separated blobs
ROW_KEYS = {"detector", "theta", "updates", "detected", "transitions", "avg_delay", "false_positives", "fp_rate",
            "fired_at", "delays", "n_checks", "check_ms", "false_alarms_per_10k", "detected_at", "thresholds",
            "n_samples", "reclusterings", "reclustered_at",
            # the same in seconds (compass/drift/timing.py)
            "delays_offered", "delays_s", "avg_delay_s", "fired_at_s", "false_alarm_spacing", "false_alarm_spacing_s"}


def _planted(seed: int = 0) -> tuple[np.ndarray, list[str], list[int]]:
    """(embeddings, period labels, blob per sample) of the planted stream."""
    rng = np.random.default_rng(seed)
    blobs: list[int] = []
    for start in range(0, N, INC):
        mix = P1 if start < SHIFT else P2
        block = np.repeat(np.arange(3), mix)
        rng.shuffle(block)  # order inside a block changes no window: windows are whole blocks
        blobs += block.tolist()
    x = l2_normalize(CENTERS[blobs] + rng.normal(0, 0.01, size=(N, 8)).astype(np.float32))
    return x, ["p1" if i < SHIFT else "p2" for i in range(N)], blobs


def _config(thetas: tuple[float, ...], **kw) -> SimulationConfig:
    base = dict(increment=INC, window_size=WINDOW, min_samples=WINDOW, reference_samples=WINDOW,
                cooldown_samples=0, n_clusters=3, seed=0, detectors=("js",))
    return SimulationConfig(thetas=thetas, **{**base, **kw})


def _blob_rows(blob: int, n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return l2_normalize(CENTERS[[blob] * n] + rng.normal(0, 0.01, (n, 8)).astype(np.float32))


def _expected_js(t: int) -> float:
    """JS(P_ref || P_mon) at check t before any update: P_ref = the first two blocks, P_mon = the last two."""
    window = sum(P1 if s < SHIFT else P2 for s in range(t - WINDOW, t, INC))
    return js_divergence(2 * P1, window)


def test_expected_js_per_check_is_what_the_test_assumes():
    # by hand: window (70, 70, 60) at 700 gives 0.169 bits, (40, 40, 120) from 800 on gives 0.396
    assert [round(_expected_js(t), 3) for t in range(200, 1001, 100)] == [0, 0, 0, 0, 0, 0.169, 0.396, 0.396, 0.396]


@pytest.mark.parametrize("reference", ["eq3", "window"])
@pytest.mark.parametrize("theta", [0.1, 0.2, 0.3])
def test_simulate_finds_the_planted_shift_at_the_first_check_whose_js_exceeds_theta(theta, reference):
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((theta,), reference=reference))
    expected_t = next(t for t in range(WINDOW, N + 1, INC) if _expected_js(t) > theta)
    assert expected_t == (700 if theta < 0.169 else 800)
    assert (row.detector, row.theta, row.fired_at, row.detected_at) == ("js", theta, (expected_t,), (expected_t,))
    assert row.delays == (expected_t - SHIFT,)
    assert (row.updates, row.detected, row.transitions, row.false_positives, row.fp_rate) == (1, 1, 1, 0, 0.0)
    assert row.avg_delay == expected_t - SHIFT
    assert (row.n_checks, row.n_samples, row.false_alarms_per_10k) == (N // INC, N, 0.0)


def test_a_theta_above_every_js_never_fires():
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((0.45,)))
    assert (row.updates, row.detected, row.avg_delay, row.delays) == (0, 0, None, (None,))


def test_sweep_updates_never_increase_with_theta_and_eq3_learns_the_shift_not_the_mixed_window():
    # p1 windows match P_ref exactly (JS 0), p2 windows are all equal after 800. An update installs a new reference
    # and re-arms the trigger. With the window reference a theta that fired at 700 learned the mixed window
    # (70, 70, 60); the pure p2 window (40, 40, 120) differs from it by JS = 0.0667 bits (by hand), so theta 0.05
    # fires once more at 800 (cooldown 0): a false positive. The eq. 3 reference adds COMPASS's selection for
    # that window, which goes almost all to C (w_C = 60 / (0 + 1) against 70 / 101 for A and B), so P_ref is
    # already near the p2 mix and 0.05 does not fire again.
    x, periods, _ = _planted()
    thetas = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
    window = simulate(x, periods, _config(thetas, reference="window"))
    eq3 = simulate(x, periods, _config(thetas))
    assert round(js_divergence(np.array([70, 70, 60]), np.array([40, 40, 120])), 4) == 0.0667
    assert [r.theta for r in window] == [r.theta for r in eq3] == list(thetas)
    assert [r.updates for r in window] == [2, 1, 1, 1, 1, 0, 0]
    assert [r.fired_at for r in window[:5]] == [(700, 800), (700,), (700,), (800,), (800,)]
    assert (window[0].false_positives, window[0].fp_rate, window[0].false_alarms_per_10k) == (1, 50.0, 10.0)
    assert [r.updates for r in eq3] == [1, 1, 1, 1, 1, 0, 0]
    assert [r.fired_at for r in eq3[:5]] == [(700,), (700,), (700,), (800,), (800,)]


def test_eq3_reference_is_the_window_plus_the_selection_from_the_pool():
    # pool: 60 rows of blob C only. Initial cycle: D_t = E_t = samples 0-199 = (A, B, C) = (100, 100, 0); C has no
    # usage (w_C = 0) and A, B no pool rows, so S is empty: P_ref counts (100, 100, 0). theta 0.1 fires at 700 on
    # the window 500-699 = (70, 70, 60): only C is servable, w~_C = 1, |S| = round(0.8 * 200) = 160 <= 3 * 60
    # (max_repeats), so S = 160 C rows and eq. 3 gives (70, 70, 60 + 160). The window reference is (70, 70, 60).
    x, periods, _ = _planted()
    config = _config((0.1,))
    book = fit_codebook(x, config)
    order = book.assign(CENTERS[:3])  # the clusters of A, B, C
    assert sorted(order.tolist()) == [0, 1, 2]
    pool = Pool(_blob_rows(2, 60), ("sw",) * 60)
    installed = {}
    for mode in ("eq3", "window"):
        refs = References(book, x, "sw", WINDOW, budget=0.8, pool=pool, mode=mode)
        trace = replay(x, book, refs, config.settings("js", 0.1), increment=INC)
        assert trace.fired == trace.detected == [700]
        installed[mode] = [(t, counts[order].tolist(), counts[3]) for t, counts in trace.references]
    assert installed["eq3"] == [(0, [100, 100, 0], 0), (700, [70, 70, 220], 0)]
    assert installed["window"] == [(0, [100, 100, 0], 0), (700, [70, 70, 60], 0)]
    # the default pool, the stream's 1000 distinct rows: w~ = (1/2, 1/2, 0), 80 A and 80 B rows selected
    refs = References(book, x, "sw", WINDOW, budget=0.8)
    assert refs.initial()[order].tolist() == [180, 180, 0]


def test_settle_scores_the_update_at_its_dispatch_and_keeps_the_detection():
    # theta 0.1 detects at 700 on a mixed window; settling 100 samples dispatches at 800 on the pure p2 window
    x, periods, _ = _planted()
    [now] = simulate(x, periods, _config((0.1,)))
    [later] = simulate(x, periods, _config((0.1,), settle_samples=100))
    assert (now.fired_at, now.detected_at, now.delays) == ((700,), (700,), (100,))
    assert (later.fired_at, later.detected_at, later.delays) == ((800,), (700,), (200,))
    with pytest.warns(DeprecationWarning, match="update_lag is deprecated"):
        alias = _config((0.1,), update_lag=100)
    assert alias.settle_samples == 100 and alias.settings().settle_s == 100.0
    assert simulate(x, periods, alias)[0].fired_at == (800,)


def test_eta_moves_the_codebook_without_changing_the_planted_outcome():
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((0.2,), eta=0.5))
    assert row.fired_at == (800,)


def test_the_fixed_interval_and_never_rows():
    x, periods, _ = _planted()
    fixed, never = simulate(x, periods, _config((0.1,), detectors=("fixed-interval", "never")))
    assert (fixed.detector, fixed.theta, fixed.fired_at, fixed.delays, fixed.avg_delay) == (
        "fixed-interval", None, (SHIFT,), (0,), 0.0)
    assert (fixed.updates, fixed.detected, fixed.false_positives, fixed.fp_rate) == (1, 1, 0, 0.0)
    assert (never.detector, never.updates, never.detected, never.delays, never.avg_delay) == (
        "never", 0, 0, (None,), None)
    # the paper's Table 11 "Fixed" row: 4 updates at the T1-T5 boundaries, delay 0, no false positive
    row = baseline_row("fixed-interval", [2000, 4000, 6000, 8000], 10_000)
    assert (row.updates, row.fired_at, row.avg_delay, row.fp_rate) == (4, (2000, 4000, 6000, 8000), 0.0, 0.0)


def test_every_detector_gives_one_row_in_order_with_learned_thresholds():
    # calibrated / sequential: the burn-in (one window, 200 samples) after the initial reference ends at check 200;
    # p1 windows equal P_ref exactly, so the calibrated threshold is tiny and it detects the shift at 700; the
    # sequential detector learns its alternative from earlier checks only, so it fires one check later, at 800.
    # The update's new reference starts a new burn-in of 200 samples
    x, periods, _ = _planted()
    rows = simulate(x, periods, _config((0.1, 0.3), detectors=DETECTORS, guard_theta=0.2))
    assert [(r.detector, r.theta) for r in rows] == [("js", 0.1), ("js", 0.3), ("calibrated", None),
                                                     ("sequential", None), ("fixed-interval", None), ("never", None)]
    calibrated, sequential = rows[2], rows[3]
    assert (calibrated.fired_at, sequential.fired_at) == ((700,), (800,))
    assert [t["at"] for t in calibrated.thresholds] == [200, 900] and [t["at"] for t in sequential.thresholds] == [
        200, 1000]
    assert calibrated.thresholds[0]["unit"] == "bits" and 0 < calibrated.thresholds[0]["value"] < 0.05
    assert sequential.thresholds[0] == {**sequential.thresholds[0], "unit": "nats",
                                        "value": pytest.approx(np.log(50_000))}
    assert calibrated.to_dict()["guard_theta"] == 0.2 and set(calibrated.to_dict()) == ROW_KEYS | {"guard_theta"}


def test_from_settings_replays_exactly_the_languages_settings():
    settings = LanguageSettings(theta=0.1, window_size=WINDOW, min_samples=WINDOW, cooldown_s=0, settle_s=100,
                                budget=0.5, max_rejections=2)
    config = SimulationConfig.from_settings(settings, increment=INC, n_clusters=3)
    assert config.detectors == ("js", "fixed-interval", "never") and config.reference_samples == WINDOW
    assert config.settings("js", 0.1) == settings
    seq = SimulationConfig.from_settings(settings.model_copy(update={"detector": "sequential"}))
    assert seq.detectors[0] == "sequential" and seq.settings("sequential").detector == "sequential"
    with pytest.raises(ValueError, match="window_size come from the language's settings"):
        SimulationConfig.from_settings(settings, window_size=500)
    x, periods, _ = _planted()
    js, fixed, never = simulate(x, periods, config)
    assert (js.fired_at, js.detected_at, fixed.fired_at, never.updates) == ((800,), (700,), (SHIFT,), 0)


def test_score_counts_the_first_trigger_after_a_transition_and_the_rest_as_false_positives():
    delays, fps = score([500, 2300, 2800, 4000, 4100, 6100], [2000, 4000, 6000])
    # 500: before any transition; 2800: second in T2; 4000: the check that ends T2 still belongs to T2
    assert (delays, fps) == ([300, 100, 100], 3)
    assert score([], [10]) == ([None], 0)


def test_config_errors_name_the_parameter_value_and_fix():
    with pytest.raises(ValueError, match=r"SimulationConfig.thetas: got \(0.0,\); give one or more distinct JS"):
        SimulationConfig(thetas=(0.0,))
    with pytest.raises(ValueError, match=r"SimulationConfig.min_samples: got 600; it must not exceed window_size"):
        SimulationConfig(window_size=500, min_samples=600)
    with pytest.raises(ValueError, match=r"SimulationConfig.fit_on: got 'all'; use 'pool'"):
        SimulationConfig(fit_on="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SimulationConfig.detectors: got \('js', 'cusum'\); give distinct names"):
        SimulationConfig(detectors=("js", "cusum"))
    with pytest.raises(ValueError, match=r"SimulationConfig.reference: got 'pool'; use 'eq3'"):
        SimulationConfig(reference="pool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SimulationConfig.false_alarm_every: got 10; input should be greater than or equal to 100"):
        SimulationConfig(false_alarm_every=10)
    x, periods, _ = _planted()
    with pytest.raises(ValueError, match=r"reference_samples: got 2000 but the stream has 1000 samples"):
        simulate(x, periods, _config((0.1,), reference_samples=2000, window_size=2000, min_samples=200))


# ------------------------------------------------------------------------------------------------ streams


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_stream_reports_every_bad_line_and_field(tmp_path):
    path = _write(tmp_path / "s.jsonl", [
        '{"text": "ciao", "lang": "it", "period": "T1", "topic": "greetings"}',
        '{"text": "ciao", "lang": "it"}',
        '{"text": "", "lang": "it", "period": 1}',
        '{"text": "x", "lang": "klingonese", "period": true}',
        '{"text": "x", "lang": "it", "period": "T2", "topik": "a"}',
        "not json",
        "",
        '["a list"]',
    ])
    with pytest.raises(DataError) as err:
        read_stream(path)
    problems = err.value.problems
    assert problems[2].startswith("line 4, field 'lang': language code 'klingonese' is not")
    assert problems[:2] + problems[3:] == [
        "line 2, field 'period': missing; every line needs text, lang and period",
        "line 3, field 'text': got ''; use a non-empty string",
        "line 4, field 'period': got True; use a period label, a string such as 'T2' or an integer",
        "line 5, field 'topik': unknown field; allowed: id, lang, meta, period, text, topic",
        "line 6: not valid JSON (Expecting value at column 1)",
        "line 8: expected a JSON object, got list",
    ]


def test_read_stream_splits_languages_and_round_trips(tmp_path):
    path = _write(tmp_path / "s.jsonl", [
        '{"text": "ciao", "lang": "it", "period": 1, "topic": "greetings"}',
        '{"text": "hello", "lang": "English", "period": 1}',
        '{"text": "grazie", "lang": "it-IT", "period": 2, "topic": "food"}',
    ])
    streams = read_stream(path)
    assert list(streams) == ["it", "en"]
    it = streams["it"]
    assert (it.texts, it.periods, it.topics, it.transitions()) == (("ciao", "grazie"), ("1", "2"),
                                                                   ("greetings", "food"), [1])
    write_stream(tmp_path / "out.jsonl", it)
    assert read_stream(tmp_path / "out.jsonl") == {"it": it}
    with gzip.open(tmp_path / "s.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(path.read_text(encoding="utf-8"))
    assert read_stream(tmp_path / "s.jsonl.gz") == streams


def test_read_stream_missing_or_empty_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_stream(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="the file holds no lines"):
        read_stream(_write(tmp_path / "empty.jsonl", [""]))


def _records() -> list[Record]:
    cats = sorted({c for group in CHATTERBOT_PERIODS.values() for c in group})
    return [Record(id=f"{c}{i}", lang="it", text=f"{c} {i}", topic=c) for c in cats for i in range(6)]


def test_chatterbot_stream_has_five_periods_of_disjoint_groups_and_t5_returns_with_other_utterances():
    s = build_chatterbot_stream("it", seed=3, period_samples=40, records=_records())
    assert s.period_lengths() == [("T1", 40), ("T2", 40), ("T3", 40), ("T4", 40), ("T5", 40)]
    assert s.transitions() == [40, 80, 120, 160]
    by_period = {p: [(tp, t) for tp, t, pp in zip(s.topics, s.texts, s.periods, strict=True) if pp == p]
                 for p in CHATTERBOT_PERIODS}
    for p, rows in by_period.items():
        assert {tp for tp, _ in rows} <= set(CHATTERBOT_PERIODS[p])
    assert {tp for tp, _ in by_period["T5"]} == {tp for tp, _ in by_period["T1"]}
    assert not {t for _, t in by_period["T5"]} & {t for _, t in by_period["T1"]}  # the other half of T1's texts
    assert s == build_chatterbot_stream("it", seed=3, period_samples=40, records=_records())  # seeded


class _TopicEmbedder(Embedder):
    """'topic i' -> a seeded random direction per topic plus small noise (cosine-separated topics)."""

    dim = 16
    model_id = "test-topics-v1"

    def encode(self, texts: list[str]) -> np.ndarray:
        topics = sorted({c for group in CHATTERBOT_PERIODS.values() for c in group})
        centers = l2_normalize(np.random.default_rng(7).normal(size=(len(topics), self.dim)).astype(np.float32))
        rng = np.random.default_rng(len(texts))
        x = centers[[topics.index(t.split()[0]) for t in texts]]
        return l2_normalize(x + rng.normal(0, 0.05, x.shape).astype(np.float32))


def test_stable_stream_draws_every_period_from_t1_and_has_no_transition():
    s = build_chatterbot_stream("it", seed=3, period_samples=40, records=_records(), stable=True)
    assert s.period_lengths() == [("T1", 200)] and s.transitions() == []
    assert set(s.topics) == set(CHATTERBOT_PERIODS["T1"])
    assert len(set(s.texts)) == 60  # all 6 utterances of each T1 category, both halves
    assert s == build_chatterbot_stream("it", seed=3, period_samples=40, records=_records(), stable=True)


def test_a_stable_stream_gives_no_detection_at_a_high_theta_and_only_false_positives_at_a_tiny_one():
    s = build_chatterbot_stream("it", seed=0, period_samples=100, records=_records(), stable=True)
    x = _TopicEmbedder().encode(list(s.texts))
    config = SimulationConfig(thetas=(0.001, 0.3), increment=50, window_size=100, min_samples=100,
                              reference_samples=100, cooldown_samples=0, n_clusters=4,
                              detectors=("js", "fixed-interval", "never"))
    tiny, high, fixed, never = simulate(x, s.periods, config, lang="it")
    assert (high.fired_at, high.updates, high.transitions) == ((), 0, 0)
    assert tiny.updates > 0 and tiny.false_positives == tiny.updates and tiny.fp_rate == 100.0
    assert tiny.false_alarms_per_10k == 10_000 * tiny.updates / 500
    assert (fixed.updates, never.updates) == (0, 0)


def test_read_pool_reports_every_bad_line_and_drops_duplicates(tmp_path):
    good = _write(tmp_path / "pool.jsonl", ['{"text": "ciao", "lang": "it"}', '{"text": "hola", "lang": "es", '
                                            '"topic": "greetings"}', '{"text": "ciao", "lang": "it-IT"}'])
    assert read_pool(good) == [("ciao", "it"), ("hola", "es")]
    bad = _write(tmp_path / "bad.jsonl", ['{"text": "ciao"}', '{"text": "x", "lang": "it", "period": "T1"}',
                                          '{"text": 3, "lang": "it"}'])
    with pytest.raises(DataError) as err:
        read_pool(bad)
    assert err.value.problems == [
        "line 1, field 'lang': missing; every line needs text and lang (a pool row needs no period)",
        "line 2, field 'period': unknown field; allowed: id, lang, meta, text, topic",
        "line 3, field 'text': got 3; use a non-empty string",
    ]


def test_chatterbot_stream_names_the_missing_categories():
    recs = [Record(id="a", lang="it", text="ciao", topic="greetings")]
    with pytest.raises(ValueError, match=r"period T2: language 'it' has none of the categories \['ai'"):
        build_chatterbot_stream("it", period_samples=10, records=recs)


# ------------------------------------------------------------------------------------------------ CLI


class _BlobEmbedder(Embedder):
    """Texts 'a.. / b.. / c..' onto the planted blobs (the CLI's embedder seam)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        x = CENTERS[["abc".index(t[0]) for t in texts]] + rng.normal(0, 0.01, (len(texts), 8)).astype(np.float32)
        return l2_normalize(x)


def _cli(tmp_path: Path, monkeypatch, args: list[str], embedder=None):
    from daemon.cli import simulate as cmd

    _, periods, blobs = _planted()
    stream = tmp_path / "stream.jsonl"
    if not stream.exists():
        _write(stream, [json.dumps({"text": f"{'abc'[b]} {i}", "lang": "it", "topic": "abc"[b], "period": p})
                        for i, (b, p) in enumerate(zip(blobs, periods, strict=True))])
    monkeypatch.setattr(cmd, "_embedder", lambda config: embedder or _BlobEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    return CliRunner().invoke(app, ["--stream", str(stream), "--n-clusters", "3", *args])


def _flat(output: str) -> str:
    """The CLI's output without the error box and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["languages"]
    return report["rows"]


def test_cli_prints_one_json_row_per_detector_and_theta(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, ["--thetas", "0.1,0.2,0.45", "--window-size", "200", "--cooldown", "0",
                                          "--json"])
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["languages"]
    assert (report["lang"], report["n_samples"], report["transitions"]) == ("it", 1000, [600])
    assert report["periods"] == [["p1", 600], ["p2", 400]]
    assert report["config"]["reference"] == "eq3" and report["config"]["pool"] == "stream"
    rows = report["rows"]
    assert [(r["detector"], r["theta"], r["updates"], r["fired_at"], r["false_positives"]) for r in rows] == [
        ("js", 0.1, 1, [700], 0), ("js", 0.2, 1, [800], 0), ("js", 0.45, 0, [], 0), ("calibrated", None, 1, [700], 0),
        ("sequential", None, 1, [800], 0), ("fixed-interval", None, 1, [600], 0), ("never", None, 0, [], 0)]
    assert all(set(r) >= ROW_KEYS for r in rows) and all(r["check_ms"] >= 0 for r in rows)
    assert [len(r["thresholds"]) for r in rows] == [0, 0, 0, 2, 2, 0, 0]
    assert rows[3]["guard_theta"] == 0.15 and rows[4]["thresholds"][0]["unit"] == "nats"


def test_cli_table_and_unknown_language(tmp_path, monkeypatch):
    args = ["--thetas", "0.2", "--window-size", "200", "--detectors", "js,fixed-interval,never"]
    result = _cli(tmp_path, monkeypatch, args)
    assert result.exit_code == 0, result.output
    assert "Table 11 (it)" in result.output and "1 of 1" in result.output and "fixed-interval" in result.output
    result = _cli(tmp_path, monkeypatch, [*args, "--lang", "ja"])
    assert result.exit_code == 2 and "has no lines in ['ja']" in result.output
    result = _cli(tmp_path, monkeypatch, ["--detectors", "js,cusum"])
    assert result.exit_code == 2 and "got 'js,cusum'; give comma-separated names among js,calibrated" in _flat(
        result.output)


def test_cli_languages_file_drives_the_replay_with_the_files_settings(tmp_path, monkeypatch):
    # it: theta 0.1 with settle_s 100 (samples here): detected at 700, dispatched at 800 on the pure p2 window
    langs = tmp_path / "languages.yaml"
    langs.write_text("defaults:\n  window_size: 200\n  min_samples: 200\n  cooldown_s: 0\nlanguages:\n"
                     "  it: {theta: 0.1, settle_s: 100}\n", encoding="utf-8")
    rows = _rows(_cli(tmp_path, monkeypatch, ["--languages", str(langs), "--json"]))
    assert [(r["detector"], r["theta"], r["fired_at"], r["detected_at"]) for r in rows] == [
        ("js", 0.1, [800], [700]), ("fixed-interval", None, [600], [600]), ("never", None, [], [])]
    langs.write_text("defaults:\n  window_size: 200\n  min_samples: 200\n  cooldown_s: 0\nlanguages:\n"
                     "  it: {detector: sequential}\n", encoding="utf-8")
    rows = _rows(_cli(tmp_path, monkeypatch, ["--languages", str(langs), "--detectors", "never", "--json"]))
    assert [(r["detector"], r["theta"], r["fired_at"]) for r in rows] == [("sequential", None, [800]),
                                                                          ("never", None, [])]
    result = _cli(tmp_path, monkeypatch, ["--languages", str(langs), "--window-size", "300"])
    assert result.exit_code == 2 and "--window-size (window_size) come(s) from the languages file" in _flat(
        result.output)
    langs.write_text("languages:\n  it: {theta: 2}\n", encoding="utf-8")
    result = _cli(tmp_path, monkeypatch, ["--languages", str(langs)])
    assert result.exit_code == 2 and "languages.it.theta" in _flat(result.output)


def test_cli_pool_file_feeds_the_eq3_selection(tmp_path, monkeypatch):
    # a pool of C texts only: the update at 700 installs (70, 70, 60 + 160), close to the p2 mix, so theta 0.05
    # does not fire again at 800; with --reference window it learns the mixed window and fires again
    pool = _write(tmp_path / "pool.jsonl", [json.dumps({"text": f"c pool {i}", "lang": "sw"}) for i in range(60)])
    args = ["--thetas", "0.05", "--window-size", "200", "--cooldown", "0", "--detectors", "js", "--pool", str(pool),
            "--json"]
    assert [r["fired_at"] for r in _rows(_cli(tmp_path, monkeypatch, args))] == [[700]]
    assert [r["fired_at"] for r in _rows(_cli(tmp_path, monkeypatch, [*args, "--reference", "window"]))] == [[700, 800]]
    bad = _write(tmp_path / "bad.jsonl", ['{"text": "c", "langs": "sw"}'])
    result = _cli(tmp_path, monkeypatch, [*args[:-3], "--pool", str(bad)])
    assert result.exit_code == 2 and "line 1, field 'langs': unknown field; allowed: id, lang, meta, text, topic" in _flat(
        result.output)


def test_cli_stable_builds_the_no_change_control(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from compass.corpora import chatterbot

    monkeypatch.setattr(chatterbot, "load", lambda langs: SimpleNamespace(records=_records()))
    args = ["--lang", "it", "--stable", "--period-samples", "100", "--increment", "50", "--window-size", "100",
            "--thetas", "0.3", "--n-clusters", "4", "--detectors", "js,never", "--json"]
    from daemon.cli import simulate as cmd

    monkeypatch.setattr(cmd, "_embedder", lambda config: _TopicEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["languages"]
    assert (report["transitions"], report["periods"], report["config"]["stable"]) == ([], [["T1", 500]], True)
    assert [(r["detector"], r["updates"]) for r in report["rows"]] == [("js", 0), ("never", 0)]
    result = CliRunner().invoke(app, ["--stable", "--stream", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 2 and "--stable builds a no-change stream" in _flat(result.output)
