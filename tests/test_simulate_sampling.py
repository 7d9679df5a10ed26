"""`compass simulate` with a sampled language (issue 20): the replay drops queries by their id as the consumers do,
and reports every delay and false-alarm spacing in kept samples and in seconds.

The stream: blobs A, B, C; 100-sample blocks (A, B, C) = (50, 50, 0) before sample 2400 (period p1) and
(20, 20, 60) from it (p2), 4000 samples, offered at 100 queries a second. The simulated queries' ids are
``sim:it:{i}``, so which ones rate 0.25 keeps is computed here by hand with ``compass.sampling.unit``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from compass.drift.simulate import SimulationConfig, sample, simulate
from compass.embed import Embedder, l2_normalize
from compass.languages import LanguageSettings
from compass.sampling import unit

P1, P2 = np.array([50, 50, 0]), np.array([20, 20, 60])
SHIFT, N, INC, Q = 2400, 4000, 100, 100.0
CENTERS = np.eye(3, 8, dtype=np.float32)
ARGS = ["--n-clusters", "3", "--thetas", "0.1", "--window-size", "200", "--cooldown", "0",
        "--detectors", "js,fixed-interval,never", "--arrival-rate", "100"]


def _blobs() -> list[int]:
    rng = np.random.default_rng(0)
    out: list[int] = []
    for start in range(0, N, INC):
        block = np.repeat(np.arange(3), P1 if start < SHIFT else P2)
        rng.shuffle(block)
        out += block.tolist()
    return out


def _periods() -> list[str]:
    return ["p1" if i < SHIFT else "p2" for i in range(N)]


class _BlobEmbedder(Embedder):
    """Texts 'a.. / b.. / c..' onto the blobs, with a little seeded noise."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        x = CENTERS[["abc".index(t[0]) for t in texts]] + rng.normal(0, 0.01, (len(texts), 8)).astype(np.float32)
        return l2_normalize(x)


def _cli(tmp_path: Path, monkeypatch, args: list[str]):
    from daemon.cli import simulate as cmd

    stream = tmp_path / "stream.jsonl"
    if not stream.exists():
        lines = [json.dumps({"text": f"{'abc'[b]} {i}", "lang": "it", "period": p})
                 for i, (b, p) in enumerate(zip(_blobs(), _periods(), strict=True))]
        stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(cmd, "_embedder", lambda config: _BlobEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    return CliRunner().invoke(app, ["--stream", str(stream), *args])


def _report(result) -> dict:
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["languages"]
    return report


def _flat(output: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _kept(rate: float) -> list[int]:
    """The offered indices rate keeps: the consumers' rule on the simulated ids, by hand."""
    return [i for i in range(N) if unit(f"sim:it:{i}") < rate]


def test_cli_sampling_rate_reports_delays_in_kept_samples_and_in_seconds(tmp_path, monkeypatch):
    kept = _kept(0.25)
    change = next(k for k, i in enumerate(kept) if i >= SHIFT)  # the first kept p2 query
    report = _report(_cli(tmp_path, monkeypatch, [*ARGS, "--sampling-rate", "0.25", "--json"]))
    assert (report["n_samples"], report["transitions"]) == (len(kept), [change])
    s = report["sampling"]
    assert (s["offered"], s["kept"], s["duration_s"], s["offered_transitions"]) == (N, len(kept), 40.0, [SHIFT])
    assert s["transitions_s"] == [24.0]  # the change itself: offered 2400 at 100/s
    assert report["config"]["sampling_rate"] == 0.25 and report["config"]["arrival_rate"] == Q
    js, fixed, never = report["rows"]
    assert js["detected"] == 1
    [d] = js["delays"]
    assert d == js["fired_at"][0] - change  # kept samples of p2 seen at the update
    # seconds: the offered queries from the change through the detecting kept one (kept index change + d - 1)
    offered = kept[change + d - 1] + 1 - SHIFT
    assert js["delays_offered"] == [offered] and js["delays_s"] == [pytest.approx(offered / Q)]
    assert js["avg_delay_s"] == pytest.approx(offered / Q)
    assert js["fired_at_s"] == [pytest.approx((kept[t - 1] + 1) / Q) for t in js["fired_at"]]
    # a quarter of the queries kept: each kept sample stands for about 4 offered ones (a fixed hash, so fixed)
    assert 3 < offered / d < 5
    fp = js["false_positives"]
    assert js["false_alarm_spacing"] == (len(kept) / fp if fp else None)
    assert js["false_alarm_spacing_s"] == (40.0 / fp if fp else None)
    assert (fixed["delays"], fixed["delays_s"]) == ([0], [0.0])
    assert (never["delays_s"], never["avg_delay_s"]) == ([None], None)

    # the same stream unsampled at the same arrival rate: kept == offered, so seconds are samples / Q
    report = _report(_cli(tmp_path, monkeypatch, [*ARGS, "--json"]))
    js = report["rows"][0]
    assert (report["n_samples"], report["transitions"], report["sampling"]["kept"]) == (N, [SHIFT], N)
    assert js["delays_offered"] == js["delays"]
    assert js["delays_s"] == [pytest.approx(d / Q) for d in js["delays"]]


def test_cli_table_gives_delays_and_updates_in_seconds(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, [*ARGS, "--sampling-rate", "0.25"])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert "avg delay (s)" in out
    assert re.search(r"js 0\.10: updates at samples \[\d+.*\] = \[[\d.]+.*\] s, delay per transition \[\d+\] "
                     r"samples = \[[\d.]+\] s", out), out
    assert f"it: sampling rate 0.25 of 100 queries/s: kept {len(_kept(0.25))} of {N} offered" in out
    assert "= [24.0] s" in out  # the transition, in seconds


def _without_wall_time(report: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "check_ms"} for r in report["rows"]]


def test_a_cap_above_the_arrival_rate_keeps_every_query_and_changes_nothing(tmp_path, monkeypatch):
    # 200/s over 100/s offered: every bucket's rate is min(1, 200 * 1 / 100) = 1
    plain = _report(_cli(tmp_path, monkeypatch, [*ARGS, "--json"]))
    capped = _report(_cli(tmp_path, monkeypatch, [*ARGS, "--max-per-second", "200", "--json"]))
    assert capped["sampling"]["kept"] == N and capped["config"]["max_per_second"] == 200
    assert (capped["n_samples"], capped["transitions"], capped["periods"]) == (
        plain["n_samples"], plain["transitions"], plain["periods"])
    assert _without_wall_time(capped) == _without_wall_time(plain)


def test_a_cap_below_the_arrival_rate_keeps_the_first_bucket_then_n_a_second(tmp_path, monkeypatch):
    # 25/s of 100/s in 1 s buckets with a 10 s look-back (consumer.sampling_bucket_s's and sampling_lookback_s's
    # defaults): bucket 0 (offered 0-99) has nothing before it and keeps all, every later one
    # min(1, 25 * span / (100 * span)) = 0.25
    kept = [i for i in range(N) if i < 100 or unit(f"sim:it:{i}") < 0.25]
    report = _report(_cli(tmp_path, monkeypatch, [*ARGS, "--max-per-second", "25", "--json"]))
    assert (report["n_samples"], report["sampling"]["kept"]) == (len(kept), len(kept))
    js = report["rows"][0]
    [d] = js["delays"]
    change = next(k for k, i in enumerate(kept) if i >= SHIFT)
    assert js["delays_offered"] == [kept[change + d - 1] + 1 - SHIFT]


def test_in_process_rate_one_is_the_unsampled_replay_and_from_settings_reads_sampling():
    x = _BlobEmbedder().encode([f"{'abc'[b]} {i}" for i, b in enumerate(_blobs())])
    base = dict(increment=INC, window_size=200, min_samples=200, reference_samples=200, cooldown_samples=0,
                n_clusters=3, thetas=(0.1,), detectors=("js",))
    plain = simulate(x, _periods(), SimulationConfig(**base), lang="it")
    explicit = simulate(x, _periods(), SimulationConfig(**base, sampling_rate=1.0), lang="it")
    assert [(r.fired_at, r.delays, r.extra["delays_s"]) for r in plain] == [
        (r.fired_at, r.delays, r.extra["delays_s"]) for r in explicit]
    assert plain[0].extra["delays_s"] == [plain[0].delays[0] / 10.0]  # the default arrival rate, 10/s
    settings = LanguageSettings(theta=0.1, window_size=200, min_samples=200, sampling={"rate": 0.25})
    config = SimulationConfig.from_settings(settings, increment=INC, n_clusters=3, arrival_rate=Q)
    assert (config.sampling_rate, config.max_per_second, config.sampling.kept_per_s) == (0.25, None, 25.0)
    assert sample(_periods(), config, "it").kept.tolist() == _kept(0.25)
    [js, _, _] = simulate(x, _periods(), config, lang="it")
    assert js.n_samples == len(_kept(0.25))


@pytest.mark.parametrize("args, match", [
    (["--sampling-rate", "0.5", "--max-per-second", "20"], "--sampling-rate 0.5 and --max-per-second 20.0: give one"),
    (["--sampling-rate", "0"], "got 0.0; give the share of queries kept, in (0, 1]"),
    (["--sampling-rate", "1.5"], "got 1.5; give the share of queries kept"),
    (["--max-per-second", "-1"], "got -1.0; give the most queries kept a second, > 0"),
    (["--arrival-rate", "0"], "got 0.0; give the language's offered queries a second, > 0"),
    (["--sampling-rate", "0.01"], "sampling keeps"),  # about 40 of 4000: fewer than the 200 reference samples
    (["--sampling-rate", "0.5", "--through-kafka"], "--sampling-rate 0.5: --through-kafka replays every query"),
])
def test_cli_sampling_errors_name_the_flag_value_and_fix(tmp_path, monkeypatch, args, match):
    result = _cli(tmp_path, monkeypatch, [*ARGS, *args])
    assert result.exit_code == 2 and match in _flat(result.output), result.output


def test_cli_languages_file_sampling_is_applied_and_its_flags_refused(tmp_path, monkeypatch):
    langs = tmp_path / "languages.yaml"
    langs.write_text("defaults:\n  window_size: 200\n  min_samples: 200\n  cooldown_s: 0\nlanguages:\n"
                     "  it: {theta: 0.1, sampling: {rate: 0.25}}\n", encoding="utf-8")
    args = ["--n-clusters", "3", "--arrival-rate", "100", "--languages", str(langs)]
    report = _report(_cli(tmp_path, monkeypatch, [*args, "--json"]))
    assert report["sampling"]["kept"] == len(_kept(0.25)) and report["config"]["sampling_rate"] == 0.25
    result = _cli(tmp_path, monkeypatch, [*args, "--sampling-rate", "0.5"])
    assert result.exit_code == 2 and "--sampling-rate (sampling.rate) come(s) from the languages file" in _flat(
        result.output)
