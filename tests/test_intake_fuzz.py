"""Fuzzing the two Kafka intakes on the real Kafka and Redis: the daemon's worker reports (EventInbox) and the
worker's jobs (Worker.intake).

Thousands of generated bad messages (random bytes, invalid UTF-8, deep nesting, huge numbers, wrong types in every
field, bad language codes, NULs, lone surrogates) are mixed with valid ones. Checked exactly: no poll raises,
every valid report reaches its language's inbox in order (every valid job its queue), every bad message is
dead-lettered once with the intake's reason and its original bytes, and no Redis key names a bad language.
Seeded: a failure is reproducible.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from typing import Any

import pytest
import torch
from kafka import KafkaConsumer, TopicPartition

from daemon.scheduler.dispatch import EventInbox, drain_inbox
from daemon.worker import Worker
from infra.clients import kafka_producer
from infra.deadletter import REASON_HEADER
from infra.history import events_key
from infra.messages import EVENT_TYPES, WORKER_EVENTS, decode_event, decode_job

SEED = 13
LANGS = ["sw", "yo", "it", "ceb", "und", "zh"]
BAD_LANGS = ["../../x}:y", "SW", "sw-KE", "", " sw", "sw\n", "x", "abcd", "s\x00w", "\ud800", "{sw}", "sw:inbox",
             "Swahili", "*", "sw}:{yo", "ｓｗ", "e\u0301n", "und\x00", 7, None, ["sw"], {"sw": 1}, True]
WRONG = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [1, 2], {"a": None}, "\x00", 10**30, 2**70, -1e308]


def _topic_factory_cfg(services, topic_factory, partitions: int = 2):
    base = services.config
    return base.model_copy(update={"kafka": base.kafka.model_copy(update={
        "events_topic": topic_factory(partitions), "jobs_topic": topic_factory(partitions),
        "dead_letter_topic": topic_factory(1)})})


# ------------------------------------------------------------------------------------------ generators

def _raw_garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        return b'{"schema": 1, "type": "update_started", "language": "sw", "at": 1, "job_id": "\xff\xfe\x80"}'
    if kind == 2:
        depth = rng.choice([1100, 5000, 50_000])
        return b'{"schema": 1, "data": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 3:
        return b'{"schema": 1, "type": "update_started", "language": "sw", "at": ' + b"9" * rng.choice(
            [400, 4301, 20_000]) + b', "job_id": "j1"}'  # inf after float(), or over the int digits limit
    if kind == 4:
        return json.dumps(rng.choice([[], "text", 1, None, [{"schema": 1}], 1.5])).encode()
    if kind == 5:  # a lone surrogate escape, in a field or deep in data
        where = rng.choice(['"job_id": "a\\ud800b"', '"data": {"x": ["\\udfff"]}', '"data": {"\\ud83d": 1}'])
        return ('{"schema": 1, "type": "update_finished", "language": "sw", "at": 1, ' + where + "}").encode()
    if kind == 6:
        return b'{"schema": 1, "type": "update_started", "language": "sw", "at": NaN, "job_id": "j"}'
    if kind == 7:
        return b'{"schema": 1, "type": "update_started", "language": "sw", "at": Infinity, "job_id": "j"}'
    return rng.randbytes(8) + b"\x00" * rng.randrange(1, 50)


def _json(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: sent as its JSON escape
        return json.dumps(obj).encode()


def valid_event(rng: random.Random, i: int) -> dict[str, Any]:
    kind = rng.choice(WORKER_EVENTS + ("drift_detected", "language_emerging"))
    data = rng.choice([{}, {"ok": True, "adapter_version": "a8"}, {"note": "naïve 日本語 \x00 ok 🎉"},
                       {"nested": [[[[{"x": 1e300}]]]]}, {"big": 10**100}])
    return {"schema": 1, "type": kind, "language": rng.choice(LANGS), "at": rng.uniform(0, 2e9),
            "job_id": f"j-{i}" if kind in WORKER_EVENTS or rng.random() < 0.5 else None, "data": data}


def bad_event(rng: random.Random, i: int) -> bytes:
    """A message decode_event must refuse (each branch breaks one rule)."""
    ev = valid_event(rng, i)
    ev["type"] = rng.choice(WORKER_EVENTS)
    ev["job_id"] = f"j-{i}"
    rule = rng.randrange(9)
    if rule == 0:
        return _raw_garbage(rng)
    if rule == 1:
        ev["language"] = rng.choice(BAD_LANGS)
    elif rule == 2:
        ev["type"] = rng.choice([*WRONG, "update_done", "UPDATE_STARTED"])
    elif rule == 3:
        ev["at"] = rng.choice([None, True, "1", [], {}, "nan"])
    elif rule == 4:
        ev["job_id"] = rng.choice([None, "", 5, [], "../../etc", ".hidden", "a b", "a\x00b", "x" * 129, "{j}"])
    elif rule == 5:
        ev["data"] = rng.choice([None, 1, "x", [], True])
    elif rule == 6:
        ev["schema"] = rng.choice([None, 2, 0, "1", True, 1.5, []])
    elif rule == 7:
        ev[rng.choice(["typo", "Language", "", "\x00", "x" * 1000])] = 1
    else:
        del ev[rng.choice(["type", "language", "at", "job_id"])]
    return _json(ev)


def valid_job(rng: random.Random, i: int) -> dict[str, Any]:
    lang = rng.choice(LANGS)
    return {"schema": 1, "job_id": f"{lang}-{i}-{rng.randrange(16**4):04x}", "kind": rng.choice(
        ["adapter_update", "recluster"]), "language": lang, "codebook_version": rng.choice([None, "v2"]),
        "adapter_version": rng.choice([None, "a7"]), "snapshot_key": f"compass:{{{lang}}}:snapshot:{i}",
        "js": rng.choice([None, 0.42]), "theta": 0.12, "reason": rng.choice(["drift", "manual", "quality"]),
        "n_samples": rng.randrange(0, 10_000), "noise_share": rng.choice([None, 0.1]), "far_share": None,
        "created_at": 1.7e9 + i}


def bad_job(rng: random.Random, i: int) -> bytes:
    job = valid_job(rng, i)
    rule = rng.randrange(8)
    if rule == 0:
        return _raw_garbage(rng)
    if rule == 1:
        job["language"] = rng.choice(BAD_LANGS)
    elif rule == 2:
        field = rng.choice(["job_id", "snapshot_key", "kind", "reason"])
        job[field] = rng.choice([None, "", 1, [], {}, True])
    elif rule == 3:
        field = rng.choice(["theta", "created_at", "js", "noise_share", "far_share"])
        job[field] = rng.choice([True, "0.1", [], {}, 10**400])
    elif rule == 4:
        job["n_samples"] = rng.choice([-1, 1.5, True, "3", None, 2**64])
    elif rule == 5:
        job["job_id"] = rng.choice(["../../x", "a/b", "a\x00", ".x", "x" * 200, "é"])
    elif rule == 6:
        job["schema"] = rng.choice([None, 2, True, "1"])
    else:
        job["extra"] = rng.choice(WRONG)
    return _json(job)


def mixed(rng: random.Random, n_valid: int, n_bad: int, make_valid, make_bad) -> list[tuple[bool, bytes, Any]]:
    """(valid?, value, parsed valid object) in a shuffled order."""
    out: list[tuple[bool, bytes, Any]] = []
    for i in range(n_valid):
        obj = make_valid(rng, i)
        out.append((True, _json(obj), obj))
    for i in range(n_bad):
        out.append((False, make_bad(rng, n_valid + i), None))
    rng.shuffle(out)
    return out


def produce(cfg, topic: str, messages: list[tuple[bool, bytes, Any]]) -> None:
    p = kafka_producer(cfg.kafka, acks="all", max_request_size=4 << 20)
    try:
        futures = [p.send(topic, key=(obj["language"].encode() if ok else None), value=value)
                   for ok, value, obj in messages]
        p.flush(timeout=60)
        for f in futures:
            f.get(timeout=60)
    finally:
        p.close()


def read_all(cfg, topic: str) -> list:
    c = KafkaConsumer(**cfg.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
        c.assign(tps)
        end = c.end_offsets(tps)
        c.seek_to_beginning(*tps)
        out: list = []
        deadline = time.time() + 60
        while any(c.position(tp) < end[tp] for tp in tps) and time.time() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out += recs
        assert len(out) == sum(end.values())
        return out
    finally:
        c.close()


def drain(poll, consumer, topic: str, total: int) -> None:
    """Poll until every message of ``topic`` is committed; any exception out of ``poll`` fails the test."""
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    deadline = time.time() + 60
    while time.time() < deadline:
        poll()
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        if committed == total:
            return
    raise AssertionError(f"committed {committed} of {total} messages within 60 s")


def assert_no_bad_keys(redis, prefix: str) -> set[bytes]:
    """Every key is ``{prefix}:{<tag>}:...`` with a tag among LANGS or ``worker``; returns the tags seen."""
    pattern = re.compile(re.escape(prefix.encode()) + rb":\{([^}]*)\}:")
    tags = set()
    for key in redis.scan_iter(count=1000):
        m = pattern.match(key)
        assert m, f"unexpected key {key!r}"
        tags.add(m.group(1))
    assert tags <= {lang.encode() for lang in LANGS} | {b"worker"}, tags
    return tags


# ------------------------------------------------------------------------------------------ the daemon's intake

@pytest.mark.timeout(120)
def test_event_intake_fuzz(services, topic_factory, redis):
    cfg = _topic_factory_cfg(services, topic_factory)
    rng = random.Random(SEED)
    messages = mixed(rng, n_valid=1500, n_bad=1500, make_valid=valid_event, make_bad=bad_event)
    for ok, value, _ in messages:  # the generators are right about what is valid
        if ok:
            decode_event(value)
    produce(cfg, cfg.kafka.events_topic, messages)

    prefix = cfg.redis.key_prefix
    inbox = EventInbox(cfg.kafka, f"fuzz-{cfg.kafka.events_topic}", redis, prefix, events_max=10_000,
                       auto_offset_reset="earliest", max_poll_records=300)
    try:
        queued = []
        drain(lambda: queued.append(inbox.poll(200)), inbox.consumer, cfg.kafka.events_topic, len(messages))
    finally:
        inbox.close()

    valid = [obj for ok, _, obj in messages if ok]
    reports = [ev for ev in valid if ev["type"] in WORKER_EVENTS]
    assert sum(queued) == len(reports)
    for lang in LANGS:  # every report in its language's inbox, in order (key = language: one partition)
        got = [e.to_json() for e in drain_inbox(redis, lang, prefix)]
        assert got == [r for r in reports if r["language"] == lang]
        timeline = [json.loads(x) for x in reversed(redis.lrange(events_key(lang, prefix), 0, -1))]
        assert timeline == [v for v in valid if v["language"] == lang]  # every valid event, reports or not
    dead = read_all(cfg, cfg.kafka.dead_letter_topic)
    bad = [value for ok, value, _ in messages if not ok]
    assert Counter(r.value for r in dead) == Counter(bad)  # each once, with its original bytes
    assert {dict(r.headers)[REASON_HEADER] for r in dead} == {b"bad_event"}
    assert inbox.bad == len(bad)
    assert_no_bad_keys(redis, prefix)
    assert set(EVENT_TYPES) >= {v["type"] for v in valid}


# ------------------------------------------------------------------------------------------ the worker's intake

class _Stub:
    model_id = "stub"


@pytest.mark.timeout(120)
def test_job_intake_fuzz(services, topic_factory, redis, tmp_path):
    base = _topic_factory_cfg(services, topic_factory)
    cfg = base.model_copy(update={
        "worker": base.worker.model_copy(update={"group_id": f"fuzz-{base.kafka.jobs_topic}",
                                                 "work_dir": tmp_path / "work"}),
        "adapters": base.adapters.model_copy(update={"registry": str(tmp_path / "adapters")}),
    })
    rng = random.Random(SEED + 1)
    messages = mixed(rng, n_valid=700, n_bad=1300, make_valid=valid_job, make_bad=bad_job)
    for ok, value, _ in messages:
        if ok:
            decode_job(value)
    produce(cfg, cfg.kafka.jobs_topic, messages)

    from compass.languages import LanguagesConfig

    w = Worker(cfg, LanguagesConfig(), client=redis, model=torch.nn.Linear(1, 1), tokenizer=object(),
               embedder=_Stub())
    try:
        added = []
        drain(lambda: added.append(w.intake(200)), w.consumer, cfg.kafka.jobs_topic, len(messages))
    finally:
        w.close()

    valid = [obj for ok, _, obj in messages if ok]
    assert sum(added) == len(valid)
    pending = {e.job_id: e.job for e in w.queue.pending()}
    assert pending == {j["job_id"]: j for j in valid}
    dead = read_all(cfg, cfg.kafka.dead_letter_topic)
    bad = [value for ok, value, _ in messages if not ok]
    assert Counter(r.value for r in dead) == Counter(bad)
    assert {dict(r.headers)[REASON_HEADER] for r in dead} == {b"bad_job"}
    assert assert_no_bad_keys(redis, cfg.redis.key_prefix) == {b"worker"}  # the queue only: no key from any job's language
