"""A short fuzzing run of `compass consume` (benchmarks/fuzz_consume.py) on the real Kafka and Redis: 3,000
generated, mutated and valid messages through one Monitor with a fast hash embedder. The consumer never exits,
every message is applied, a duplicate, unserved or dead-lettered with the expected reason, and the windows hold
exactly the valid events."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.fuzz_consume import (  # noqa: E402 - the harness lives with the benchmark
    HashEmbedder,
    fuzz_config,
    fuzz_languages,
    generate,
    prepare,
    run_fuzz,
)


def test_fuzzed_stream_is_applied_or_dead_lettered_exactly(services, redis, tmp_path):
    from compass.langid import make_identifier
    from compass.langid_config import LangIdConfig
    from infra.clients import kafka_admin

    n = 3000
    cfg = fuzz_config(services.config, tmp_path, uuid.uuid4().hex[:8], max_poll_records=64)
    languages = fuzz_languages(n)
    embedder = HashEmbedder()
    prepare(cfg, embedder)
    try:
        res = run_fuzz(cfg, languages, generate(n, seed=7, max_message_bytes=cfg.consumer.max_message_bytes),
                       embedder, make_identifier(LangIdConfig(), languages.enabled), progress=False)
    finally:
        admin = kafka_admin(cfg.kafka)
        admin.delete_topics([cfg.kafka.queries_topic, cfg.kafka.dead_letter_topic], raise_errors=False)
        admin.close()
    assert res["crashes"] == []
    assert res["wrong_reasons"] == {}
    assert res["windows"] == res["want_windows"]
    assert res["got"] == {"applied": res["expected"]["applied"], "duplicates": res["expected"]["duplicate"],
                          "unserved": res["expected"]["unserved"], "dead_lettered": res["expected"]["dead"]}
    assert res["checks"] == dict.fromkeys(res["checks"], True)
    assert set(res["by_kind"]) >= {"valid", "duplicate_id", "unserved", "random_bytes", "invalid_utf8",
                                   "deep_nesting", "huge_number", "nul", "surrogate", "oversize", "bad_header",
                                   "mutation", "tombstone"}
