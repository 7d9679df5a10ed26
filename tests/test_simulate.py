"""`compass simulate`: the offline replay of a multi-period stream through monitor and trigger (App. D.2, Table 11).

The planted stream: three well-separated blobs A, B, C; blocks of 100 samples with exact compositions,
(A, B, C) = (50, 50, 0) for samples 0-599 (period p1) and (20, 20, 60) from sample 600 (period p2). With
increment 100 and window 200 every window is two whole blocks, so P_mon at every check is known exactly
and the expected JS per check is computed here from the counts alone.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from compass.data import Record
from compass.divergence import js_divergence
from compass.drift.simulate import (
    CHATTERBOT_PERIODS,
    SimulationConfig,
    build_chatterbot_stream,
    read_stream,
    score,
    simulate,
    write_stream,
)
from compass.embed import l2_normalize
from compass.errors import DataError

P1, P2 = np.array([50, 50, 0]), np.array([20, 20, 60])
SHIFT, N, INC, WINDOW = 600, 1000, 100, 200
CENTERS = np.eye(3, 8, dtype=np.float32)  # orthogonal unit vectors: cosine-separated blobs


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
                cooldown_samples=0, n_clusters=3, seed=0)
    return SimulationConfig(thetas=thetas, **{**base, **kw})


def _expected_js(t: int) -> float:
    """JS(P_ref || P_mon) at check t before any update: P_ref = the first two blocks, P_mon = the last two."""
    window = sum(P1 if s < SHIFT else P2 for s in range(t - WINDOW, t, INC))
    return js_divergence(2 * P1, window)


def test_expected_js_per_check_is_what_the_test_assumes():
    # by hand: window (70, 70, 60) at 700 gives 0.169 bits, (40, 40, 120) from 800 on gives 0.396
    assert [round(_expected_js(t), 3) for t in range(200, 1001, 100)] == [0, 0, 0, 0, 0, 0.169, 0.396, 0.396, 0.396]


@pytest.mark.parametrize("theta", [0.1, 0.2, 0.3])
def test_simulate_finds_the_planted_shift_at_the_first_check_whose_js_exceeds_theta(theta):
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((theta,)))
    expected_t = next(t for t in range(WINDOW, N + 1, INC) if _expected_js(t) > theta)
    assert expected_t == (700 if theta < 0.169 else 800)
    assert row.fired_at == (expected_t,)
    assert row.delays == (expected_t - SHIFT,)
    assert (row.updates, row.detected, row.transitions, row.false_positives, row.fp_rate) == (1, 1, 1, 0, 0.0)
    assert row.avg_delay == expected_t - SHIFT
    assert row.n_checks == N // INC


def test_a_theta_above_every_js_never_fires():
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((0.45,)))
    assert (row.updates, row.detected, row.avg_delay, row.delays) == (0, 0, None, (None,))


def test_sweep_updates_never_increase_with_theta():
    # by construction: p1 windows equal P_ref exactly (JS 0, no trigger), p2 windows are all equal after 800.
    # An update re-arms the trigger (TriggerState.updated). A theta that fired at 700 learned the mixed window
    # (70, 70, 60); the pure p2 window (40, 40, 120) differs from it by JS = 0.0667 bits (by hand), so only
    # theta = 0.05 fires once more at 800 (cooldown 0 here); above 0.396 nothing fires
    x, periods, _ = _planted()
    thetas = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
    rows = simulate(x, periods, _config(thetas))
    assert round(js_divergence(np.array([70, 70, 60]), np.array([40, 40, 120])), 4) == 0.0667
    assert [r.theta for r in rows] == list(thetas)
    assert [r.updates for r in rows] == [2, 1, 1, 1, 1, 0, 0]
    assert all(a.updates >= b.updates for a, b in zip(rows, rows[1:], strict=False))
    assert [r.fired_at for r in rows[:5]] == [(700, 800), (700,), (700,), (800,), (800,)]


def test_update_lag_takes_the_window_later():
    # theta 0.1 fires at 700 on a mixed window; updating at 800 instead learns the pure p2 window: still 1 update
    x, periods, _ = _planted()
    [now, later] = [simulate(x, periods, _config((0.1,), update_lag=lag))[0] for lag in (0, 100)]
    assert now.fired_at == later.fired_at == (700,)


def test_eta_moves_the_codebook_without_changing_the_planted_outcome():
    x, periods, _ = _planted()
    [row] = simulate(x, periods, _config((0.2,), eta=0.5))
    assert row.fired_at == (800,)


def test_score_counts_the_first_trigger_after_a_transition_and_the_rest_as_false_positives():
    delays, fps = score([500, 2300, 2800, 4000, 4100, 6100], [2000, 4000, 6000])
    # 500: before any transition; 2800: second in T2; 4000: the check that ends T2 still belongs to T2
    assert (delays, fps) == ([300, 100, 100], 3)
    assert score([], [10]) == ([None], 0)


def test_config_errors_name_the_parameter_value_and_fix():
    with pytest.raises(ValueError, match=r"SimulationConfig.thetas: got \(0.0,\); give one or more JS"):
        SimulationConfig(thetas=(0.0,))
    with pytest.raises(ValueError, match=r"SimulationConfig.min_samples: got 600; it must not exceed window_size"):
        SimulationConfig(window_size=500, min_samples=600)
    with pytest.raises(ValueError, match=r"SimulationConfig.fit_on: got 'all'; use 'pool'"):
        SimulationConfig(fit_on="all")  # type: ignore[arg-type]
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


def test_chatterbot_stream_names_the_missing_categories():
    recs = [Record(id="a", lang="it", text="ciao", topic="greetings")]
    with pytest.raises(ValueError, match=r"period T2: language 'it' has none of the categories \['ai'"):
        build_chatterbot_stream("it", period_samples=10, records=recs)


# ------------------------------------------------------------------------------------------------ CLI


class _BlobEmbedder:
    """Texts 'a.. / b.. / c..' onto the planted blobs (the CLI's embedder seam)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        x = CENTERS[["abc".index(t[0]) for t in texts]] + rng.normal(0, 0.01, (len(texts), 8)).astype(np.float32)
        return l2_normalize(x)


def test_cli_prints_the_sweep_as_json(tmp_path, monkeypatch):
    from daemon.commands import simulate as cmd

    _, periods, blobs = _planted()
    lines = [json.dumps({"text": f"{'abc'[b]} {i}", "lang": "it", "topic": "abc"[b], "period": p})
             for i, (b, p) in enumerate(zip(blobs, periods, strict=True))]
    stream = _write(tmp_path / "stream.jsonl", lines)
    monkeypatch.setattr(cmd, "_embedder", lambda config: _BlobEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    result = CliRunner().invoke(app, ["--stream", str(stream), "--thetas", "0.1,0.2,0.45", "--window-size", "200",
                                      "--cooldown", "0", "--n-clusters", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    [report] = out["languages"]
    assert (report["lang"], report["n_samples"], report["transitions"]) == ("it", 1000, [600])
    assert report["periods"] == [["p1", 600], ["p2", 400]]
    assert [(r["theta"], r["updates"], r["fired_at"], r["false_positives"]) for r in report["rows"]] == [
        (0.1, 1, [700], 0), (0.2, 1, [800], 0), (0.45, 0, [], 0)]
    assert all(r["check_ms"] >= 0 for r in report["rows"])


def test_cli_table_and_unknown_language(tmp_path, monkeypatch):
    from daemon.commands import simulate as cmd

    _, periods, blobs = _planted()
    stream = _write(tmp_path / "stream.jsonl", [json.dumps({"text": f"{'abc'[b]} {i}", "lang": "it", "period": p})
                                                 for i, (b, p) in enumerate(zip(blobs, periods, strict=True))])
    monkeypatch.setattr(cmd, "_embedder", lambda config: _BlobEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    args = ["--stream", str(stream), "--thetas", "0.2", "--window-size", "200", "--n-clusters", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Table 11 (it)" in result.output and "1 of 1" in result.output
    result = CliRunner().invoke(app, [*args, "--lang", "ja"])
    assert result.exit_code == 2 and "has no lines in ['ja']" in result.output
