"""Regression tests of issue 13 (consumer side) on the real Kafka and Redis: every input that crash-looped,
stalled or over-counted `compass consume` is now dead-lettered with a reason (or counted once), and the rest of
its batch proceeds."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.fuzz_consume import (  # noqa: E402 - the harness lives with the benchmark
    HashEmbedder,
    fuzz_config,
    fuzz_languages,
    prepare,
    read_dead_letters,
)
from infra import deadletter as dl  # noqa: E402

SCHEMA = [("compass-schema", b"1")]


def _setup(services, tmp_path, embedder, **consumer):
    from compass.langid import make_identifier
    from compass.langid_config import LangIdConfig

    cfg = fuzz_config(services.config, tmp_path, uuid.uuid4().hex[:8], max_poll_records=64)
    cfg = cfg.model_copy(update={"consumer": cfg.consumer.model_copy(update={"max_message_bytes": 65536,
                                                                             **consumer})})
    languages = fuzz_languages(100)
    prepare(cfg, embedder)
    return cfg, languages, make_identifier(LangIdConfig(), languages.enabled)


def _produce(cfg, items):
    from infra.clients import kafka_producer

    p = kafka_producer(cfg.kafka, acks="all", max_request_size=(1 << 20) + 4096)
    try:
        for key, value, headers in items:
            p.send(cfg.kafka.queries_topic, key=key, value=value, headers=headers, partition=0)
        p.flush()
    finally:
        p.close()


def _ok(i: int, lang: str = "en", text: str | None = None) -> tuple[bytes, bytes, list]:
    ev = {"id": f"ok{i}", "text": text or f"how do I reset my password {i}", "lang": lang}
    return f"ok{i}".encode(), json.dumps(ev).encode(), SCHEMA


def test_each_poison_input_is_dead_lettered_and_the_batch_proceeds(services, redis, tmp_path):
    from consumers.monitor import Monitor

    embedder = HashEmbedder(fail_on="EXPLODE")
    cfg, languages, identifier = _setup(services, tmp_path, embedder)
    poison = [
        ("too_deep", b"[" * 3000 + b"]" * 3000, SCHEMA),
        ("too_deep", b'{"id": "x", "text": "hi", "lang": "en", "meta": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3001,
         SCHEMA),
        ("number_too_large", b'{"id": "x", "text": "hi", "lang": "en", "meta": {"n": ' + b"7" * 5000 + b"}}", SCHEMA),
        ("invalid_unicode", b'{"id": "\\ud800", "text": "hi", "lang": "en"}', SCHEMA),
        ("bad_meta", b'{"id": "x", "text": "hi", "lang": "en", "meta": []}', SCHEMA),
        ("bad_meta", b'{"id": "x", "text": "hi", "lang": "en", "meta": 0}', SCHEMA),
        ("bad_meta", b'{"id": "x", "text": "hi", "lang": "en", "meta": false}', SCHEMA),
        ("bad_meta", b'{"id": "x", "text": "hi", "lang": "en", "meta": ""}', SCHEMA),
        ("nul_character", b'{"id": "x", "text": "hello\\u0000world how are you", "lang": "en"}', SCHEMA),
        ("number_too_large", b'{"id": "x", "text": "hi", "lang": "en", "ts": 1' + b"0" * 400 + b"}", SCHEMA),
        ("non_finite_number", b'{"id": "x", "text": "hi", "lang": "en", "ts": 1e400}', SCHEMA),
        ("ambiguous_schema", b'{"id": "x", "text": "hi", "lang": "en"}', SCHEMA + [("compass-schema", b"2")]),
        ("internal_error", b'{"id": "x", "text": "EXPLODE here", "lang": "en"}', SCHEMA),
    ]
    items, expected = [], {}
    for i, (reason, value, headers) in enumerate(poison):
        items.append(_ok(i))
        expected[len(items)] = reason
        items.append((b"p", value, headers))
    items.append((b"ok0", items[0][1], SCHEMA))  # the first event re-sent at a new offset: counted once
    items.append((b"ru", b'{"id": "ru1", "text": "privet kak dela", "lang": "ru"}', SCHEMA))  # unserved
    items.append((b"long", json.dumps({"id": "long", "text": "word " * 3000, "lang": "es"}).encode(), SCHEMA))
    _produce(cfg, items)

    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True, retry_backoff_s=0.05)
        truncated = m.metrics.truncated.labels("es")._value.get()
    n_ok = len(poison) + 1  # the ok events and the long one
    assert (stats.polled, stats.applied, stats.duplicates, stats.resent, stats.unserved) == (
        len(items), n_ok, 1, 1, 1)
    assert stats.dead_lettered == len(poison) and stats.failed_batches == 0
    assert dict(stats.reasons) == dict(__import__("collections").Counter(expected.values()))
    assert "privet kak dela" not in embedder.seen  # unserved: counted, never embedded
    assert "EXPLODE here" not in embedder.seen  # it failed alone; its batch was re-embedded one by one
    assert max(len(t) for t in embedder.seen) == cfg.consumer.max_embed_chars and truncated == 1

    letters = read_dead_letters(cfg.kafka, cfg.kafka.dead_letter_topic, len(poison))
    got = {int(dict(r.headers)[dl.SOURCE_OFFSET_HEADER]): r for r in letters}
    assert {o: dict(r.headers)[dl.REASON_HEADER].decode() for o, r in got.items()} == expected
    boom = dict(got[max(expected)].headers)[dl.DETAIL_HEADER].decode()
    assert boom == "embedding raised RuntimeError: embedder cannot handle 'EXPLODE'"
    assert dict(got[1].headers)[dl.DETAIL_HEADER].decode() == (
        "message: JSON nests 3000 levels deep; the limit is consumer.max_json_depth = 32; flatten the value")


def test_a_message_too_large_for_a_dead_letter_is_truncated_and_the_partition_moves(services, redis, tmp_path):
    from consumers.monitor import Monitor

    embedder = HashEmbedder()
    cfg, languages, identifier = _setup(services, tmp_path, embedder)
    big = b'{"id": "big", "text": "' + b"a" * (1_048_393 - 39) + b'", "lang": "en"}'
    assert len(big) == 1_048_393  # the broker accepts it; a dead letter of it with our headers would not fit
    _produce(cfg, [(b"big", big, [("trace", b"t")]), _ok(1)])
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True, retry_backoff_s=0.05)
        lag = m.metrics.lag.labels(cfg.kafka.queries_topic, "0")._value.get()
    assert (stats.applied, stats.dead_lettered, dict(stats.reasons), stats.failed_batches) == (
        1, 1, {"oversize": 1}, 0)
    [letter] = read_dead_letters(cfg.kafka, cfg.kafka.dead_letter_topic, 1)
    h = dict(letter.headers)
    assert h[dl.TRUNCATED_HEADER] == b"value" and h[dl.ORIGINAL_BYTES_HEADER] == str(len(big)).encode()
    assert h[dl.SHA256_HEADER] == hashlib.sha256(big).hexdigest().encode()
    assert big.startswith(letter.value) and 0 < len(letter.value) < cfg.consumer.max_dead_letter_bytes
    assert h["trace"] == b"t" and h[dl.REASON_HEADER] == b"oversize"
    assert lag == 0  # exported, and the partition moved


def test_a_batch_that_keeps_failing_is_handled_one_by_one_and_only_the_poison_is_dead_lettered(services, redis,
                                                                                               tmp_path):
    from consumers.monitor import Monitor

    embedder = HashEmbedder()
    cfg, languages, identifier = _setup(services, tmp_path, embedder, max_batch_failures=3)
    _produce(cfg, [_ok(i) for i in range(5)])
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        route = m.pipeline.route

        def failing(queries, *args):  # a failure outside the isolated stages, before any write, for one message
            if any(q.id == "ok2" for q in queries):
                raise ValueError("cannot count ok2")
            return route(queries, *args)

        m.pipeline.route = failing
        stats = m.run(burst=True, retry_backoff_s=0.01)
        failed = m.metrics.failed_batches.labels("error")._value.get()
    assert (stats.applied, stats.dead_lettered, dict(stats.reasons), failed) == (4, 1, {"internal_error": 1}, 3)
    [letter] = read_dead_letters(cfg.kafka, cfg.kafka.dead_letter_topic, 1)
    assert letter.key == b"ok2"
    assert dict(letter.headers)[dl.DETAIL_HEADER].decode() == (
        "handling it failed 3+ times in a row; last: ValueError: cannot count ok2")


def test_a_dead_letter_the_broker_refuses_stops_the_consumer(services, redis, tmp_path):
    import pytest
    from kafka.admin import NewTopic

    from consumers.monitor import Monitor
    from infra.clients import kafka_admin

    embedder = HashEmbedder()
    cfg, languages, identifier = _setup(services, tmp_path, embedder)
    small = f"fuzz.small-dlq.{uuid.uuid4().hex[:8]}"
    admin = kafka_admin(cfg.kafka)
    admin.create_topics([NewTopic(small, 1, 1, topic_configs={"max.message.bytes": "5000"})])
    admin.close()
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"dead_letter_topic": small})})
    _produce(cfg, [(b"big", b"x" * 20000, SCHEMA)])
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m, \
            pytest.raises(dl.DeadLetterError, match="was refused by topic"):
        m.run(burst=True, retry_backoff_s=0.01)
