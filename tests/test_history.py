"""infra/history.py on the real Redis: capping and ordering with exact values, and the daemon's hooks (every
check that computed or tried to compute JS; every event EventInbox.poll reads from compass.events)."""

from __future__ import annotations

import json
import math

import pytest

from infra import history
from infra.clients import kafka_producer
from infra.history import HistoryError, js_history, queue_check, queue_event, record_check, timeline
from infra.messages import Event, encode
from infra.reference import set_reference
from infra.window import Assignment, WindowStore

LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, rearm_ratio: 0.5, cooldown_s: 100}
languages:
  sw: {}
"""
# window [0, 0, 0, 0] against P_ref [0.5, 0.5, 0] (hand-computed in tests/test_daemon.py)
JS_DRIFT = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
T0 = 1_000_000.0


def reading(i: int, state: str = "below_threshold") -> dict:
    return {"at": T0 + i, "js": i / 100, "theta": 0.2, "n_samples": 10 * i, "state": state}


def test_keys_are_hash_tagged_per_language():
    assert history.js_key("it", "cp") == "cp:{it}:history:js"
    assert history.events_key("it", "cp") == "cp:{it}:history:events"


def test_js_history_keeps_the_newest_cap_oldest_first(redis):
    for i in range(7):
        record_check(redis, "it", reading(i), "cp", cap=5)
    assert js_history(redis, "it", "cp") == [reading(i) for i in (2, 3, 4, 5, 6)]
    assert js_history(redis, "it", "cp", limit=2) == [reading(5), reading(6)]
    assert js_history(redis, "it", "cp", limit=50) == [reading(i) for i in (2, 3, 4, 5, 6)]
    assert js_history(redis, "it", "cp", limit=0) == []
    assert js_history(redis, "es", "cp") == []
    assert redis.llen("cp:{it}:history:js") == 5


def test_record_check_stores_the_reading_fields_only(redis):
    row = record_check(redis, "it", {"at": 5, "js": None, "theta": 0.15, "n_samples": 3, "state": "insufficient_samples",
                                     "detail": "x", "noise_share": 0.1})
    assert row == {"at": 5.0, "js": None, "theta": 0.15, "n_samples": 3, "state": "insufficient_samples"}
    assert json.loads(redis.lindex("compass:{it}:history:js", 0)) == row
    assert js_history(redis, "it") == [row]


def test_queued_checks_store_as_record_check_does(redis):
    with redis.pipeline(transaction=True) as pipe:
        rows = [queue_check(pipe, lang, reading(i), "cp", cap=2) for i in range(3) for lang in ("it", "es")]
        with pytest.raises(HistoryError, match="reading field 'state'"):  # refused before anything is queued
            queue_check(pipe, "it", {"at": 1, "js": 0.1, "theta": 0.2, "n_samples": 4}, "cp")
        pipe.execute()
    assert rows[:2] == [reading(0), reading(0)]
    assert js_history(redis, "it", "cp") == js_history(redis, "es", "cp") == [reading(1), reading(2)]


@pytest.mark.parametrize("bad, message", [
    ({"at": 1, "js": 0.1, "theta": 0.2, "n_samples": 4}, "reading field 'state': got None; must be a non-empty string (the check's state)"),
    ({"at": 1, "js": math.nan, "theta": 0.2, "n_samples": 4, "state": "ok"}, "reading field 'js': got nan; must be a finite number or None"),
    ({"at": None, "js": 0.1, "theta": 0.2, "n_samples": 4, "state": "ok"}, "reading field 'at': got None; must be a finite number"),
    ({"at": 1, "js": 0.1, "theta": 0.2, "n_samples": -1, "state": "ok"}, "reading field 'n_samples': got -1; must be an integer >= 0"),
])
def test_bad_readings_are_refused_with_the_field_named(redis, bad, message):
    with pytest.raises(HistoryError) as e:
        record_check(redis, "it", bad)
    assert str(e.value) == message
    assert js_history(redis, "it") == []


def test_bad_cap_and_limit(redis):
    with pytest.raises(HistoryError, match=r"^cap: got 0; must be an integer >= 1"):
        record_check(redis, "it", reading(1), cap=0)
    with pytest.raises(HistoryError, match=r"^limit: got -1; must be an integer >= 0 or None"):
        timeline(redis, "it", limit=-1)


def test_timeline_keeps_the_newest_cap_newest_first(redis):
    evs = [Event("update_started" if i % 2 else "drift_detected", "it", T0 + i, f"job-{i}", {"i": i}) for i in range(6)]
    with redis.pipeline(transaction=True) as pipe:
        for ev in evs:
            queue_event(pipe, ev, "cp", cap=4)
        queue_event(pipe, Event("drift_detected", "es", T0, "job-es"), "cp", cap=4)
        pipe.execute()
    want = [ev.to_json() for ev in reversed(evs[2:])]
    assert timeline(redis, "it", "cp") == want
    assert [e["job_id"] for e in timeline(redis, "it", "cp", limit=2)] == ["job-5", "job-4"]
    assert timeline(redis, "it", "cp", limit=0) == []
    assert [e["job_id"] for e in timeline(redis, "es", "cp")] == ["job-es"]


# ------------------------------------------------------------------------------------------ the daemon's hooks


@pytest.fixture
def daemon(make_daemon):
    return make_daemon(LANGS, "history")


def fill(redis, buckets: list[int], start: int) -> None:
    items = [Assignment(f"q{start + i}", b, "compass.queries", 0, start + i, f"t{i}") for i, b in enumerate(buckets)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)  # window_size 4


def test_daemon_records_every_check_that_measures_js(daemon, redis):
    assert daemon.check("sw", now=T0).state == "no_reference"  # empty window, no P_ref: recorded, js None
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    fill(redis, [0, 0], start=0)
    assert daemon.check("sw", now=T0 + 1).state == "insufficient_samples"  # below min_samples: recorded
    daemon.pause("sw")
    assert daemon.check("sw", now=T0 + 2).state == "paused"  # not measured: not recorded
    daemon.resume("sw")
    fill(redis, [0, 0], start=2)
    result = daemon.check("sw", now=T0 + 3)
    assert (result.state, result.fired) == ("drift", True)
    assert daemon.check("sw", now=T0 + 4).state == "updating"  # not recorded
    rows = js_history(redis, "sw", daemon.prefix)
    assert [(r["at"], r["state"], r["n_samples"], r["theta"]) for r in rows] == [
        (T0, "no_reference", 0, 0.2), (T0 + 1, "insufficient_samples", 2, 0.2), (T0 + 3, "drift", 4, 0.2)]
    assert rows[0]["js"] is None
    assert rows[1]["js"] == pytest.approx(0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
                                          + 0.5 * math.log2(1 / 0.75))  # JS is computed below min_samples too
    assert rows[2]["js"] == pytest.approx(JS_DRIFT)


def test_event_inbox_records_every_event_it_reads(daemon, redis):
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    fill(redis, [0, 0, 0, 0], start=0)
    job = daemon.check("sw", now=T0).job  # the daemon's own drift_detected + update_enqueued
    started = Event("update_started", "sw", T0 + 5, job.job_id, {"attempt": 1})
    p = kafka_producer(daemon.config.kafka)
    p.send(daemon.config.kafka.events_topic, key=b"sw", value=encode(started)).get(timeout=10)
    p.close()
    queued = 0
    for _ in range(50):
        queued += daemon.poll_events(timeout_ms=500)
        if len(timeline(redis, "sw", daemon.prefix)) >= 3:
            break
    got = timeline(redis, "sw", daemon.prefix)
    assert [(e["type"], e["job_id"]) for e in got] == [
        ("update_started", job.job_id), ("update_enqueued", job.job_id), ("drift_detected", job.job_id)]
    assert got[0] == started.to_json()
    assert got[2]["data"]["js"] == pytest.approx(JS_DRIFT)
    assert queued == 1  # only the worker's report goes to the inbox


def test_history_caps_come_from_the_daemon_config(make_daemon, redis, services):
    d = make_daemon(LANGS, "history-caps", daemon=services.config.daemon.model_copy(update={
        "check_interval_s": 1.0, "lease_ttl_ms": 5000, "history_js_max": 2, "history_events_max": 1,
        "events_group_id": "test-history-caps"}))
    for i in range(4):  # no P_ref: each check is recorded with js None
        d.check("sw", now=T0 + i)
    assert [r["at"] for r in js_history(redis, "sw", d.prefix)] == [T0 + 2, T0 + 3]
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    fill(redis, [0, 0, 0, 0], start=0)
    job = d.check("sw", now=T0 + 10).job  # drift_detected + update_enqueued: only the newest is kept
    for _ in range(50):
        d.poll_events(timeout_ms=500)
        if [e["type"] for e in timeline(redis, "sw", d.prefix)] == ["update_enqueued"]:
            break
    assert [(e["type"], e["job_id"]) for e in timeline(redis, "sw", d.prefix)] == [("update_enqueued", job.job_id)]
