"""Units of the demo that need no Kafka, Redis or model: the phase timer and the bootstrap cache."""

from __future__ import annotations

import json

import pytest

from daemon.demo import timing
from daemon.demo.bootstrap import BootstrapCache
from daemon.demo.timing import PhaseTimer


@pytest.mark.parametrize(("clock", "laps", "phases"), [
    # perf_counter readings: the start, then one per lap, then one for the total
    ([10.0, 10.5, 12.004, 12.0041], ["a", "b"], {"a": 0.5, "b": 1.5, "total_s": 2.0}),
    ([0.0, 3.333, 3.334], ["only"], {"only": 3.33, "total_s": 3.33}),
    ([5.0, 5.0], [], {"total_s": 0.0}),
])
def test_phase_timer_laps(monkeypatch, clock, laps, phases):
    readings = iter(clock)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(readings))
    timer = PhaseTimer()
    for name in laps:
        timer.lap(name)
    timer.total()
    assert timer.phases == phases


@pytest.mark.parametrize(("stored", "key", "codebook", "adapters"), [
    (None, "k1", None, {}),  # no cache yet
    ({"key": "k1", "codebook": "v3", "adapters": {"it": "a1"}}, "k1", "v3", {"it": "a1"}),
    ({"key": "k0", "codebook": "v3", "adapters": {"it": "a1"}}, "k1", None, {}),  # another scenario
])
def test_bootstrap_cache_reads(tmp_path, stored, key, codebook, adapters):
    if stored is not None:
        (tmp_path / "bootstrap.json").write_text(json.dumps(stored))
    cache = BootstrapCache.load(tmp_path, key)
    assert (cache.codebook(), cache.adapters()) == (codebook, adapters)
    cache.forget()  # a codebook fitted anew: no adapter of the cache fits it
    assert (cache.codebook(), cache.adapters()) == (None, {})


def test_bootstrap_cache_saves_what_the_next_run_reuses(tmp_path):
    BootstrapCache.load(tmp_path, "k1").save("v4", {"it": "a2", "es": "a3"})
    again = BootstrapCache.load(tmp_path, "k1")
    assert (again.codebook(), again.adapters()) == ("v4", {"it": "a2", "es": "a3"})
