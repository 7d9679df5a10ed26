"""The monitor's units without Kafka or Redis: records -> queries, the per-query stages, the checkpoint, the null
dead-letter writer (hand-computed cases; fakes stand in for the consumer, the identifier and the embedder)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from compass.langid import Identification
from consumers import stages
from consumers.checkpoint import Checkpoint, CommitOnRevoke, NoCheckpoint
from consumers.events import QueryEvent
from consumers.query import Query, check_record, decode
from infra import deadletter as dl
from infra.safejson import JsonLimits

NOW_MS = 1_700_000_000_000


def rec(offset: int, value: bytes | None = b"", *, partition: int = 0, headers: list | None = None,
        timestamp: int | None = None, topic: str = "q") -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, key=b"k", value=value,
                           headers=headers or [], timestamp=timestamp)


def query(offset: int, text: str = "hello", lang: str | None = "en", *, ts_ms: int | None = None,
          meta: dict | None = None, timestamp: int | None = None, **kw) -> Query:
    event = QueryEvent(id=f"q{offset}", text=text, lang=lang, ts_ms=ts_ms, meta=meta or {})
    return Query(rec(offset, timestamp=timestamp), event, lang=lang, **kw)


# ------------------------------------------------------------------ records -> queries

@pytest.mark.parametrize("value,headers,reason", [
    (b"x" * 11, [], dl.OVERSIZE),
    (b"x" * 10, [], None),
    (b"{}", [("compass-schema", b"1"), ("compass-schema", b"1")], dl.AMBIGUOUS_SCHEMA),
    (b"{}", [("compass-schema", b"2")], dl.UNSUPPORTED_SCHEMA),
    (b"{}", [("compass-schema", b"1"), ("trace", b"t")], None),
    (None, [], None),  # a tombstone is refused by the decoder, not here
])
def test_check_record(value, headers, reason):
    got, detail = check_record(rec(0, value, headers=headers), limit=10)
    assert got == reason and bool(detail) == (reason is not None)


def test_decode_splits_queries_and_dead_letters():
    records = [rec(0, json.dumps({"id": "a", "text": "hi", "lang": "en"}).encode()),
               rec(1, b'{"id": "b", "text": '),
               rec(2, json.dumps({"id": "c", "text": "salut"}).encode()),
               rec(3, b"x" * 100)]
    good, bad = decode(records, 64, JsonLimits())
    assert [(q.id, q.lang, q.position) for q in good] == [("a", "en", ("q", 0, 0)), ("c", None, ("q", 0, 2))]
    assert [(d.offset, d.reason) for d in bad] == [(1, "malformed_json"), (3, dl.OVERSIZE)]


def test_query_assignment_cuts_the_stored_text():
    q = query(7, "abcdef", bucket=3, quality=0.5)
    a = q.assignment(max_chars=4)
    assert (a.query_id, a.bucket, a.topic, a.partition, a.offset, a.text, a.quality) == ("q7", 3, "q", 0, 7,
                                                                                        "abcd", 0.5)
    assert a.response is None


@pytest.mark.parametrize(("meta", "response"), [
    ({"response": "yes"}, "yes"),
    ({"response": "x" * 10}, "x" * 4),  # cut like the text
    ({"response": "   "}, None), ({"response": 3}, None), ({}, None),  # no usable label: an unlabelled query
])
def test_meta_response_labels_the_query(meta, response):
    assert query(1, "abcdef", bucket=0, meta=meta).assignment(max_chars=4).response == response


# ------------------------------------------------------------------ stages

class Identifier:
    def __init__(self, fail_on: str | None = None):
        self.fail_on, self.calls = fail_on, []

    def identify_batch(self, texts: list[str]) -> list[Identification]:
        self.calls.append(list(texts))
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError("boom")
        return [Identification("sw" if t.startswith("habar") else "und", 0.9) for t in texts]


def test_identify_only_where_lang_is_missing_and_isolates_failures():
    ident, bad = Identifier(fail_on="BAD"), []
    qs = [query(0, lang="en"), query(1, "habari yako", lang=None), query(2, "BAD", lang=None),
          query(3, "12345", lang=None)]
    out = stages.identify(qs, ident, 5, bad, alone=False)
    assert [(q.id, q.lang, q.confidence) for q in out] == [("q0", "en", 1.0), ("q1", "sw", 0.9), ("q3", "und", 0.9)]
    assert ident.calls[0] == ["habar", "BAD", "12345"]  # cut to max_chars, only the missing ones
    assert [(d.offset, d.reason, d.detail) for d in bad] == [(2, dl.INTERNAL_ERROR,
                                                              "language ID raised RuntimeError: boom")]


@pytest.mark.parametrize("lang,ts_ms,timestamp,served,counted_as,at_ms", [
    ("en", 5, 9, True, "en", 5),  # the event's ts first
    ("en", None, 9, True, "en", 9),  # else Kafka's timestamp
    ("en", None, None, True, "en", NOW_MS),  # else now
    ("en", -1, None, True, "en", NOW_MS),  # a negative time is not a time
    ("en", NOW_MS + 10, None, True, "en", NOW_MS),  # never past our clock
    ("ru", None, 9, False, "ru", 9),  # not enabled: unserved under its language
    ("und", None, 9, False, "und", 9),
])
def test_route(lang, ts_ms, timestamp, served, counted_as, at_ms):
    [q] = stages.route([query(4, lang=lang, ts_ms=ts_ms, timestamp=timestamp)], {"en", "sw"}, NOW_MS)
    t = q.traffic
    assert (q.served, t.served, t.lang, t.at_ms, t.query_id, t.offset) == (served, served, counted_as, at_ms, "q4", 4)


class Embedder:
    dim = 2

    def __init__(self, bad: dict[str, list[float]] | None = None):
        self.bad = bad or {}

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([self.bad.get(t, [len(t), 1.0]) for t in texts], dtype=np.float32)


def test_embed_dead_letters_a_non_finite_vector_and_keeps_the_rest():
    bad: list = []
    out = stages.embed([query(0, "ab"), query(1, "nan"), query(2, "abcdef")], Embedder({"nan": [np.nan, 1]}), 4,
                       bad, alone=False)
    assert [(q.id, q.vector.tolist()) for q in out] == [("q0", [2.0, 1.0]), ("q2", [4.0, 1.0])]
    assert [(d.offset, d.detail) for d in bad] == [(1, "embedding raised ValueError: the embedder returned a "
                                                       "non-finite vector")]


def test_assign_and_reassign():
    codebook = SimpleNamespace(assign=lambda X: (X[:, 0] > 2).astype(int))
    qs = [query(0, vector=np.array([1.0, 0.0])), query(1, vector=np.array([3.0, 0.0]))]
    bad: list = []
    assert [q.bucket for q in stages.assign(qs, codebook, bad, alone=False)] == [0, 1] and bad == []
    flipped = SimpleNamespace(assign=lambda X: (X[:, 0] <= 2).astype(int))
    assert [q.bucket for q in stages.reassign(qs, flipped)] == [1, 0]
    assert stages.reassign([], flipped) == []


@pytest.mark.parametrize("meta,quality,reason", [
    ({"fb": 0.25}, 0.25, None),
    ({"fb": 4}, 4.0, None),
    ({}, None, None),
    ({"fb": "great"}, None, dl.BAD_QUALITY),
    ({"fb": True}, None, dl.BAD_QUALITY),
    ({"fb": float("inf")}, None, dl.BAD_QUALITY),
])
def test_score_quality(meta, quality, reason):
    bad: list = []
    [q] = stages.score_quality([query(0, meta=meta)], "fb", bad)
    assert q.quality == quality and [d.reason for d in bad] == ([reason] if reason else [])
    assert stages.score_quality([query(0, meta=meta)], None, bad)[0].quality is None  # no key, no scores


def test_by_language_keeps_poll_order():
    qs = [query(0, "aaaa", "en", bucket=1), query(1, "b", "sw", bucket=0), query(2, "cc", "en", bucket=2)]
    got = stages.by_language(qs, max_chars=2)
    assert {lang: [(a.offset, a.bucket, a.text) for a in items] for lang, items in got.items()} == {
        "en": [(0, 1, "aa"), (2, 2, "cc")], "sw": [(1, 0, "b")]}


# ------------------------------------------------------------------ checkpoint

class Consumer:
    def __init__(self, fail: bool = False):
        self.fail, self.commits, self.async_commits = fail, [], []

    def commit(self, offsets):
        if self.fail:
            raise CommitFailedError("rebalanced")
        self.commits.append(offsets)

    def commit_async(self, offsets, callback):
        self.async_commits.append(offsets)
        callback(offsets, RuntimeError("lost"))  # a failed async commit is only logged


A, B = TopicPartition("q", 0), TopicPartition("q", 1)


def test_checkpoint_stages_the_next_offset_per_partition_and_commits_it():
    c = Consumer()
    cp = Checkpoint(c)
    assert cp.commit() == {} and c.commits == []  # nothing staged, nothing sent
    cp.stage([rec(5), rec(3), rec(9, partition=1)])
    assert cp.pending == {A: 6, B: 10}
    assert cp.commit() == {("q", 0): 6, ("q", 1): 10} and cp.pending == {}
    assert c.commits == [{A: OffsetAndMetadata(6, "", -1), B: OffsetAndMetadata(10, "", -1)}]


def test_a_failed_commit_keeps_the_offsets_for_the_next_try():
    cp = Checkpoint(Consumer(fail=True))
    cp.stage([rec(1)])
    assert cp.commit() == {} and cp.pending == {A: 2}


def test_revoke_commits_async_and_loss_forgets():
    c = Consumer()
    cp = Checkpoint(c)
    listener = CommitOnRevoke(cp)
    cp.stage([rec(1), rec(4, partition=1)])
    listener.on_partitions_lost([B])
    assert cp.pending == {A: 2}
    listener.on_partitions_revoked([A])
    assert c.async_commits == [{A: OffsetAndMetadata(2, "", -1)}] and cp.pending == {} and c.commits == []


def test_no_checkpoint_never_commits():
    c = Consumer()
    cp = NoCheckpoint(c)
    cp.stage([rec(1)])
    assert cp.commit(reason="close") == {} and cp.pending == {} and c.commits == []


def test_null_dead_letters_records_nothing():
    null = dl.NullDeadLetters()
    null.send(dl.dead_letter_of(rec(0), dl.OVERSIZE, "too big"))
    assert null.flush() == 0 and null.close() is None


# ------------------------------------------------------------------ the window write, with a newer codebook

class Sync:
    """CodebookSync's part the window write uses: a codebook whose buckets flip on reload."""

    def __init__(self):
        self.version, self.reloads = "v1", 0
        self.codebook = SimpleNamespace(n_buckets=2, assign=lambda X: np.zeros(len(X), dtype=int))

    def reload(self):
        self.reloads += 1
        self.version = f"v{self.reloads + 1}"
        self.codebook = SimpleNamespace(n_buckets=2, assign=lambda X: np.ones(len(X), dtype=int))


class Windows:
    """Refuses ``sw`` as stale ``stale_times`` times (applying ``en`` the first time), then applies."""

    def __init__(self, stale_times: int):
        self.stale_times, self.calls = stale_times, []

    def apply_batch(self, request, version, n_buckets, sampling_rates=None):
        from infra.window import ApplyResult, StaleCodebookError

        self.calls.append((version, {lang: [a.bucket for a in items] for lang, (_, items) in request.items()}))
        done = {lang: ApplyResult(len(items), 0, 0) for lang, (_, items) in request.items() if lang != "sw"}
        if "sw" in request and self.stale_times:
            self.stale_times -= 1
            raise StaleCodebookError(version, {"sw": "v9"}, done)
        return {**done, **({"sw": ApplyResult(len(request["sw"][1]), 0, 0)} if "sw" in request else {})}


def pipeline(windows: Windows, sync: Sync):
    from compass.languages import LanguagesConfig
    from consumers.pipeline import Pipeline
    from consumers.sampler import Sampler

    cc = SimpleNamespace(max_json_depth=32, max_number_digits=32, max_embed_chars=100, max_message_bytes=1000)
    one = {"window_size": 10, "min_samples": 1}
    languages = LanguagesConfig.model_validate({"languages": {"en": one, "sw": one}})
    return Pipeline(cc, languages, identifier=None, embedder=None, codebook=sync, windows=windows, unserved=None,
                    checkpoint=None, dead_letters=dl.NullDeadLetters(), metrics=None, quality_key=None,
                    sampler=Sampler(languages, None))


@pytest.mark.parametrize("stale_times,calls,reloads", [
    (0, [("v1", {"en": [0], "sw": [0, 0]})], 0),
    (1, [("v1", {"en": [0], "sw": [0, 0]}), ("v2", {"sw": [1, 1]})], 1),  # only the refused language again
    (2, [("v1", {"en": [0], "sw": [0, 0]}), ("v2", {"sw": [1, 1]}), ("v3", {"sw": [1, 1]})], 2),
])
def test_a_stale_window_reloads_the_codebook_and_reassigns_only_its_language(stale_times, calls, reloads):
    windows, sync = Windows(stale_times), Sync()
    served = [query(i, lang=lang, bucket=0, vector=np.zeros(2)) for i, lang in enumerate(["en", "sw", "sw"])]
    results = pipeline(windows, sync)._apply(served)
    assert windows.calls == calls and sync.reloads == reloads
    assert {lang: r.applied for lang, r in results.items()} == {"en": 1, "sw": 2}


def test_a_window_still_stale_after_three_tries_raises():
    from infra.window import StaleCodebookError

    windows, sync = Windows(3), Sync()
    with pytest.raises(StaleCodebookError):
        pipeline(windows, sync)._apply([query(0, lang="sw", bucket=0, vector=np.zeros(2))])
    assert len(windows.calls) == 3 and sync.reloads == 2


def test_the_embedding_cache_metric_counts_from_the_monitor_start():
    from consumers.metrics import ConsumerMetrics

    m, emb = ConsumerMetrics(), SimpleNamespace(hits=7, misses=3)  # 10 lookups before this monitor existed
    m.observe_cache(emb, baseline=True)
    emb.hits, emb.misses = 10, 4  # one batch: 3 hits, 1 miss
    m.observe_cache(emb)
    emb.hits, emb.misses = 10, 8  # another: 4 misses
    m.observe_cache(emb)
    m.observe_cache(object())  # an embedder without a cache counts nothing

    def get(name, labels=None):
        return m.registry.get_sample_value(name, labels or {})

    assert (get("compass_consumer_embed_cache_total", {"outcome": "hit"}),
            get("compass_consumer_embed_cache_total", {"outcome": "miss"})) == (3, 5)
    assert get("compass_consumer_embed_cache_hit_ratio") == 3 / 8


def test_a_replayed_record_carries_its_response_only_when_asked():
    from compass.data import Record
    from consumers.replay import to_event

    r = Record(id="r1", lang="it", text="ciao", response="salve", topic="greetings")
    assert "response" not in to_event(r, "run").meta
    ev = to_event(r, "run", with_lang=True, with_response=True)
    assert (ev.id, ev.lang, ev.meta["response"], ev.meta["topic"]) == ("run:r1", "it", "salve", "greetings")
    assert "response" not in to_event(Record(id="r2", lang="it", text="ciao"), "run", with_response=True).meta
