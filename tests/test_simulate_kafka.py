"""`compass simulate --through-kafka`: the planted stream of tests/test_simulate.py through the real monitor,
Redis and daemon (which calls the drift lifecycle itself) fires at the same samples as the in-process replay.

The stream: three blobs, (A, B, C) = (50, 50, 0) per 100-sample block up to sample 600, (20, 20, 60) after;
window 200 (two blocks), cooldown 0. Texts are "blob:index"; a tiny deterministic embedder maps each to its
blob's centre plus noise seeded by the index, so both modes see the same vectors. With the window reference,
theta 0.05 fires at 700 and, after the simulated update learned the mixed window, again at 800 (the re-reference
path). Theta 0.1 with a 100-sample settle detects at 700 and dispatches at 800; 0.3 fires at 800; the calibrated
detector fires at 700, the sequential one (fed the window's new bucket ids by the daemon) one check later at 800.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from compass.drift.simulate import SimulationConfig, Stream, simulate, write_stream
from compass.embed import Embedder, l2_normalize
from daemon.demo.simulate_kafka import (
    SimulationSetupError,
    check_supported,
    simulate_through_kafka,
    sweep_through_kafka,
)

P1, P2 = np.array([50, 50, 0]), np.array([20, 20, 60])
SHIFT, N, INC, WINDOW = 600, 1000, 100, 200
CENTERS = np.eye(3, 8, dtype=np.float32)


class BlobEmbedder(Embedder):
    """"b:i" -> blob b's centre plus N(0, 0.01) noise seeded by i, unit norm."""

    dim = 8
    model_id = "test-blobs-v1"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            b, i = (int(p) for p in text.split(":"))
            noise = np.random.default_rng(i).normal(0, 0.01, size=8).astype(np.float32)
            rows.append(CENTERS[b] + noise)
        return l2_normalize(np.asarray(rows, dtype=np.float32))


def _stream() -> Stream:
    rng = np.random.default_rng(0)
    blobs: list[int] = []
    for start in range(0, N, INC):
        block = np.repeat(np.arange(3), P1 if start < SHIFT else P2)
        rng.shuffle(block)
        blobs += block.tolist()
    texts = tuple(f"{b}:{i}" for i, b in enumerate(blobs))
    return Stream("sw", texts, tuple("p1" if i < SHIFT else "p2" for i in range(N)))


def _config(thetas: tuple[float, ...], **kw) -> SimulationConfig:
    base = dict(increment=INC, window_size=WINDOW, min_samples=WINDOW, reference_samples=WINDOW,
                cooldown_samples=0, n_clusters=3, seed=0, detectors=("js",))
    return SimulationConfig(thetas=thetas, **{**base, **kw})


KEYS = ("detector", "theta", "updates", "detected", "fired_at", "detected_at", "delays", "false_positives",
        "n_checks")


def _same(got, want) -> None:
    assert [{k: getattr(r, k) for k in KEYS} for r in got] == [{k: getattr(r, k) for k in KEYS} for r in want]


def test_through_kafka_fires_where_the_in_process_replay_fires(services):
    stream, embedder = _stream(), BlobEmbedder()
    x = embedder.encode(list(stream.texts))
    window = _config((0.05,), reference="window")
    [expected] = simulate(x, stream.periods, window)
    assert expected.fired_at == (700, 800)
    row = simulate_through_kafka(stream, x, window, services.config, theta=0.05, embedder=embedder)
    _same([row], [expected])
    settled = _config((0.1,), settle_samples=100)
    [expected] = simulate(x, stream.periods, settled)
    assert (expected.fired_at, expected.detected_at) == ((800,), (700,))
    _same(sweep_through_kafka(stream, x, settled, services.config, embedder=embedder), [expected])


def _cli(tmp_path, monkeypatch, *extra: str):
    from daemon.cli import simulate as cmd

    path = tmp_path / "stream.jsonl"
    write_stream(path, _stream())
    monkeypatch.setattr(cmd, "_embedder", lambda config: BlobEmbedder())
    app = typer.Typer()
    app.command()(cmd.simulate)
    return CliRunner().invoke(app, ["--stream", str(path), "--window-size", "200", "--cooldown", "0",
                                    "--n-clusters", "3", *extra])


def test_cli_through_kafka_prints_the_in_process_rows(services, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPASS_KAFKA_BOOTSTRAP", services.kafka_bootstrap)
    monkeypatch.setenv("COMPASS_REDIS_URL", services.redis_url)
    args = ("--thetas", "0.3", "--detectors", "js,calibrated,sequential,fixed-interval,never", "--json")
    [local, kafka] = [_cli(tmp_path, monkeypatch, *args, *flag) for flag in ((), ("--through-kafka",))]
    assert local.exit_code == 0, local.output
    assert kafka.exit_code == 0, kafka.output
    [want], [got] = json.loads(local.stdout)["languages"], json.loads(kafka.stdout)["languages"]
    assert got["config"]["through_kafka"] and not want["config"]["through_kafka"]
    assert [{k: r[k] for k in KEYS} for r in got["rows"]] == [{k: r[k] for k in KEYS} for r in want["rows"]]
    assert [(r["detector"], r["fired_at"]) for r in got["rows"]] == [
        ("js", [800]), ("calibrated", [700]), ("sequential", [800]), ("fixed-interval", [600]),
        ("never", [])]
    # the learned thresholds: after the initial reference's burn-in (check 200) and after the update's (900)
    assert [[t["at"] for t in r["thresholds"]] for r in got["rows"][1:3]] == [[200, 900], [200, 1000]]


def test_cli_refuses_what_through_kafka_cannot_do(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, "--through-kafka", "--eta", "0.5")
    assert result.exit_code != 0 and "eta" in result.output
    result = _cli(tmp_path, monkeypatch, "--stack")
    assert result.exit_code != 0 and "--through-kafka" in result.output


def test_settings_the_kafka_mode_cannot_reproduce_are_refused():
    with pytest.raises(SimulationSetupError, match="eta"):
        check_supported(_config((0.1,), eta=0.5))
    check_supported(_config((0.1,), settle_samples=100))  # the daemon settles itself
