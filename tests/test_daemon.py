"""The drift daemon on the real Kafka and Redis: JS over real windows, the trigger's guards, dispatch, the lease.

Windows are filled through WindowStore.apply_batch with a 3-bucket codebook "v1" (clusters 0 and 1, noise 2).
The language "sw" has window_size 4 = min_samples 4, theta 0.2, rearm below 0.1, cooldown 100 s, so each
``fill`` replaces the whole window. P_ref is [0.5, 0.5, 0] unless a test says otherwise; hand-computed JS:
  window [0, 0, 0, 0] -> P_mon [1, 0, 0]:       M = [.75, .25, 0],
      JS = 1/2 (1/2 log2(.5/.75) + 1/2 log2(.5/.25)) + 1/2 log2(1/.75) = 0.31127812...  (> theta: drift)
  window [0, 1, 0, 1] -> P_mon = P_ref:         JS = 0
  P_ref [1, 0, 0] vs window [1, 1, 1, 1]:       disjoint supports, JS = 1 (the upper bound)
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from itertools import count

import numpy as np
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from compass.cluster import make_clusterer
from compass.drift import stale
from compass.languages import load_languages
from daemon.scheduler.dispatch import Dispatcher, inbox_key
from daemon.scheduler.reload import ReloadingLanguages
from daemon.scheduler.service import Daemon
from infra import history
from infra.clients import kafka_producer
from infra.codebook import CodebookStore
from infra.messages import BadMessage, Event, UpdateJob, decode_event, decode_job, encode
from infra.reference import BadReference, get_reference, set_reference
from infra.unserved import Traffic, UnservedStore
from infra.window import Assignment, WindowStore

LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, rearm_ratio: 0.5, max_rejections: 2, cooldown_s: 100}
languages:
  sw: {}
  yo: {theta: 1.0}
"""
JS_DRIFT = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
T0 = 1_000_000.0


@pytest.fixture
def cfg(services, topic_factory):
    base = services.config
    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"jobs_topic": topic_factory(), "events_topic": topic_factory()}),
        "daemon": base.daemon.model_copy(update={"check_interval_s": 1.0, "lease_ttl_ms": 5000,
                                                 "update_timeout_s": 500.0,
                                                 "events_group_id": f"test-daemon-{uuid.uuid4().hex[:8]}"}),
    })


@pytest.fixture
def langs_path(tmp_path):
    path = tmp_path / "languages.yaml"
    path.write_text(LANGS)
    return path


@pytest.fixture
def make_daemon(cfg, langs_path, redis):
    made: list[Daemon] = []

    def make(owner: str = "daemon-a", config=None, **kwargs) -> Daemon:
        d = Daemon(config or cfg, ReloadingLanguages(langs_path), owner=owner, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
        d.client.close()


_offsets = count()


def fill(redis, lang: str, buckets: list[int], version: str = "v1", n_buckets: int = 3) -> None:
    """Replace ``lang``'s window (size len(buckets)) with queries in these buckets, oldest first."""
    items = []
    for b in buckets:
        off = next(_offsets)
        items.append(Assignment(f"q{off}", b, "compass.queries", 0, off, f"text {off}"))
    WindowStore(redis).apply_batch({lang: (len(buckets), items)}, version, n_buckets)


def ref(redis, lang: str = "sw", probs=(0.5, 0.5, 0.0), version: str = "v1", adapter: str = "a1") -> None:
    set_reference(redis, lang, probs=list(probs), codebook_version=version, adapter_version=adapter)


def read_topic(cfg, topic: str) -> list:
    """Every message of a one-partition topic, by its end offset (exact, no waiting for 'silence')."""
    c = KafkaConsumer(**cfg.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        c.seek_to_beginning(tp)
        out: list = []
        for _ in range(100):
            if len(out) >= end:
                break
            for recs in c.poll(timeout_ms=500).values():
                out += recs
        assert len(out) == end, f"read {len(out)} of {end} messages"
        return out
    finally:
        c.close()


def jobs(cfg) -> list[UpdateJob]:
    return [decode_job(r.value) for r in read_topic(cfg, cfg.kafka.jobs_topic)]


def events(cfg) -> list[Event]:
    return [decode_event(r.value) for r in read_topic(cfg, cfg.kafka.events_topic)]


def report(cfg, daemon: Daemon, event: Event) -> None:
    """The worker's side: publish a report, then let the daemon move it into the language's inbox."""
    p = kafka_producer(cfg.kafka)
    p.send(cfg.kafka.events_topic, key=event.language.encode(), value=encode(event)).get(timeout=10)
    p.close()
    queued = 0
    for _ in range(50):
        queued += daemon.poll_events(timeout_ms=500)
        if queued:
            break
    assert queued == 1


# ------------------------------------------------------------------------------------------ JS and trigger


def test_js_of_window_against_reference_hand_computed(make_daemon, redis):
    d = make_daemon()
    ref(redis, "yo")  # theta 1.0: never fires, so every check just reports JS
    fill(redis, "yo", [0, 0, 0, 0])
    r = d.check("yo", T0)
    assert r.state == "below_threshold" and r.js == pytest.approx(JS_DRIFT, abs=1e-12) and r.n_samples == 4
    fill(redis, "yo", [0, 1, 0, 1])
    assert d.check("yo", T0 + 1).js == 0.0
    ref(redis, "yo", probs=(1.0, 0.0, 0.0), adapter="a2")
    fill(redis, "yo", [1, 1, 1, 1])  # disjoint supports; zeros on both sides
    assert d.check("yo", T0 + 2).js == 1.0
    assert jobs(d.config) == []


def test_drifted_window_enqueues_exactly_one_job_with_events(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    r = d.check("sw", T0)
    assert (r.state, r.fired) == ("drift", True)

    msgs = read_topic(cfg, cfg.kafka.jobs_topic)
    assert len(msgs) == 1 and msgs[0].key == b"sw"
    assert dict(msgs[0].headers) == {"compass-schema": b"1"}
    job = decode_job(msgs[0].value)
    assert job == r.job
    assert (job.kind, job.language, job.codebook_version, job.adapter_version) == ("adapter_update", "sw", "v1", "a1")
    assert (job.reason, job.theta, job.n_samples, job.created_at) == ("drift", 0.2, 4, T0)
    assert job.js == pytest.approx(JS_DRIFT, abs=1e-12) and job.noise_share == 0.0
    frozen = json.loads(redis.get(job.snapshot_key))
    assert job.snapshot_key == f"compass:{{sw}}:snapshot:{job.job_id}"
    assert frozen["counts"] == [4, 0, 0] and frozen["size"] == 4 and frozen["codebook_version"] == "v1"
    assert frozen["ids"] == [f"q{int(frozen['offsets']['compass.queries:0']) - i}" for i in (3, 2, 1, 0)]

    evs = events(cfg)
    assert [(e.type, e.language, e.job_id) for e in evs] == [("drift_detected", "sw", job.job_id),
                                                              ("update_enqueued", "sw", job.job_id)]
    assert evs[0].data["js"] == job.js and evs[1].data["snapshot_key"] == job.snapshot_key

    # marked `updating`: later checks do not trigger again
    assert d.status("sw").phase == "updating"
    assert d.check("sw", T0 + 10).state == "updating"
    assert len(jobs(cfg)) == 1


def test_settle_s_freezes_the_window_after_the_settling_time(make_daemon, redis, cfg, langs_path):
    langs_path.write_text(LANGS.replace("cooldown_s: 100}", "cooldown_s: 100, settle_s: 30}"))
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    r = d.check("sw", T0)
    assert (r.state, r.fired, r.job) == ("settling", False, None) and r.js == pytest.approx(JS_DRIFT, abs=1e-12)
    assert d.status("sw").phase == "settling" and d.status("sw").trigger.last_fired_at == T0  # cooldown runs
    fill(redis, "sw", [0, 1, 0, 1])  # the shift fades: settling goes on, nothing is re-decided
    assert (d.check("sw", T0 + 29).state, jobs(cfg), events(cfg)) == ("settling", [], [])
    fill(redis, "sw", [0, 0, 0, 1])
    r = d.check("sw", T0 + 30)
    assert (r.state, r.fired, r.job.reason) == ("drift", True, "drift")
    frozen = json.loads(redis.get(r.job.snapshot_key))
    assert frozen["counts"] == [3, 1, 0] and frozen["created_at"] == T0 + 30  # the window at dispatch, not at T0
    evs = events(cfg)
    assert [e.type for e in evs] == ["drift_detected", "update_enqueued"]
    assert (evs[0].data["detected_at"], evs[0].data["detected_js"]) == (T0, pytest.approx(JS_DRIFT, abs=1e-12))
    assert d.status("sw").phase == "updating" and d.status("sw").trigger.last_fired_at == T0
    assert len(jobs(cfg)) == 1


def test_min_samples_holds_the_trigger(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0])  # 3 < min_samples 4, JS would be 0.311 > theta
    r = d.check("sw", T0)
    assert (r.state, r.fired, r.n_samples) == ("insufficient_samples", False, 3)
    assert r.js == pytest.approx(JS_DRIFT, abs=1e-12)
    fill(redis, "sw", [0, 0, 0, 0])  # 4 samples: now it fires
    assert d.check("sw", T0 + 1).state == "drift"
    assert len(jobs(cfg)) == 1


def test_update_finished_clears_updating_and_starts_cooldown(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    job = d.check("sw", T0).job
    report(cfg, d, Event("update_started", "sw", T0 + 5, job.job_id))
    assert d.check("sw", T0 + 6).state == "updating"
    assert d.status("sw").job["started_at"] == T0 + 5
    report(cfg, d, Event("update_finished", "sw", T0 + 50, job.job_id, {"adapter_version": "a2"}))
    ref(redis, adapter="a2")  # the worker's new P_ref (same distribution: the window still drifts from it)

    r = d.check("sw", T0 + 50 + 99)  # 99 s after the finish < cooldown 100 s
    st = d.status("sw")
    assert r.state == "cooldown" and st.phase == "idle" and st.job is None
    assert st.trigger.last_update_at == T0 + 50 and st.trigger.armed  # re-armed by the new reference
    assert st.last_update == {"at": T0 + 50, "job_id": job.job_id, "outcome": "finished", "adapter_version": "a2"}
    assert d.check("sw", T0 + 50 + 101).state == "drift"
    assert len(jobs(cfg)) == 2


def test_hysteresis_after_an_update_without_new_reference(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    job = d.check("sw", T0).job
    report(cfg, d, Event("update_finished", "sw", T0 + 10, job.job_id))
    assert d.check("sw", T0 + 200).state == "disarmed"  # JS 0.311 still > rearm_below 0.1
    fill(redis, "sw", [0, 1, 0, 1])
    assert d.check("sw", T0 + 201).state == "rearmed"  # JS 0 < 0.1
    fill(redis, "sw", [0, 0, 0, 0])
    assert d.check("sw", T0 + 202).state == "drift"
    assert len(jobs(cfg)) == 2


def test_reports_for_another_job_are_ignored(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    d.check("sw", T0)
    report(cfg, d, Event("update_finished", "sw", T0 + 1, "sw-old-job"))
    assert d.check("sw", T0 + 2).state == "updating"


def test_updating_times_out(make_daemon, redis, cfg):
    d = make_daemon()  # update_timeout_s 500
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    first = d.check("sw", T0).job
    assert d.check("sw", T0 + 500).state == "updating"  # not past the timeout yet
    # timed out: cleared and re-armed, but a timeout is an unsuccessful update: the next one waits the backoff
    # cooldown_s * 2^(failures-1) = 100 s from the timeout (before the lifecycle it fired again at once)
    r = d.check("sw", T0 + 501)
    assert r.state == "backoff" and not r.fired
    st = d.status("sw")
    assert st.last_update == {"at": T0 + 501, "job_id": first.job_id, "outcome": "timeout"}
    assert (st.phase, st.failures, st.retry_at, st.trigger.armed) == ("idle", 1, T0 + 601, True)
    r = d.check("sw", T0 + 601)
    assert r.state == "drift" and r.job.job_id != first.job_id
    assert len(jobs(cfg)) == 2


def test_two_daemons_never_both_trigger(make_daemon, redis, cfg):
    a, b = make_daemon("daemon-a"), make_daemon("daemon-b")
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    start = threading.Barrier(2)
    results = {}

    def run(d: Daemon) -> None:
        start.wait()
        results[d.owner] = d.check("sw", T0)

    threads = [threading.Thread(target=run, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.state for r in results.values()) == ["drift", "standby"]
    # the replica in standby keeps standing by on its later checks, the holder sees its job out
    for d in (a, b):
        assert d.check("sw", T0 + 1).state in ("standby", "updating")
    assert len(jobs(cfg)) == 1


def test_codebook_mismatch_is_not_compared(make_daemon, redis, cfg, caplog):
    d = make_daemon()
    ref(redis, version="v0")
    fill(redis, "sw", [0, 0, 0, 0], version="v1")
    with caplog.at_level(logging.WARNING, logger="daemon.scheduler"):
        r = d.check("sw", T0)
        d.check("sw", T0 + 1)
    assert (r.state, r.js, r.fired) == ("codebook_mismatch", None, False)
    assert "window codebook 'v1' != reference codebook 'v0'" in r.detail
    assert sum("codebook_mismatch" in rec.getMessage() for rec in caplog.records) == 1  # logged on entry only
    ref(redis, probs=(0.5, 0.5, 0.0, 0.0), version="v1")  # same version, other bucket count
    assert d.check("sw", T0 + 2).state == "codebook_mismatch"
    assert jobs(cfg) == []


def test_a_revision_of_the_reference_codebook_is_compared(make_daemon, redis):
    d = make_daemon()
    ref(redis, "yo", version="v1")
    fill(redis, "yo", [0, 0, 0, 0], version="v1.20250101T000000-000000-abcdef")  # eq. 2 revision: same cluster ids
    r = d.check("yo", T0)
    assert r.state == "below_threshold" and r.js == pytest.approx(JS_DRIFT, abs=1e-12)


def test_stale_clusters_enqueue_a_recluster_job(make_daemon, redis, cfg):
    d = make_daemon()  # stale_noise_share 0.3
    ref(redis)
    fill(redis, "sw", [0, 1, 2, 2])  # noise share 2/4 = 0.5 > 0.3
    r = d.check("sw", T0)
    assert (r.state, r.job.kind, r.job.reason, r.job.noise_share) == ("stale_clusters", "recluster", "stale_clusters", 0.5)
    assert [e.type for e in events(cfg)] == ["recluster_needed", "update_enqueued"]
    assert [j.kind for j in jobs(cfg)] == ["recluster"]
    assert d.status("sw").last_check["noise_share"] == 0.5


def test_pause_resume_and_manual_trigger(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 1, 0, 1])  # JS 0: no drift
    d.pause("sw")
    assert d.check("sw", T0).state == "paused"
    d.resume("sw")
    assert d.check("sw", T0 + 1).state == "below_threshold"
    d.request_trigger("sw")
    r = d.check("sw", T0 + 2)
    assert (r.state, r.fired, r.js, r.job.reason) == ("manual", True, 0.0, "manual")
    assert d.check("sw", T0 + 3).state == "updating"
    assert len(jobs(cfg)) == 1


def test_missing_and_corrupt_reference_do_not_crash(make_daemon, redis, cfg):
    d = make_daemon()
    fill(redis, "sw", [0, 0, 0, 0])
    assert d.check("sw", T0).state == "no_reference"
    redis.set("compass:{sw}:ref", b"{not json")
    r = d.check("sw", T0 + 1)
    assert r.state == "bad_reference" and "compass ref set sw" in r.detail
    with pytest.raises(BadReference, match="unreadable reference"):
        get_reference(redis, "sw")
    assert jobs(cfg) == []


def test_bad_languages_reload_keeps_the_previous_config(make_daemon, redis, langs_path, caplog):
    d = make_daemon()
    ref(redis, "yo")
    fill(redis, "yo", [0, 0, 0, 0])
    langs_path.write_text(LANGS.replace("yo: {theta: 1.0}", "yo: {theta: 0.5, min_samples: lots}"))
    with caplog.at_level(logging.ERROR, logger="daemon.scheduler.reload"):
        assert d.reload() is False
    assert "  languages.yo.min_samples: got 'lots'; Input should be a valid integer, unable to parse string as an " \
           "integer (allowed: an integer >= 1, at most window_size)" in [r.getMessage() for r in caplog.records]
    assert d.check("yo", T0).state == "below_threshold"  # theta 1.0 still in force
    langs_path.write_text(LANGS.replace("yo: {theta: 1.0}", "yo: {theta: 0.3}"))
    assert d.reload() is True
    assert d.check("yo", T0 + 1).state == "drift"  # 0.311 > 0.3


def test_reference_validation(redis):
    r = set_reference(redis, "sw", counts=[3, 1, 0], codebook_version="v1", adapter_version="a1", created_at=5.0)
    assert r.probs == [0.75, 0.25, 0.0] and get_reference(redis, "sw") == r
    with pytest.raises(BadReference, match="probs: sums to 0.9; must sum to 1"):
        set_reference(redis, "sw", probs=[0.5, 0.4], codebook_version="v1", adapter_version="a1")
    with pytest.raises(BadReference, match="exactly one of counts"):
        set_reference(redis, "sw", codebook_version="v1", adapter_version="a1")
    with pytest.raises(BadReference, match="adapter_version: got ''"):
        set_reference(redis, "sw", counts=[1], codebook_version="v1", adapter_version="")


# ------------------------------------------------------------------------------------------ lifecycle wiring
# The decisions are tested as tables in tests/test_lifecycle.py; these check what the daemon reads, stores and
# publishes around them.


def reject(cfg, d: Daemon, job: UpdateJob, at: float) -> None:
    """The worker's reports of a candidate the gate rejected: adapter_rejected, then update_finished."""
    report(cfg, d, Event("adapter_rejected", "sw", at, job.job_id, {"adapter_version": "cand",
                                                                  "reasons": ["retention -7% < margin"]}))
    report(cfg, d, Event("update_finished", "sw", at + 1, job.job_id, {"ok": True}))


def gauge(d: Daemon, name: str, lang: str = "sw") -> float | None:
    return d.metrics.registry.get_sample_value(name, {"lang": lang})


def test_a_rejected_update_backs_off_then_fires_again(make_daemon, redis, cfg):
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    first = d.check("sw", T0).job
    reject(cfg, d, first, T0 + 10)
    # a failure re-arms; the next update waits cooldown_s * 2^0 = 100 s from the finish (T0 + 11)
    r = d.check("sw", T0 + 110)
    assert (r.state, r.fired) == ("backoff", False)
    st = d.status("sw")
    assert (st.phase, st.failures, st.retry_at, st.trigger.armed) == ("idle", 1, T0 + 111, True)
    assert st.last_update["outcome"] == "rejected" and st.last_update["job_id"] == first.job_id
    assert gauge(d, "compass_daemon_failures") == 1.0 and gauge(d, "compass_daemon_stuck") == 0.0
    view = d.describe("sw")
    assert (view["state"], view["failures"], view["retry_at"], view["stuck"]) == ("backoff", 1, T0 + 111, None)
    r = d.check("sw", T0 + 111)
    assert (r.state, r.fired) == ("drift", True) and r.job.job_id != first.job_id
    assert len(jobs(cfg)) == 2


def test_max_rejections_make_the_language_stuck_until_resumed(make_daemon, redis, cfg):
    d = make_daemon()  # max_rejections 2
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    reject(cfg, d, d.check("sw", T0).job, T0 + 10)
    second = d.check("sw", T0 + 111).job
    reject(cfg, d, second, T0 + 120)
    r = d.check("sw", T0 + 130)
    assert (r.state, r.fired) == ("stuck", False) and "2 updates in a row did not promote" in r.detail
    stuck = [e for e in events(cfg) if e.type == "language_stuck"]
    assert [(e.language, e.job_id, e.data["failures"], e.data["outcome"]) for e in stuck] == [
        ("sw", second.job_id, 2, "rejected")]
    assert stuck[0].data["reason"] == r.detail
    assert gauge(d, "compass_daemon_stuck") == 1.0 and gauge(d, "compass_daemon_failures") == 2.0
    view = d.describe("sw")
    assert (view["state"], view["phase"], view["failures"]) == ("stuck", "stuck", 2)
    assert view["stuck"]["at"] == T0 + 121 and view["stuck"]["reason"] == r.detail

    assert d.check("sw", T0 + 10_000).state == "stuck"  # no automatic update, no second event
    assert len(jobs(cfg)) == 2 and sum(e.type == "language_stuck" for e in events(cfg)) == 1
    assert d.resume("sw") is True
    r = d.check("sw", T0 + 10_001)  # failures cleared, trigger armed: the window still drifts
    assert (r.state, r.fired) == ("drift", True)
    st = d.status("sw")
    assert (st.phase, st.failures, st.stuck) == ("updating", 0, None)
    assert gauge(d, "compass_daemon_stuck") == 0.0 and gauge(d, "compass_daemon_failures") == 0.0
    assert d.resume("sw") is False  # not stuck: only un-paused


DETECTOR_LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, rearm_ratio: 0.5, cooldown_s: 100, burn_in: 8,
           false_alarm_every: 100}
languages:
  sw: {threshold: calibrated}
  yo: {detector: sequential}
"""


def test_a_calibrated_threshold_is_learned_after_the_burn_in(make_daemon, redis, cfg, langs_path):
    langs_path.write_text(DETECTOR_LANGS)
    d = make_daemon()
    ref(redis)
    fill(redis, "sw", [0, 1, 0, 1])
    assert d.check("sw", T0).state == "calibrating"  # the first check reads the whole window: 4 of 8 queries
    st = d.status("sw")
    assert st.seen == 4 and st.drift.burn_in.seen == 4 and st.drift.threshold is None
    view = d.describe("sw")
    assert view["effective_threshold"] == 0.2 and view["detector"]["calibrating"] is True
    assert view["detector"]["burn_in"] == {"seen": 4, "of": 8, "done": False}
    assert d.check("sw", T0 + 1).state == "calibrating"  # nothing new in the window: the burn-in waits
    assert d.status("sw").drift.burn_in.seen == 4

    fill(redis, "sw", [0, 1, 0, 1])  # 4 more: the burn-in completes and the threshold is calibrated
    r = d.check("sw", T0 + 2)
    assert (r.state, r.js) == ("below_threshold", 0.0)
    st = d.status("sw")
    learned = st.drift.threshold.at(4)
    assert st.seen == 8 and st.last_check["threshold"] == learned and st.last_check["detector"] == "calibrated"
    view = d.describe("sw")
    assert view["detector"]["calibrating"] is False and view["detector"]["burn_in"]["done"] is True
    assert view["effective_threshold"] == learned and "quantile of" in view["detector"]["how"]
    assert gauge(d, "compass_daemon_threshold") == learned
    # four queries in one of two equally likely clusters are common enough that the 100-query budget
    # puts the threshold at or above their JS: what theta 0.2 would call drift is not one here
    assert learned >= JS_DRIFT - 1e-12
    fill(redis, "sw", [0, 0, 0, 0])
    r = d.check("sw", T0 + 3)
    assert r.state == "below_threshold" and r.js == pytest.approx(JS_DRIFT, abs=1e-12)
    last = history.js_history(redis, "sw")[-1]
    assert (last["detector"], last["threshold"], last["state"]) == ("calibrated", learned, "below_threshold")
    assert jobs(cfg) == []


def test_the_sequential_detector_fires_on_a_shifted_window(make_daemon, redis, cfg, langs_path):
    """The daemon feeds the window's new cluster ids to the CUSUM: every check's outcome and statistic equal the
    pure lifecycle's on the same observations (the arithmetic is hand-checked in tests/test_lifecycle.py)."""
    from compass.drift.lifecycle import DriftState, Observation, step
    from compass.languages import LanguagesConfig

    langs_path.write_text(DETECTOR_LANGS)
    settings = LanguagesConfig.model_validate(yaml.safe_load(DETECTOR_LANGS)).get("yo")
    d = make_daemon()
    ref(redis, "yo", probs=(0.5, 0.5, 0.0, 0.0))  # clusters 0-2 and noise 3
    pure = DriftState()
    batches = [[0, 1, 0, 1], [0, 1, 0, 1]] + [[2, 2, 2, 2]] * 6  # the burn-in (8 queries), then a shift to 2
    seen = []
    for i, batch in enumerate(batches):
        fill(redis, "yo", batch, n_buckets=4)
        r = d.check("yo", T0 + i)
        expected = step(pure, Observation(now=T0 + i, counts=np.bincount(batch, minlength=4),
                                          p_ref=np.array([0.5, 0.5, 0.0, 0.0]), ref_id="a1",
                                          new_labels=np.array(batch), job_id="x"), settings, d.limits)
        pure = expected.state
        got = d.status("yo").last_check
        assert (r.state, got["statistic"]) == (expected.check, pytest.approx(expected.statistic, abs=1e-9)), i
        seen.append(r.state)
        if r.fired:
            break
    assert seen[:2] == ["calibrating", "below_threshold"] and seen[-1] == "drift", seen
    assert "below_threshold" in seen[2:-1]  # the first shifted check only teaches q: one check of lag
    [ev] = [e for e in events(cfg) if e.type == "drift_detected"]
    assert (ev.data["detector"], ev.data["threshold"]) == ("sequential", pytest.approx(math.log(100)))
    assert ev.data["statistic"] > math.log(100) and ev.data["js"] == 1.0
    assert d.status("yo").drift.cusum.stat == 0.0  # reset with the dispatch


def test_a_failed_publish_reverts_the_check(make_daemon, redis, cfg):
    class Down(Dispatcher):
        def send_job(self, job: UpdateJob) -> None:
            raise ConnectionError("broker unreachable")

    d = make_daemon(dispatcher=Down(cfg.kafka))
    ref(redis)
    fill(redis, "sw", [0, 1, 0, 1])
    redis.rpush(inbox_key("sw", "compass"), encode(Event("adapter_promoted", "sw", T0, "sw-x", {"adapter_version": "a7"})))
    d.request_trigger("sw")
    r = d.check("sw", T0)
    assert (r.state, r.fired, r.detail) == ("dispatch_failed", False, "broker unreachable")
    st = d.status("sw")
    assert (st.phase, st.adapter_version, st.seen, st.last_check["state"]) == ("idle", None, None, "dispatch_failed")
    assert redis.llen(inbox_key("sw", "compass")) == 1 and redis.exists("compass:{sw}:force")  # for the next check
    assert redis.keys("compass:{sw}:snapshot:*") == []
    d.dispatcher = Dispatcher(cfg.kafka)
    r = d.check("sw", T0 + 1)
    assert (r.state, r.fired, r.job.reason) == ("manual", True, "manual")
    assert d.status("sw").adapter_version == "a7" and [j.job_id for j in jobs(cfg)] == [r.job.job_id]


def emerging_cfg(cfg):
    return cfg.model_copy(update={"daemon": cfg.daemon.model_copy(update={
        "emerging_share": 0.1, "emerging_min_count": 5, "emerging_horizon_s": 600})})


def seed_unserved(redis, served: int, unserved: dict[str, int]) -> None:
    """``served`` sw queries then ``unserved`` queries per language, asked now, on partition 0 of compass.queries."""
    now_ms, items = int(time.time() * 1000), []
    for lang, n in {"sw": served, **unserved}.items():
        for i in range(n):
            items.append(Traffic(f"{lang}-{i}", lang, lang == "sw", "compass.queries", 0, len(items), now_ms))
    UnservedStore(redis).apply(items)


def test_the_scheduled_unserved_check_announces_an_emerging_language_once(make_daemon, redis, cfg):
    d = make_daemon(config=emerging_cfg(cfg))
    seed_unserved(redis, 40, {"ca": 10, "und": 3})  # ca: 10 of 53, above 0.1 with >= 5 queries
    d.start()
    deadline = time.monotonic() + 30
    while not any(e.type == "language_emerging" for e in events(cfg)):
        assert time.monotonic() < deadline, "no language_emerging from the scheduled check"
        time.sleep(0.2)
    time.sleep(2.5)  # two more checks at the 1 s interval: no second event
    evs = [e for e in events(cfg) if e.type == "language_emerging"]
    assert [(e.language, e.data["count"], e.data["total"]) for e in evs] == [("ca", 10, 53)]
    assert evs[0].data["sample_ids"] == [f"ca-{i}" for i in range(10)]
    assert d.emerging_states()["ca"].active is True


def test_a_failed_language_emerging_publish_is_retried_and_one_replica_acts(make_daemon, redis, cfg):
    class Down(Dispatcher):
        def emit(self, event: Event) -> None:
            raise ConnectionError("broker unreachable")

    config = emerging_cfg(cfg)
    d = make_daemon(config=config, dispatcher=Down(cfg.kafka))
    seed_unserved(redis, 40, {"ca": 10})
    r = d.check_unserved()
    assert (r.state, r.checks, r.emitted) == ("checked", {"ca": "emerging"}, ())
    assert d.emerging_states() == {}  # taken back: not announced, so not an episode yet
    assert make_daemon("daemon-b", config=config).check_unserved().state == "standby"  # a holds the lease
    d.dispatcher = Dispatcher(cfg.kafka)
    r = d.check_unserved()
    assert (r.checks, r.emitted) == ({"ca": "emerging"}, ("ca",))
    assert [e.language for e in events(cfg) if e.type == "language_emerging"] == ["ca"]


def test_status_written_before_the_lifecycle_still_loads(make_daemon, redis):
    old = {"trigger": {"armed": False, "last_fired_at": T0, "last_update_at": None}, "phase": "idle", "job": None,
           "ref_adapter_version": "a1", "adapter_version": "a1", "last_check": {"at": T0, "state": "drift"},
           "last_trigger": {"at": T0, "job_id": "j0"}, "last_update": None}
    redis.set("compass:{sw}:status", json.dumps(old))
    d = make_daemon()
    st = d.status("sw")
    assert (st.trigger.armed, st.trigger.last_fired_at, st.drift.ref_id, st.last_check["state"], st.seen) == (
        False, T0, "a1", "drift", None)
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    assert d.check("sw", T0 + 200).state == "disarmed"  # the same reference: hysteresis still holds


# ------------------------------------------------------------------------------------------ pure parts


def test_messages_round_trip_and_reject_bad_input():
    job = UpdateJob("j1", "adapter_update", "sw", "v1", "a1", "k", 0.3, 0.2, "drift", 4, 1.0)
    assert decode_job(encode(job)) == job
    ev = Event("update_finished", "sw", 2.0, "j1", {"ok": True})
    assert decode_event(encode(ev)) == ev
    with pytest.raises(BadMessage, match=r"unknown field\(s\) \['typo'\]"):
        decode_event(b'{"schema": 1, "type": "update_started", "language": "sw", "at": 1, "job_id": "j", "typo": 1}')
    with pytest.raises(BadMessage, match="event field 'job_id': got None"):
        decode_event(b'{"schema": 1, "type": "update_finished", "language": "sw", "at": 1}')
    with pytest.raises(BadMessage, match="field 'schema': got 2; this daemon reads schema 1"):
        decode_event(b'{"schema": 2}')
    with pytest.raises(BadMessage, match="job field 'kind': got 'retrain'"):
        decode_job(encode(job).replace(b"adapter_update", b"retrain"))


def test_stale_shares_hand_computed():
    assert stale.noise_share([3, 0, 1]) == 0.25 and stale.noise_share([0, 0, 0]) is None
    reading = stale.assess(0.5, 0.1, 0.3, 0.3)
    assert reading.stale and reading.why == "noise share 0.500 > 0.3"
    assert not stale.assess(0.3, None, 0.3, 0.3).stale  # at the level is not past it
    assert stale.share_beyond([0.1, 0.5, 0.5, 0.9], 0.5) == 0.25 and stale.share_beyond([], 0.5) is None


# ------------------------------------------------------------------------------------------ far share (§6.1)

# A 3-cluster codebook on the pairs cos(a) e_i ± sin(a) e_{i+1}: centroids e_0, e_1, e_2, training distances
# 1 - cos(a_i) for a_i in 0.1, 0.2, 0.3 rad, so the calibrated (0.95) distance is about 0.0447. A text embedded
# as e_0 is at distance 0 (near); one at -(1, 1, 1)/sqrt(3) is at 1 + 1/sqrt(3) from every centroid (far).
E0 = np.array([1.0, 0.0, 0.0])
FAR_VEC = -np.ones(3) / np.sqrt(3)


class FixedEmbedder:
    """Every text to one unit vector: a deterministic stand-in for the embedder (counts its calls)."""

    def __init__(self, vector: np.ndarray, model_id: str = "fixed:test") -> None:
        self.vector = np.asarray(vector, dtype=np.float32)
        self.model_id = model_id
        self.dim = len(vector)
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.tile(self.vector, (len(texts), 1))

    def close(self) -> None:
        pass


def calibration_rows() -> np.ndarray:
    rows = [np.cos(a) * np.eye(3)[i] + sign * np.sin(a) * np.eye(3)[(i + 1) % 3]
            for i, a in enumerate((0.1, 0.2, 0.3)) for sign in (1.0, -1.0)]
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture
def far_setup(cfg, redis, tmp_path):
    """(config with a codebook_dir, published calibrated version, published uncalibrated version)."""
    config = cfg.model_copy(update={"consumer": cfg.consumer.model_copy(update={"codebook_dir": tmp_path / "cb"})})
    store = CodebookStore(tmp_path / "cb", redis, cfg.redis.key_prefix)
    X = calibration_rows()
    model = make_clusterer("kmeans", seed=0, n_clusters=3)
    model.fit_predict(X)
    calibrated = store.publish(model, "fixed:test", X_fit=X)
    uncalibrated = store.publish(model, "fixed:test")
    assert calibrated.calibrated_distance(0.95) == pytest.approx(0.0447, abs=1e-3)
    return config, calibrated.version, uncalibrated.version


def far_errors(d: Daemon, lang: str = "sw") -> float:
    return d.metrics.registry.get_sample_value("compass_daemon_errors_total",
                                               {"lang": lang, "kind": "far_share"}) or 0.0


def test_recent_texts_far_from_every_centroid_enqueue_a_recluster_job(make_daemon, redis, cfg, far_setup):
    config, version, _ = far_setup
    embedder = FixedEmbedder(FAR_VEC)
    d = make_daemon(config=config, embedder=embedder)
    ref(redis, probs=(0.5, 0.5, 0.0, 0.0), version=version)
    fill(redis, "sw", [0, 1, 0, 1], version=version, n_buckets=4)  # JS 0, noise 0: only the far share is stale
    r = d.check("sw", T0)
    assert (r.state, r.fired, r.job.kind, r.job.reason) == ("stale_clusters", True, "recluster", "stale_clusters")
    assert (r.job.far_share, r.job.noise_share) == (1.0, 0.0)
    evs = events(cfg)
    assert [e.type for e in evs] == ["recluster_needed", "update_enqueued"] and evs[0].data["far_share"] == 1.0
    assert [j.kind for j in jobs(cfg)] == ["recluster"]
    assert d.status("sw").last_check["far_share"] == 1.0 and embedder.calls == 1


def test_recent_texts_near_the_centroids_are_not_stale(make_daemon, redis, cfg, far_setup):
    config, version, _ = far_setup
    embedder = FixedEmbedder(E0)
    d = make_daemon(config=config, embedder=embedder)
    ref(redis, probs=(0.5, 0.5, 0.0, 0.0), version=version)
    fill(redis, "sw", [0, 1, 0, 1], version=version, n_buckets=4)
    r = d.check("sw", T0)
    assert (r.state, r.fired, r.js) == ("below_threshold", False, 0.0)
    assert d.status("sw").last_check["far_share"] == 0.0 and embedder.calls == 1
    assert far_errors(d) == 0.0 and jobs(cfg) == []


def test_far_share_unknown_never_crashes_a_check(make_daemon, redis, cfg, far_setup, caplog):
    config, calibrated, uncalibrated = far_setup
    embedder = FixedEmbedder(FAR_VEC)
    d = make_daemon(config=config, embedder=embedder)
    ref(redis, probs=(0.5, 0.5, 0.0, 0.0), version=uncalibrated)

    # no calibration in the codebook: unknown, logged once, nothing embedded, not an error
    fill(redis, "sw", [0, 1, 0, 1], version=uncalibrated, n_buckets=4)
    with caplog.at_level(logging.WARNING, logger="daemon.scheduler"):
        states = [d.check("sw", T0 + i).state for i in range(2)]
    assert states == ["below_threshold", "below_threshold"] and d.status("sw").last_check["far_share"] is None
    assert sum("has no calibrated distance" in rec.getMessage() for rec in caplog.records) == 1
    assert embedder.calls == 0 and far_errors(d) == 0.0

    # the window's codebook is not on disk: logged (once while it lasts), counted, unknown
    caplog.clear()
    fill(redis, "sw", [0, 1, 0, 1], version="v1", n_buckets=3)
    ref(redis)
    with caplog.at_level(logging.WARNING, logger="daemon.scheduler"):
        assert [d.check("sw", T0 + 10 + i).state for i in range(2)] == ["below_threshold", "below_threshold"]
    assert sum("far share not measured: CodebookNotFound" in rec.getMessage() for rec in caplog.records) == 1
    assert far_errors(d) == 2.0

    # an embedder of another model than the codebook's: counted, unknown
    other = make_daemon("daemon-b", config=config, embedder=FixedEmbedder(FAR_VEC, model_id="other:model"))
    fill(redis, "yo", [0, 1, 0, 1], version=calibrated, n_buckets=4)
    r = other.check("yo", T0)
    assert r.state == "no_reference" and far_errors(other, "yo") == 1.0
    assert other.status("yo").last_check["far_share"] is None

    # an embedder that fails: counted, unknown
    class Broken(FixedEmbedder):
        def encode(self, texts: list[str]) -> np.ndarray:
            raise ConnectionError("embedding service down")

    broken = make_daemon("daemon-c", config=config, embedder=Broken(FAR_VEC, model_id="fixed:test"))
    other.release("yo")  # hand the language's lease over to daemon-c
    r = broken.check("yo", T0 + 1)
    assert r.state == "no_reference" and far_errors(broken, "yo") == 1.0
    assert broken.status("yo").last_check["far_share"] is None
    assert jobs(cfg) == []


def test_no_recent_texts_means_far_share_unknown(make_daemon, redis, cfg, far_setup, caplog):
    config, version, _ = far_setup
    config = config.model_copy(update={"consumer": config.consumer.model_copy(update={"store_texts": False})})
    embedder = FixedEmbedder(FAR_VEC)
    d = make_daemon(config=config, embedder=embedder)
    items = [Assignment(f"q{i}", b, "compass.queries", 0, next(_offsets), None) for i, b in enumerate([0, 1, 0, 1])]
    WindowStore(redis, store_texts=False).apply_batch({"sw": (4, items)}, version, 4)
    assert WindowStore(redis).recent("sw") == [("q0", None), ("q1", None), ("q2", None), ("q3", None)]
    with caplog.at_level(logging.WARNING, logger="daemon.scheduler"):
        assert [d.check("sw", T0 + i).state for i in range(2)] == ["no_reference", "no_reference"]
    assert sum("no recent texts" in rec.getMessage() for rec in caplog.records) == 1
    assert d.status("sw").last_check["far_share"] is None and embedder.calls == 0 and far_errors(d) == 0.0


# ---------------------------------------------------------------- the performance-aware signal (rule any / all)

QUALITY_LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, rearm_ratio: 0.5, cooldown_s: 100}
languages:
  sw: {quality_signal: adwin, combine: any}
  yo: {quality_signal: adwin, combine: all}
"""


@pytest.fixture
def quality_daemon(cfg, tmp_path):
    path = tmp_path / "quality-languages.yaml"
    path.write_text(QUALITY_LANGS)
    d = Daemon(cfg, load_languages(path), owner="daemon-q")
    yield d
    d.stop()


def push_quality(redis, lang: str, values) -> None:
    redis.rpush(f"compass:{{{lang}}}:quality", *[repr(float(v)) for v in values])


def quality_stream(shift: bool):
    rng = np.random.default_rng(7)
    calm = rng.normal(0.0, 1.0, 1000)
    return np.concatenate([calm, rng.normal(2.0, 1.0, 300)]) if shift else calm


def test_rule_any_fires_on_quality_alone(quality_daemon, redis, cfg):
    ref(redis, "sw")
    fill(redis, "sw", [0, 1, 0, 1])  # JS 0 against P_ref (0.5, 0.5, 0)
    push_quality(redis, "sw", quality_stream(shift=False))
    r = quality_daemon.check("sw", T0)
    assert (r.state, r.js) == ("below_threshold", 0.0)
    push_quality(redis, "sw", quality_stream(shift=True)[1000:])  # the same stream continues, shifted by 2 sd
    r = quality_daemon.check("sw", T0 + 1)
    assert r.fired and r.state == "quality"  # fired by the quality signal alone
    [job] = jobs(cfg)
    assert (job.language, job.reason, job.js) == ("sw", "quality", 0.0)


def test_rule_all_waits_for_quality_then_fires(quality_daemon, redis, cfg):
    ref(redis, "yo")
    fill(redis, "yo", [0, 0, 0, 0])  # JS 0.311 > theta 0.2
    push_quality(redis, "yo", quality_stream(shift=False))
    r = quality_daemon.check("yo", T0)
    assert r.state == "awaiting_quality" and not r.fired
    assert jobs(cfg) == []
    push_quality(redis, "yo", quality_stream(shift=True)[1000:])
    r = quality_daemon.check("yo", T0 + 1)  # still armed: JS drift + quality alarm -> fire
    assert r.fired
    [job] = jobs(cfg)
    assert (job.language, job.reason) == ("yo", "drift")


def test_rule_all_without_quality_data_falls_back_to_js(quality_daemon, redis, cfg):
    ref(redis, "yo")
    fill(redis, "yo", [0, 0, 0, 0])
    assert quality_daemon.check("yo", T0).fired  # no values pushed yet: JS decides alone
    assert [j.reason for j in jobs(cfg)] == ["drift"]


def test_bad_quality_values_are_counted_not_fatal(quality_daemon, redis):
    ref(redis, "sw")
    fill(redis, "sw", [0, 1, 0, 1])
    redis.rpush("compass:{sw}:quality", "nan", "not-a-number", "0.5")
    assert quality_daemon.check("sw", T0).state == "below_threshold"
    assert quality_daemon.metrics.errors.labels("sw", "quality_value")._value.get() == 2


# ------------------------------------------------------------------------------------------ event intake isolation

@pytest.fixture
def icfg(cfg, topic_factory):
    """``cfg`` with its own dead-letter topic."""
    return cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"dead_letter_topic": topic_factory()})})


def send_raw(cfg, values: list[bytes]) -> None:
    p = kafka_producer(cfg.kafka)
    for v in values:
        p.send(cfg.kafka.events_topic, key=b"k", value=v).get(timeout=10)
    p.close()


def make_inbox(cfg, redis, **kwargs):
    from daemon.scheduler.dispatch import EventInbox

    return EventInbox(cfg.kafka, f"inbox-{uuid.uuid4().hex[:8]}", redis, cfg.redis.key_prefix,
                      auto_offset_reset="earliest", **kwargs)


def committed(inbox) -> int:
    tp = TopicPartition(inbox.consumer.subscription().pop(), 0)
    return inbox.consumer.committed(tp) or 0


def dead_letters(cfg) -> list[tuple[str, str, bytes]]:
    from infra.deadletter import DETAIL_HEADER, REASON_HEADER

    return [(dict(r.headers)[REASON_HEADER].decode(), dict(r.headers)[DETAIL_HEADER].decode(), r.value)
            for r in read_topic(cfg, cfg.kafka.dead_letter_topic)]


def inbox_of(redis, lang: str) -> list[Event]:
    from daemon.scheduler.dispatch import drain_inbox

    return drain_inbox(redis, lang, "compass")


def test_a_malformed_event_between_reports_is_dead_lettered_and_the_reports_arrive(icfg, redis):
    started = Event("update_started", "sw", T0, "sw-1", {"attempt": 1})
    finished = Event("update_finished", "sw", T0 + 1, "sw-1", {"ok": True, "adapter_version": "a8"})
    promoted = Event("adapter_promoted", "yo", T0 + 2, "yo-1", {"adapter_version": "a2"})
    evil = encode(Event("update_finished", "sw", T0, "sw-1")).replace(b'"sw"', b'"../../x}:y"')
    send_raw(icfg, [encode(started), b"{not json", encode(finished), evil, encode(promoted)])
    inbox = make_inbox(icfg, redis)
    try:
        queued = 0
        for _ in range(40):
            queued += inbox.poll(500)
            if committed(inbox) == 5:
                break
        assert queued == 3 and inbox.bad == 2
    finally:
        inbox.close()
    assert inbox_of(redis, "sw") == [started, finished] and inbox_of(redis, "yo") == [promoted]
    dead = dead_letters(icfg)
    assert [(reason, value) for reason, _, value in dead] == [("bad_event", b"{not json"), ("bad_event", evil)]
    assert dead[1][1] == ("event field 'language': got '../../x}:y'; use a compass language code such as 'en', "
                          "'sw' or 'ceb' (see compass/langcodes.py)")
    assert not [k for k in redis.scan_iter() if b"x}" in k]


def test_a_report_whose_write_keeps_failing_is_dead_lettered_after_max_failures(icfg, redis):
    import redis as redis_lib

    redis.set(inbox_key("yo", "compass"), "not a list")  # RPUSH answers WRONGTYPE while Redis is up
    a = Event("update_started", "sw", T0, "sw-1")
    b = Event("update_started", "yo", T0, "yo-1")
    c = Event("update_finished", "sw", T0 + 1, "sw-1", {"ok": True})
    send_raw(icfg, [encode(a), encode(b), encode(c)])
    inbox = make_inbox(icfg, redis, max_failures=3)
    try:
        errors = queued = 0
        for _ in range(40):
            try:
                queued += inbox.poll(500)
            except redis_lib.ResponseError:
                errors += 1
            if committed(inbox) == 3:
                break
        assert (errors, queued) == (2, 1)  # failed twice (retried from b, a not again), dead-lettered the third time
    finally:
        inbox.close()
    assert inbox_of(redis, "sw") == [a, c]
    [(reason, detail, value)] = dead_letters(icfg)
    assert (reason, value) == ("internal_error", encode(b))
    assert detail == ("failed 3 times in a row; last: ResponseError: Command # 3 (RPUSH compass:{yo}:inbox...) of "
                      "pipeline caused error: WRONGTYPE Operation against a key holding the wrong kind of value")


def test_a_redis_outage_rewinds_and_blames_no_message(icfg, redis):
    import redis as redis_lib

    reports = [Event("update_started", "sw", T0, "sw-1"), Event("update_finished", "sw", T0 + 1, "sw-1")]
    send_raw(icfg, [encode(e) for e in reports])
    inbox = make_inbox(icfg, redis, max_failures=2)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    down = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    inbox.client = inbox.intake.client = down
    try:
        errors = 0
        for _ in range(40):
            try:
                inbox.poll(500)
            except redis_lib.ConnectionError:
                errors += 1
                if errors == 4:  # twice max_failures: still not blamed on the message
                    break
        assert errors == 4 and committed(inbox) == 0
        inbox.client = inbox.intake.client = redis
        queued = 0
        for _ in range(40):
            queued += inbox.poll(500)
            if committed(inbox) == 2:
                break
        assert queued == 2 and inbox.bad == 0
    finally:
        inbox.close()
    assert inbox_of(redis, "sw") == reports
    assert dead_letters(icfg) == []


def test_a_bug_met_by_one_report_is_dead_lettered_as_internal_error(icfg, redis, monkeypatch):
    real = history.queue_event

    def queue_event(pipe, event, *args):
        if event.job_id == "sw-boom":
            raise TypeError("cannot record this one")
        real(pipe, event, *args)

    monkeypatch.setattr(history, "queue_event", queue_event)
    reports = [Event("update_started", "sw", T0, j) for j in ("sw-1", "sw-boom", "sw-2")]
    send_raw(icfg, [encode(e) for e in reports])
    inbox = make_inbox(icfg, redis)
    try:
        queued = 0
        for _ in range(40):
            queued += inbox.poll(500)
            if committed(inbox) == 3:
                break
        assert queued == 2
    finally:
        inbox.close()
    assert inbox_of(redis, "sw") == [reports[0], reports[2]]
    assert dead_letters(icfg) == [("internal_error", "TypeError: cannot record this one", encode(reports[1]))]


# ------------------------------------------------------------------------------------------ drift explained


LABELS = {"format": 1, "store_examples": True, "clusters": [
    {"cluster": 0, "label": "rain · storm", "examples": ["will it rain"]},
    {"cluster": 1, "label": "goal · match", "examples": ["who scored the goal"]}]}
# P_ref [.5, .5, 0] vs window [0, 0, 0, 0] (P_mon [1, 0, 0], M [.75, .25, 0]): per-cluster JS terms
TERM_0 = 0.5 * (0.5 * math.log2(0.5 / 0.75) + math.log2(1 / 0.75))  # 0.0612781...
TERM_1 = 0.5 * 0.5 * math.log2(0.5 / 0.25)  # 0.25; TERM_0 + TERM_1 = JS_DRIFT


def labelled(cfg, tmp_path, **codebook):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "labels.json").write_text(json.dumps(LABELS))
    return cfg.model_copy(update={"consumer": cfg.consumer.model_copy(update={"codebook_dir": tmp_path}),
                                  "codebook": cfg.codebook.model_copy(update=codebook)})


def test_drift_detected_and_the_api_explain_the_drift_with_labels(make_daemon, redis, cfg, tmp_path):
    from fastapi.testclient import TestClient

    from daemon.api.app import create_app

    d = make_daemon(config=labelled(cfg, tmp_path))
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    assert d.check("sw", T0).fired
    [ev] = [e for e in events(cfg) if e.type == "drift_detected"]
    assert ev.data["top_clusters"] == [
        {"cluster": 1, "label": "goal · match", "p_ref": 0.5, "p_window": 0.0, "js_term": 0.25},
        {"cluster": 0, "label": "rain · storm", "p_ref": 0.5, "p_window": 1.0, "js_term": round(TERM_0, 6)},
        {"cluster": 2, "label": "noise", "p_ref": 0.0, "p_window": 0.0, "js_term": 0.0}]
    assert abs(TERM_0 + TERM_1 - JS_DRIFT) < 1e-15

    e = TestClient(create_app(d)).get("/v1/languages/sw").json()["explanation"]
    assert (e["available"], e["labeled"], e["n_samples"], e["codebook_version"]) == (True, True, 4, "v1")
    assert e["js"] == pytest.approx(JS_DRIFT, abs=1e-12)
    assert [(c["cluster"], c["label"], c["example"], c["count"]) for c in e["clusters"]] == [
        (1, "goal · match", "who scored the goal", 0), (0, "rain · storm", "will it rain", 4), (2, "noise", None, 0)]
    assert e["clusters"][0]["share_of_js"] == pytest.approx(TERM_1 / JS_DRIFT)
    assert d.describe("yo")["explanation"]["reason"] == "no P_ref; set one with `compass ref set`"


def test_store_examples_false_keeps_queries_out_of_the_explanation(make_daemon, redis, cfg, tmp_path):
    d = make_daemon(config=labelled(cfg, tmp_path, store_examples=False))
    ref(redis)
    fill(redis, "sw", [0, 0, 0, 0])
    e = d.describe("sw")["explanation"]
    assert [(c["label"], c["example"]) for c in e["clusters"]] == [("goal · match", None), ("rain · storm", None),
                                                                  ("noise", None)]
