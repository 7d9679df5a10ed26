"""The streaming monitor (consumers/monitor.py, `compass consume`) against the real Kafka and Redis.

Ground truth is computed here, apart from the consumer: each event's language is the one it carries (or
the configured identifier's answer), its bucket is ``codebook.assign(embed(text))`` with the published
codebook, and a window holds the last ``window_size`` buckets of its language in topic order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from compass.embed.config import EmbedderConfig
from compass.languages import LanguagesConfig
from consumers.events import QueryEvent, encode_event
from infra import deadletter as dl
from infra.settings import ServiceConfig

REPO = Path(__file__).resolve().parent.parent
K = 6
LANGS = {"en": 25, "es": 20, "de": 15, "fr": 40, "it": 40, "pt": 40}  # lang -> window_size
PER_LANG = {"en": 50, "es": 40, "de": 30, "fr": 20, "it": 20, "pt": 20}  # events per language
DEADLINE_S = 120


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def corpus_events() -> list[QueryEvent]:
    """180 real utterances; every other one without ``lang`` so language ID does that work."""
    from compass.corpora import chatterbot

    rng = random.Random(0)
    by_lang = defaultdict(list)
    for r in chatterbot.load().records:
        if r.lang in PER_LANG:
            by_lang[r.lang].append(r)
    picked = [r for lang, n in PER_LANG.items() for r in rng.sample(by_lang[lang], n)]
    rng.shuffle(picked)
    return [QueryEvent(id=f"q{i}", text=r.text, lang=r.lang if i % 2 == 0 else None) for i, r in enumerate(picked)]


@pytest.fixture(scope="session")
def embedder_cfg(tmp_path_factory) -> EmbedderConfig:
    return EmbedderConfig(cache=True, cache_dir=tmp_path_factory.mktemp("embcache"))


@pytest.fixture(scope="session")
def embedder(embedder_cfg):
    from infra.embedders import make_embedder

    return make_embedder(embedder_cfg)


@pytest.fixture(scope="session")
def languages() -> LanguagesConfig:
    langs = {lang: {"window_size": ws, "min_samples": 1} for lang, ws in LANGS.items()}
    langs["ru"] = {"enabled": False}
    return LanguagesConfig.model_validate({"languages": langs})


@pytest.fixture(scope="session")
def identifier(languages):
    from compass.langid import make_identifier
    from compass.langid_config import LangIdConfig

    return make_identifier(LangIdConfig(), languages.enabled)


@pytest.fixture(scope="session")
def fitted(corpus_events, embedder):
    """A k-means clusterer fitted on the embeddings of the stream's own texts, and those embeddings."""
    from compass.cluster import make_clusterer

    X = embedder.encode([e.text for e in corpus_events])
    clusterer = make_clusterer("kmeans", seed=0, n_clusters=K)
    clusterer.fit_predict(X)
    return clusterer, X


def make_config(services, tmp_path: Path, topic: str, dlq: str, embedder_cfg, **consumer) -> ServiceConfig:
    base = services.config
    cc = {"codebook_dir": tmp_path / "codebooks", "group_id": f"g-{uuid.uuid4().hex[:8]}", "metrics_port": 0,
          "eta": 0.0, "session_timeout_ms": 6000, "max_poll_records": 16, **consumer}
    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"queries_topic": topic, "dead_letter_topic": dlq}),
        "consumer": base.consumer.model_copy(update=cc),
        "embedder": embedder_cfg,
    })


def publish(cfg: ServiceConfig, redis, clusterer, embedder):
    from infra.codebook import CodebookStore

    store = CodebookStore(cfg.consumer.codebook_dir, redis, cfg.redis.key_prefix)
    return store, store.publish(clusterer, embedder.model_id, languages=sorted(LANGS))


def produce(cfg: ServiceConfig, topic: str, items: list[tuple[bytes | None, bytes | None, list]]) -> None:
    from infra.clients import kafka_producer

    p = kafka_producer(cfg.kafka, acks="all", max_request_size=1 << 20)
    try:
        for key, value, headers in items:
            p.send(topic, key=key, value=value, headers=headers, partition=None)
        p.flush()
    finally:
        p.close()


def produce_events(cfg, topic, events):
    produce(cfg, topic, [(e.id.encode(), encode_event(e), [("compass-schema", b"1")]) for e in events])


def expected_lang(event: QueryEvent, identifier) -> str:
    return event.lang or identifier.identify(event.text).lang


def truth_windows(events, buckets, identifier, languages, n_buckets: int) -> dict[str, np.ndarray]:
    """Counts of the last window_size buckets per language, in stream order."""
    seq = defaultdict(list)
    for e, b in zip(events, buckets, strict=True):
        lang = expected_lang(e, identifier)
        if lang in languages.enabled:
            seq[lang].append(int(b))
    return {lang: np.bincount(bs[-languages.get(lang).window_size:], minlength=n_buckets) for lang, bs in seq.items()}


def window_counts(cfg, redis) -> dict[str, np.ndarray]:
    from infra.window import WindowStore

    store = WindowStore(redis, cfg.redis.key_prefix)
    return {lang: store.snapshot(lang).counts for lang in store.languages()}


def assert_windows_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for lang in want:
        assert got[lang].tolist() == want[lang].tolist(), lang


def committed(cfg, group: str) -> dict[int, int]:
    from infra.clients import kafka_admin

    admin = kafka_admin(cfg.kafka)
    try:
        return {tp.partition: om.offset for tp, om in admin.list_group_offsets(group)[group].items()}
    finally:
        admin.close()


def write_cli_files(cfg: ServiceConfig, languages: LanguagesConfig, tmp_path: Path) -> tuple[Path, Path]:
    c, lg = tmp_path / "service.yaml", tmp_path / "languages.yaml"
    c.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    lg.write_text(yaml.safe_dump(languages.model_dump(mode="json")))
    return c, lg


def cli(c: Path, lg: Path, *args: str, out: Any = subprocess.PIPE) -> subprocess.Popen:
    """``compass consume`` in a subprocess; ``out``: a file for a process whose output nobody reads while it runs
    (a full pipe would block its logging)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPASS_")}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "consume", "-c", str(c), "-l", str(lg), *args],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(pred, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------ tests


def test_window_counts_equal_ground_truth_and_rebuild(services, redis, topic_factory, tmp_path, corpus_events,
                                                      embedder, embedder_cfg, identifier, languages, fitted):
    from consumers.monitor import Monitor, NoCodebook
    from consumers.rebuild import Rebuild
    from infra.window import WindowStore

    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg)
    _, codebook = publish(cfg, redis, fitted[0], embedder)
    want = truth_windows(corpus_events, codebook.assign(fitted[1]), identifier, languages, codebook.n_buckets)
    produce_events(cfg, topic, corpus_events)

    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
    assert stats.polled == len(corpus_events)
    unserved = [e for e in corpus_events if expected_lang(e, identifier) not in languages.enabled]
    assert (stats.applied, stats.unserved, stats.dead_lettered) == (len(corpus_events) - len(unserved),
                                                                    len(unserved), 0)
    assert stats.unserved_langs == Counter(expected_lang(e, identifier) for e in unserved)
    assert_windows_equal(window_counts(cfg, redis), want)
    assert committed(cfg, cfg.consumer.group_id) == {0: len(corpus_events)}

    # Redis state lost: --rebuild re-reads the topic and gets the same windows back
    WindowStore(redis, cfg.redis.key_prefix).reset()
    assert window_counts(cfg, redis) == {}
    with Rebuild(cfg, languages, embedder=embedder, identifier=identifier) as m:
        m.run()
    assert_windows_equal(window_counts(cfg, redis), want)

    # all of Redis lost, the codebook pointer too: a plain start refuses with the fix, --rebuild restores the newest
    # stored codebook and re-counts
    redis.flushdb()
    with pytest.raises(NoCodebook, match="run `compass consume --rebuild` to restore the newest stored codebook"):
        Monitor(cfg, languages, embedder=embedder, identifier=identifier)
    with Rebuild(cfg, languages, embedder=embedder, identifier=identifier) as m:
        assert m.codebook_version == codebook.version
        m.run()
    assert_windows_equal(window_counts(cfg, redis), want)
    assert committed(cfg, cfg.consumer.group_id) == {0: len(corpus_events)}  # the live group's are untouched


def test_crash_between_write_and_commit_counts_once(services, redis, topic_factory, tmp_path, corpus_events,
                                                    embedder, embedder_cfg, identifier, languages, fitted):
    from consumers.monitor import Monitor

    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg)
    _, codebook = publish(cfg, redis, fitted[0], embedder)
    want = truth_windows(corpus_events, codebook.assign(fitted[1]), identifier, languages, codebook.n_buckets)
    produce_events(cfg, topic, corpus_events)

    class Crash(BaseException):  # the process dies: run() isolates and retries any Exception, not this
        pass

    m = Monitor(cfg, languages, embedder=embedder, identifier=identifier)
    batches = []

    def crash(reason="batch", **kw):  # the process dies after its Redis write, before the commit
        if not m.checkpoint.pending:
            return {}
        batches.append(dict(m.checkpoint.pending))
        if len(batches) == 3:
            raise Crash
        return type(m.checkpoint).commit(m.checkpoint, reason, **kw)

    m.checkpoint.commit = crash
    with pytest.raises(Crash):
        m.run(burst=True)
    m.checkpoint.pending.clear()  # a dead process runs no rebalance listener: nothing more is committed
    m.consumer.close(autocommit=False)
    m.redis.close()
    lo, hi = list(batches[-2].values())[0], list(batches[-1].values())[0]  # the batch written, not committed
    redelivered_good = sum(expected_lang(e, identifier) in languages.enabled for e in corpus_events[lo:hi])

    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m2:
        stats = m2.run(burst=True)
    assert_windows_equal(window_counts(cfg, redis), want)
    assert stats.duplicates == redelivered_good  # the re-delivered batch was skipped, not counted twice
    assert stats.unserved_duplicates == hi - lo - redelivered_good
    unserved = Counter(expected_lang(e, identifier) for e in corpus_events
                       if expected_lang(e, identifier) not in languages.enabled)
    assert m2.unserved.totals() == dict(unserved)  # counted once each, across the crash
    assert committed(cfg, cfg.consumer.group_id) == {0: len(corpus_events)}


def test_kill_9_and_restart_counts_equal_ground_truth(services, redis, topic_factory, tmp_path, corpus_events,
                                                      embedder, embedder_cfg, identifier, languages, fitted):
    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, max_poll_records=4)
    _, codebook = publish(cfg, redis, fitted[0], embedder)
    want = truth_windows(corpus_events, codebook.assign(fitted[1]), identifier, languages, codebook.n_buckets)
    produce_events(cfg, topic, corpus_events)
    c, lg = write_cli_files(cfg, languages, tmp_path)

    first = cli(c, lg)
    try:
        wait_for(lambda: any(v.sum() for v in window_counts(cfg, redis).values()), "a first committed batch")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        stop(first)
    assert committed(cfg, cfg.consumer.group_id).get(0, 0) < len(corpus_events)  # the kill landed mid-stream
    second = cli(c, lg, "--burst")
    try:
        out, _ = second.communicate(timeout=DEADLINE_S)
    finally:
        stop(second)
    assert second.returncode == 0, out.decode()[-3000:]
    assert_windows_equal(window_counts(cfg, redis), want)
    assert committed(cfg, cfg.consumer.group_id) == {0: len(corpus_events)}


def test_poison_messages_go_to_the_dead_letter_topic(services, redis, topic_factory, tmp_path, corpus_events,
                                                     embedder, embedder_cfg, identifier, languages, fitted):
    from consumers.monitor import Monitor
    from infra.clients import kafka_consumer

    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, max_message_bytes=2048)
    publish(cfg, redis, fitted[0], embedder)
    good = [QueryEvent(id=f"g{i}", text=e.text, lang=e.lang or "en") for i, e in enumerate(corpus_events[:13])]
    # well-formed queries of a disabled language and of none: counted as unserved, never dead-lettered
    unserved = [(b"k-ru", b'{"id": "p-ru", "text": "privet", "lang": "ru"}', []),
                (b"k-und", b'{"id": "p-und", "text": "12345 ???"}', [])]
    poison = [
        ("invalid_utf8", b'{"id": "p", "text": "caf\xe9"}'),
        ("malformed_json", b'{"id": "p", "text": '),
        ("not_an_object", b'["p", "hello"]'),
        ("unknown_field", b'{"id": "p", "txt": "hello"}'),
        ("missing_id", b'{"text": "hello"}'),
        ("missing_text", b'{"id": "p", "text": "   "}'),
        ("bad_lang", b'{"id": "p", "text": "hello", "lang": "123"}'),
        ("bad_ts", b'{"id": "p", "text": "hello", "ts": true}'),
        ("bad_meta", b'{"id": "p", "text": "hello", "meta": [1]}'),
        ("oversize", json.dumps({"id": "p", "text": "hello " * 500}).encode()),
        ("invalid_unicode", b'{"id": "p", "text": "\\ud800 hi"}'),
        ("invalid_unicode", b'{"id": "p\\udfff", "text": "hi", "lang": "en"}'),  # no Redis argument takes it
        ("unsupported_schema", b'{"id": "p", "text": "hello", "lang": "en"}'),  # sent with compass-schema: 2
    ]
    assert len(good) == len(poison)
    items, expected = [], {}
    for i, e in enumerate(good):  # a poison message between every two good ones
        items.append((e.id.encode(), encode_event(e), [("compass-schema", b"1")]))
        if i < len(poison):
            reason, value = poison[i]
            expected[len(items)] = (reason, value)
            headers = [("trace", reason.encode())] + ([("compass-schema", b"2")] if reason == "unsupported_schema" else [])
            items.append((f"k-{reason}".encode(), value, headers))
    expected[len(items)] = ("malformed_json", None)  # a tombstone
    items.append((b"tomb", None, []))
    items += unserved
    produce(cfg, topic, items)

    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
        assert m.unserved.totals() == {"ru": 1, "und": 1} and m.unserved.samples("ru") == ["p-ru"]
    assert (stats.applied, stats.unserved, dict(stats.unserved_langs)) == (len(good), 2, {"ru": 1, "und": 1})
    assert stats.dead_lettered == len(expected)
    assert dict(stats.reasons) == dict(__import__("collections").Counter(r for r, _ in expected.values()))
    assert sum(v.sum() for v in window_counts(cfg, redis).values()) == len(good)
    assert committed(cfg, cfg.consumer.group_id) == {0: len(items)}

    reader = kafka_consumer(cfg.kafka, None, [], auto_offset_reset="earliest")
    from kafka import TopicPartition

    reader.assign([TopicPartition(dlq, 0)])
    letters = []
    deadline = time.monotonic() + DEADLINE_S
    while len(letters) < len(expected) and time.monotonic() < deadline:
        for recs in reader.poll(timeout_ms=500).values():
            letters.extend(recs)
    reader.close()
    assert len(letters) == len(expected)
    for rec in letters:
        h = dict(rec.headers)
        offset = int(h[dl.SOURCE_OFFSET_HEADER])
        reason, value = expected[offset]
        assert h[dl.REASON_HEADER].decode() == reason
        assert h[dl.SOURCE_TOPIC_HEADER].decode() == topic and h[dl.SOURCE_PARTITION_HEADER] == b"0"
        assert rec.value == value and rec.key == items[offset][0]
        original = [(k, v) for k, v in items[offset][2] if k != "compass-schema"]
        assert [(k, v) for k, v in rec.headers if not k.startswith("compass-")] == original
        assert (("compass-schema", b"2") in rec.headers) == (reason == "unsupported_schema")  # kept as sent
        assert h[dl.DETAIL_HEADER]  # the human-readable why


def test_quality_scores_from_meta_reach_the_daemons_list(services, redis, topic_factory, tmp_path, corpus_events,
                                                         embedder, embedder_cfg, identifier, languages, fitted):
    from kafka import TopicPartition

    from consumers.monitor import Monitor
    from infra.clients import kafka_consumer

    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, quality_meta_key="feedback")
    publish(cfg, redis, fitted[0], embedder)
    metas = [{"feedback": 0.25}, {}, {"feedback": 4}, {"feedback": "great"}, {"feedback": True}, {"feedback": -1.5}]
    events = [QueryEvent(id=f"q{i}", text=corpus_events[i].text, lang="en", meta=m) for i, m in enumerate(metas)]
    produce_events(cfg, topic, events)
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
    # every query counts in the window; the two unusable scores are dead-lettered, the three numbers are pushed
    assert (stats.applied, stats.dead_lettered, dict(stats.reasons)) == (6, 2, {"bad_quality": 2})
    assert redis.lrange(f"{cfg.redis.key_prefix}:{{en}}:quality", 0, -1) == [b"0.25", b"4.0", b"-1.5"]
    reader = kafka_consumer(cfg.kafka, None, [], auto_offset_reset="earliest")
    reader.assign([TopicPartition(dlq, 0)])
    letters, deadline = [], time.monotonic() + DEADLINE_S
    while len(letters) < 2 and time.monotonic() < deadline:
        for recs in reader.poll(timeout_ms=500).values():
            letters.extend(recs)
    reader.close()
    assert [(dict(r.headers)[dl.SOURCE_OFFSET_HEADER], dict(r.headers)[dl.REASON_HEADER]) for r in letters] == [
        (b"3", b"bad_quality"), (b"4", b"bad_quality")]
    assert "meta field 'feedback' (consumer.quality_meta_key) is 'great'" in dict(letters[0].headers)[
        dl.DETAIL_HEADER].decode()


def test_two_workers_in_one_group(services, redis, topic_factory, tmp_path, corpus_events, embedder, embedder_cfg,
                                  identifier, languages, fitted):
    topic, dlq = topic_factory(4), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, max_poll_records=8)
    _, codebook = publish(cfg, redis, fitted[0], embedder)
    big = LanguagesConfig.model_validate({"languages": {lang: {"window_size": 1000, "min_samples": 1}
                                                        for lang in LANGS}})
    want = truth_windows(corpus_events, codebook.assign(fitted[1]), identifier, big, codebook.n_buckets)
    c, lg = write_cli_files(cfg, big, tmp_path)

    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from infra.clients import kafka_admin, kafka_consumer

    # produce only once both workers hold partitions (2 each of 4), so the test shows both consume
    log_path = tmp_path / "consume.log"
    proc = cli(c, lg, "--workers", "2", out=log_path.open("wb"))
    try:
        admin = kafka_admin(cfg.kafka)
        try:
            def members() -> int:
                try:
                    info = admin.describe_groups([cfg.consumer.group_id])[cfg.consumer.group_id]
                except KafkaError:  # the group's coordinator is not ready before the first join
                    return 0
                return len(info.get("members") or []) if info.get("group_state") == "Stable" else 0

            wait_for(lambda: members() == 2, "both workers in the group")
        finally:
            admin.close()
        produce_events(cfg, topic, corpus_events)
        wait_for(lambda: sum(committed(cfg, cfg.consumer.group_id).values()) == len(corpus_events), "every commit")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)
    finally:
        stop(proc)
    out = log_path.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert_windows_equal(window_counts(cfg, redis), want)
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_worker = {e["worker"]: e["messages"] for e in logged if e.get("msg") == "exit"}
    assert sorted(by_worker) == [0, 1] and min(by_worker.values()) > 0, by_worker
    assert sum(by_worker.values()) == len(corpus_events)

    probe = kafka_consumer(cfg.kafka, None, [])
    ends = probe.end_offsets([TopicPartition(topic, p) for p in range(4)])
    probe.close()
    assert committed(cfg, cfg.consumer.group_id) == {tp.partition: o for tp, o in ends.items()}
    assert sum(ends.values()) == len(corpus_events)


def test_eq2_centroid_update_and_revisions(services, redis, topic_factory, tmp_path, corpus_events, embedder,
                                           embedder_cfg, identifier, languages, fitted):
    from consumers.monitor import Monitor

    eta = 0.3
    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, eta=eta, max_poll_records=1,
                      revision_interval_s=0.001)
    store, codebook = publish(cfg, redis, fitted[0], embedder)
    events = [QueryEvent(id=f"e{i}", text=e.text, lang=e.lang or "en") for i, e in enumerate(corpus_events[:10])]
    produce_events(cfg, topic, events)

    # hand-computed eq. 2, one event per batch: mu_k <- (1 - eta) mu_k + eta * x, k = the nearest centroid;
    # the k-means is spherical (cosine), so the updated centroid is put back on the unit sphere
    mirror = store.load(codebook.version).clusterer
    mu = np.array(mirror.centroids_, dtype=np.float64)
    X = embedder.encode([e.text for e in events])
    for x in X:
        k = int(mirror.predict(x[None, :])[0])
        mu[k] = (1 - eta) * mu[k] + eta * x
        mu[k] /= np.linalg.norm(mu[k])
        mirror.update(x[None, :], eta)

    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
        got = np.array(m.codebook.clusterer.centroids_, dtype=np.float64)
    assert stats.batches == len(events)
    np.testing.assert_allclose(got, mu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(mirror.centroids_), rtol=0, atol=1e-6)
    # a revision was published after every batch (the interval is tiny), each the child of the previous
    assert len(stats.published) == len(events)
    latest = store.load(store.current_version())
    assert latest.version == stats.published[-1], (latest.version, stats.published)
    assert latest.parent == stats.published[-2], (latest.parent, stats.published)
    np.testing.assert_allclose(np.asarray(latest.clusterer.centroids_), got, rtol=0, atol=1e-6)
    # revisions keep bucket identities: the windows were not reset by them
    assert sum(v.sum() for v in window_counts(cfg, redis).values()) == len(events)


def test_sigterm_exits_0_after_committing_its_last_batch(services, redis, topic_factory, tmp_path, corpus_events,
                                                         embedder, embedder_cfg, identifier, languages, fitted):
    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, max_poll_records=4)
    publish(cfg, redis, fitted[0], embedder)
    events = [QueryEvent(id=f"s{i}", text=e.text, lang=e.lang or "en") for i, e in enumerate(corpus_events)]
    produce_events(cfg, topic, events)
    c, lg = write_cli_files(cfg, languages, tmp_path)

    proc = cli(c, lg)
    try:
        wait_for(lambda: any(v.sum() for v in window_counts(cfg, redis).values()), "a first batch")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=DEADLINE_S)
    finally:
        stop(proc)
    assert proc.returncode == 0, out.decode()[-3000:]
    from infra.window import WindowStore

    store = WindowStore(redis, cfg.redis.key_prefix)
    last_applied = max(store.snapshot(lang).offsets.get(f"{topic}:0", -1) for lang in store.languages())
    assert committed(cfg, cfg.consumer.group_id) == {0: last_applied + 1}
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(rec["msg"] == "stopped" for rec in lines)  # structured logs, one JSON object per line


def test_sampling_keeps_the_ids_the_hash_keeps(services, redis, topic_factory, tmp_path, corpus_events, embedder,
                                               embedder_cfg, identifier, fitted):
    """fr at sampling.rate 0.5, the others at 1.0: the windows hold exactly the ids ``keep`` says, the rest is
    counted as sampled out (never dead-lettered) and committed, also in batches where nothing was kept."""
    from compass.sampling import keep
    from consumers.monitor import Monitor

    langs = {lang: {"window_size": 500, "min_samples": 1} for lang in LANGS}
    langs["fr"]["sampling"] = {"rate": 0.5}
    langs["ru"] = {"enabled": False}
    sampled = LanguagesConfig.model_validate({"languages": langs})
    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg)
    publish(cfg, redis, fitted[0], embedder)
    produce_events(cfg, topic, corpus_events)
    lang_of = {e.id: expected_lang(e, identifier) for e in corpus_events}
    served = [e.id for e in corpus_events if lang_of[e.id] in sampled.enabled]
    fr = [i for i in served if lang_of[i] == "fr"]
    kept = [i for i in served if lang_of[i] != "fr" or keep(i, 0.5)]
    assert 0 < len(kept) - (len(served) - len(fr)) < len(fr)  # the test sees both outcomes

    with Monitor(cfg, sampled, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
        got = sorted(i for lang in m.windows.languages() for i, _ in m.windows.recent(lang))
        assert m.unserved.read(time.time(), 3600).served == len(served)  # sampled-out queries are served traffic
        # 32 more fr queries, none in the sample: whole batches (16 per poll) sampled out still commit
        out = [QueryEvent(id=i, text="Bonjour, comment allez-vous ?", lang="fr")
               for i in (f"s{n}" for n in range(200)) if not keep(i, 0.5)][:32]
        produce_events(cfg, topic, out)
        more = m.run(burst=True)
        sampled_out = m.metrics.registry.get_sample_value("compass_consumer_sampled_out_total", {"lang": "fr"})
    assert got == sorted(kept)
    assert (stats.applied, stats.sampled_out, stats.dead_lettered) == (len(kept), len(served) - len(kept), 0)
    assert dict(stats.sampled_out_langs) == {"fr": len(fr) - sum(keep(i, 0.5) for i in fr)}
    assert (more.polled, more.applied, more.sampled_out, more.dead_lettered) == (32, 0, 32, 0)
    assert sampled_out == len(served) - len(kept) + 32
    assert committed(cfg, cfg.consumer.group_id) == {0: len(corpus_events) + 32}


def test_capped_sampling_on_kafka_keeps_the_predicted_ids_and_a_replay_keeps_them_again(
        services, redis, topic_factory, tmp_path, embedder, embedder_cfg, identifier, fitted):
    """fr capped at 3 queries/s over 10 s buckets: 90 queries timed in one bucket, then 60 in the next. The first
    bucket keeps all (nothing counted before it), the second is kept at 30/90; applied + sampled out = produced,
    the window records the rate it was filled at, and a replay of the topic (windows reset, a new group: a
    re-delivery of everything) keeps exactly the same ids."""
    from compass.sampling import keep
    from consumers.monitor import Monitor
    from infra.window import WindowStore

    langs = {lang: {"window_size": 500, "min_samples": 1} for lang in LANGS}
    langs["fr"]["sampling"] = {"max_per_second": 3}
    capped = LanguagesConfig.model_validate({"languages": langs})
    topic, dlq = topic_factory(2), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg, sampling_bucket_s=10, sampling_lookback_s=10)
    publish(cfg, redis, fitted[0], embedder)
    t0 = (int(time.time()) // 10 - 5) * 10_000  # the start of a bucket 50 s ago (a bucket is never in the future)
    first = [QueryEvent(id=f"a{i}", text=f"Bonjour numéro {i}", lang="fr", ts_ms=t0 + i) for i in range(90)]
    second = [QueryEvent(id=f"b{i}", text=f"Salut numéro {i}", lang="fr", ts_ms=t0 + 10_000 + i) for i in range(60)]
    produce_events(cfg, topic, first)
    want = sorted([e.id for e in first] + [e.id for e in second if keep(e.id, 30 / 90)])
    assert 0 < len(want) - 90 < 60

    with Monitor(cfg, capped, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
        produce_events(cfg, topic, second)  # after the first bucket is counted in full, as in live traffic
        more = m.run(burst=True)
        got = sorted(i for i, _ in m.windows.recent("fr"))
        snap = m.windows.snapshot("fr")
    assert got == want
    assert stats.applied + more.applied + stats.sampled_out + more.sampled_out == 150
    assert (stats.dead_lettered, more.dead_lettered, more.sampled_out) == (0, 0, 150 - len(want))
    assert (snap.sampling_rate, snap.sampled_out) == (30 / 90, 150 - len(want))

    WindowStore(redis, cfg.redis.key_prefix).reset()
    replay = cfg.model_copy(update={"consumer": cfg.consumer.model_copy(update={"group_id": "replay"})})
    with Monitor(replay, capped, embedder=embedder, identifier=identifier) as m:
        again = m.run(burst=True)
        assert sorted(i for i, _ in m.windows.recent("fr")) == want
        # the replay embeds the same texts: all answered by the embedding cache, none embedded again
        cache = {o: m.metrics.registry.get_sample_value("compass_consumer_embed_cache_total", {"outcome": o})
                 for o in ("hit", "miss")}
        ratio = m.metrics.registry.get_sample_value("compass_consumer_embed_cache_hit_ratio")
    assert (again.applied, again.sampled_out) == (len(want), 150 - len(want))
    assert cache == {"hit": len(want), "miss": 0} and ratio == 1.0
