"""Unserved languages (issue 12): the pure emerging rule, the Redis counts, and the whole path on real Kafka and Redis.

A query of a language no configured adapter serves (not in languages.yaml, disabled there, or ``und``) never enters
a configured window; the consumers count it exactly once (also across a crash and a restart) and the daemon
announces a language that grows past its share level once per episode.
"""

from __future__ import annotations

import time
import uuid

import pytest
import yaml

from compass.drift.emerging import (
    EmergingError,
    EmergingSettings,
    EmergingState,
    Reading,
    decide,
    how_to_serve,
    readings,
    states_from_json,
    states_to_json,
)
from compass.embed.config import EmbedderConfig
from compass.langid_config import LangIdConfig
from compass.languages import LanguagesConfig
from consumers.events import QueryEvent, encode_event
from infra.settings import ServiceConfig
from infra.unserved import Traffic, UnservedStore
from infra.window import WindowInputError

NOW = 1_763_800_000.0
S = EmergingSettings(share=0.1, min_count=10, rearm_ratio=0.5)  # re-arms below 0.05
OFF, ON = EmergingState(), EmergingState(True, NOW - 60, 0.2, 20, 1)


# ------------------------------------------------------------------------------------------ the pure rule


@pytest.mark.parametrize(("state", "lang", "count", "total", "configured", "want"), [
    # (check, emit, active after, episodes after)
    (OFF, "ca", 5, 100, False, ("below", False, False, 0)),
    (OFF, "ca", 9, 50, False, ("few", False, False, 0)),  # share 0.18 but 9 < min_count 10
    (OFF, "ca", 10, 100, False, ("emerging", True, True, 1)),  # share == level, count == min_count: emerges
    (ON, "ca", 8, 100, False, ("ongoing", False, True, 1)),  # above the re-arm level: no second event
    (ON, "ca", 5, 100, False, ("ongoing", False, True, 1)),  # exactly at the re-arm level: still on
    (ON, "ca", 4, 100, False, ("rearmed", False, False, 1)),  # below half the level: the episode ends
    (ON, "ca", 0, 0, False, ("rearmed", False, False, 1)),  # no traffic at all: share 0
    (EmergingState(False, NOW - 600, 0.2, 20, 1), "ca", 30, 100, False, ("emerging", True, True, 2)),  # new episode
    (OFF, "ca", 0, 0, False, ("below", False, False, 0)),
    (OFF, "und", 90, 100, False, ("undetermined", False, False, 0)),  # nothing to serve: never emerges
    (ON, "ca", 50, 100, True, ("served", False, False, 1)),  # configured since: the episode ends
])
def test_emerging_decision_table(state, lang, count, total, configured, want):
    step = decide(state, Reading(lang, count, total), S, configured=configured, now=NOW)
    assert (step.check, step.emit, step.state.active, step.state.episodes) == want
    if step.emit:
        assert step.state == EmergingState(True, NOW, count / total, count, want[3])
    else:
        assert (step.state.since, step.state.share, step.state.count) == (state.since, state.share, state.count)


def test_a_share_hovering_around_the_level_emits_once_per_episode():
    shares = [0.02, 0.11, 0.09, 0.12, 0.06, 0.10, 0.049, 0.08, 0.10, 0.3, 0.01]  # of 1000 queries each check
    state, emitted = EmergingState(), []
    for i, share in enumerate(shares):
        step = decide(state, Reading("ca", round(share * 1000), 1000), S, configured=False, now=NOW + i)
        state = step.state
        emitted += [i] if step.emit else []
    assert emitted == [1, 8]  # up at 0.11; stays up until 0.049 < 0.05; up again at 0.10
    assert (state.active, state.episodes) == (False, 2)


def test_readings_states_and_settings():
    got = readings({"ca": 30, "und": 10}, served=60)
    assert got == {"ca": Reading("ca", 30, 100), "und": Reading("und", 10, 100)}
    assert got["ca"].share == 0.3 and Reading("ca", 0, 0).share == 0.0
    states = {"ca": ON, "gl": OFF}
    assert states_from_json(states_to_json(states)) == states and states_from_json(None) == {}
    with pytest.raises(EmergingError, match=r"emerging states \['ca'\]: got 3; expected an object with fields"):
        states_from_json('{"ca": 3}')
    with pytest.raises(EmergingError, match="not JSON"):
        states_from_json("{")
    with pytest.raises(EmergingError, match=r"share: got 0; must be a fraction in \(0, 1\] \(daemon.emerging_share\)"):
        EmergingSettings(0, 10)
    with pytest.raises(EmergingError, match="min_count: got 0; must be an integer >= 1"):
        EmergingSettings(0.1, 0)
    assert how_to_serve("und") is None
    assert "`compass adapt --target ca`" in how_to_serve("ca") and "add `ca: {}` to languages.yaml" in how_to_serve("ca")


# ------------------------------------------------------------------------------------------ the Redis counts


def test_unserved_store_counts_each_offset_once(redis):
    store = UnservedStore(redis, "compass", bucket_s=60, retention_s=3600, samples_max=3, samples_ttl_s=600)
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 2 * 3600 * 1000  # outside the horizon: its bucket expires on write
    batch = [Traffic("s0", "sw", True, "t", 0, 0, now_ms), Traffic("c0", "ca", False, "t", 0, 1, now_ms),
             Traffic("c1", "ca", False, "t", 1, 0, now_ms), Traffic("u0", "und", False, "t", 1, 1, now_ms),
             Traffic("c2", "ca", False, "t", 0, 2, old_ms), Traffic("c3", "ca", False, "t", 0, 3, now_ms),
             Traffic("c4", "ca", False, "t", 0, 4, now_ms)]
    r = store.apply(batch)
    assert (r.served, dict(r.unserved), r.duplicates, r.duplicates_unserved) == (1, {"ca": 5, "und": 1}, 0, 0)
    # the batch re-delivered with one new message: only that one counts
    r = store.apply([*batch, Traffic("c5", "ca", False, "t", 1, 2, now_ms)])
    assert (r.served, dict(r.unserved), r.duplicates, r.duplicates_unserved) == (0, {"ca": 1}, 7, 6)

    assert store.totals() == {"ca": 6, "und": 1}
    assert store.offsets() == {"t:0": 4, "t:1": 2}
    b = store.bucket_of(now_ms)
    assert redis.hgetall(f"compass:{{unserved}}:bucket:{b}") == {b"_served": b"1", b"ca": b"5", b"und": b"1"}
    assert not redis.exists(f"compass:{{unserved}}:bucket:{store.bucket_of(old_ms)}")
    ttl = redis.ttl(f"compass:{{unserved}}:bucket:{b}")
    assert (b + 1) * 60 + 3600 - time.time() - 2 <= ttl <= (b + 1) * 60 + 3600 - time.time() + 1
    assert store.samples("ca") == ["c3", "c4", "c5"] and store.samples("und") == ["u0"]  # newest 3, newest last
    assert 590 <= redis.ttl("compass:{unserved}:samples:ca") <= 600
    reading = store.read(now_ms / 1000, 3600)
    assert (reading.served, reading.counts, reading.totals, reading.total) == (1, {"ca": 5, "und": 1},
                                                                              {"ca": 6, "und": 1}, 7)
    assert reading.last_bucket - reading.first_bucket == 60  # the 61 buckets overlapping the hour

    with pytest.raises(WindowInputError, match=r"Traffic 'x': lang must be a compass language code .* got 'Catalan'"):
        Traffic("x", "Catalan", False, "t", 0, 0, now_ms)
    with pytest.raises(WindowInputError, match="bucket_s must be an integer >= 1; got 0"):
        UnservedStore(redis, bucket_s=0)
    store.reset()
    assert store.totals() == {} and store.offsets() == {} and redis.keys("compass:{unserved}:*") == []


# ------------------------------------------------------------------------------------------ end to end

LANGS_YAML = """
languages:
  sw: {window_size: 30, min_samples: 1}
  yo: {enabled: false}
"""
WINDOW = 30


def _produce(cfg: ServiceConfig, items: list[tuple[bytes, bytes]]) -> None:
    from infra.clients import kafka_producer

    p = kafka_producer(cfg.kafka, acks="all")
    try:
        for key, value in items:
            p.send(cfg.kafka.queries_topic, key=key, value=value)
        p.flush()
    finally:
        p.close()


def _events(cfg: ServiceConfig):
    from kafka import TopicPartition

    from infra.clients import kafka_consumer
    from infra.messages import decode_event

    c = kafka_consumer(cfg.kafka, None, [], auto_offset_reset="earliest")
    try:
        tp = TopicPartition(cfg.kafka.events_topic, 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        out: list = []
        for _ in range(100):
            if len(out) >= end:
                break
            out += [r for recs in c.poll(timeout_ms=300).values() for r in recs]
        assert len(out) == end
        return [decode_event(r.value) for r in out]
    finally:
        c.close()


def test_unserved_stream_keeps_windows_clean_counts_exactly_and_emerges_once(services, redis, topic_factory,
                                                                              tmp_path):
    from compass.cluster import make_clusterer
    from compass.langid import make_identifier
    from consumers.monitor import Monitor
    from daemon.scheduler.service import Daemon
    from infra.codebook import CodebookStore
    from infra.embedders import make_embedder
    from infra.window import WindowStore

    base = services.config
    cfg = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"queries_topic": topic_factory(1), "dead_letter_topic": topic_factory(1),
                                               "jobs_topic": topic_factory(1), "events_topic": topic_factory(1)}),
        "consumer": base.consumer.model_copy(update={
            "codebook_dir": tmp_path / "codebooks", "group_id": f"g-{uuid.uuid4().hex[:8]}", "metrics_port": 0,
            "eta": 0.0, "session_timeout_ms": 6000, "max_poll_records": 8}),
        "embedder": EmbedderConfig(cache=True, cache_dir=tmp_path / "emb"),
        "daemon": base.daemon.model_copy(update={
            "check_interval_s": 1.0, "lease_ttl_ms": 5000, "events_group_id": f"d-{uuid.uuid4().hex[:8]}",
            "emerging_share": 0.1, "emerging_min_count": 10, "emerging_horizon_s": 3600}),
    })
    languages = LanguagesConfig.model_validate(yaml.safe_load(LANGS_YAML))
    embedder = make_embedder(cfg.embedder)
    identifier = make_identifier(LangIdConfig(), ["sw"])

    sw = [QueryEvent(f"s{i}", f"Habari ya asubuhi rafiki {i}, ninakwenda sokoni leo", "sw") for i in range(80)]
    ca = [QueryEvent(f"c{i}", f"Bon dia amic {i}, avui vaig al mercat", "ca") for i in range(22)]
    yo = QueryEvent("y0", "E kaaro ore mi, mo n lo si oja", "yo")  # configured but disabled: unserved
    und = QueryEvent("u0", "12345 ???")  # language ID cannot tell: und, unserved
    clusterer = make_clusterer("kmeans", seed=0, n_clusters=4)
    clusterer.fit_predict(embedder.encode([e.text for e in sw + ca]))
    codebook = CodebookStore(cfg.consumer.codebook_dir, redis, cfg.redis.key_prefix).publish(
        clusterer, embedder.model_id, languages=["sw"])

    def msgs(events):
        return [(e.id.encode(), encode_event(e)) for e in events]

    # phase 1: 40 sw, 2 ca; phase 2: 40 sw, 20 ca, the yo and und queries and one malformed message
    phase1 = sw[:20] + ca[:1] + sw[20:40] + ca[1:2]
    phase2 = [x for i in range(20) for x in (sw[40 + 2 * i], ca[2 + i], sw[41 + 2 * i])] + [yo, und]
    _produce(cfg, msgs(phase1))
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        first = m.run(burst=True)
    assert (first.applied, first.unserved, dict(first.unserved_langs), first.dead_lettered) == (40, 2, {"ca": 2}, 0)

    daemon = Daemon(cfg, languages, owner="unserved-test")
    try:
        r = daemon.check_unserved()
        assert (r.state, r.checks, r.emitted) == ("checked", {"ca": "below"}, ())  # 2 of 42 < 0.1

        _produce(cfg, msgs(phase2) + [(b"bad", b'{"id": "x", "text": ')])
        # the consumer dies after its 3rd Redis write, before that batch's commit; a new one re-reads that batch
        m = Monitor(cfg, languages, embedder=embedder, identifier=identifier)
        written: list[dict] = []

        class Crash(BaseException):  # a dying process: run() retries any Exception
            pass

        def crash(reason="batch", **kw):
            if not m.checkpoint.pending:
                return {}
            written.append({tp.partition: o for tp, o in m.checkpoint.pending.items()})
            if len(written) == 3:
                raise Crash
            return type(m.checkpoint).commit(m.checkpoint, reason, **kw)

        m.checkpoint.commit = crash
        with pytest.raises(Crash):
            m.run(burst=True)
        m.checkpoint.pending.clear()
        m.consumer.close(autocommit=False)
        m.redis.close()
        lo, hi = written[1][0] - len(phase1), written[2][0] - len(phase1)  # the written, uncommitted batch
        again = phase2[lo:hi]
        with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m2:
            second = m2.run(burst=True)
        assert second.duplicates == sum(e.lang == "sw" for e in again) > 0
        assert second.unserved_duplicates == sum(e.lang != "sw" for e in again) > 0
        assert second.reasons == {"malformed_json": 1}  # dead letters are for malformed input only

        # the configured window holds exactly the last 30 sw queries; nothing else entered it
        buckets = codebook.assign(embedder.encode([e.text for e in sw]))
        snap = WindowStore(redis, cfg.redis.key_prefix).snapshot("sw")
        assert snap.counts.tolist() == [int((buckets[-WINDOW:] == b).sum()) for b in range(codebook.n_buckets)]
        assert (snap.size, snap.seen) == (WINDOW, 80)
        assert WindowStore(redis, cfg.redis.key_prefix).languages() == ["sw"]
        # the unserved ones are counted exactly once each, with their samples
        store = daemon.unserved
        assert store.totals() == {"ca": 22, "und": 1, "yo": 1}
        reading = store.read(time.time(), 3600)
        assert (reading.served, reading.counts) == (80, {"ca": 22, "und": 1, "yo": 1})
        assert store.samples("ca") == [f"c{i}" for i in range(2, 22)]  # the newest unserved_samples_max = 20

        # 22 of 104 queries are ca (0.2115 >= 0.1, 22 >= 10): announced once; later checks keep quiet
        r = daemon.check_unserved()
        assert (r.state, r.checks, r.emitted) == ("checked", {"ca": "emerging", "und": "undetermined",
                                                              "yo": "below"}, ("ca",))
        assert daemon.check_unserved().checks["ca"] == "ongoing"
        assert daemon.check_unserved().emitted == ()
        evs = [e for e in _events(cfg) if e.type == "language_emerging"]
        assert len(evs) == 1 and evs[0].language == "ca" and evs[0].job_id is None
        assert evs[0].data == {"share": 22 / 104, "count": 22, "total": 104, "horizon_s": 3600,
                               "emerging_share": 0.1, "emerging_min_count": 10,
                               "sample_ids": [f"c{i}" for i in range(12, 22)], "how": how_to_serve("ca")}
        states = daemon.emerging_states()
        assert (states["ca"].active, states["ca"].count, states["ca"].episodes) == (True, 22, 1)
        metrics = __import__("prometheus_client").generate_latest(daemon.metrics.registry).decode()
        assert 'compass_daemon_language_emerging{lang="ca"} 1.0' in metrics
        assert 'compass_daemon_unserved_queries{lang="ca"} 22.0' in metrics

        # an hour later nothing is left in the horizon: the episode re-arms
        assert daemon.check_unserved(time.time() + 3 * 3600).checks == {"ca": "rearmed"}
        assert daemon.emerging_states()["ca"].active is False
    finally:
        daemon.stop()
        daemon.client.close()
