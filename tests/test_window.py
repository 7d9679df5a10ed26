"""infra/window/ against the real Redis: counts, offsets (effectively-once), recent queries, codebook
versions, trimming, hash tags, AOF persistence across a restart."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from redis.cluster import key_slot

from infra.window import (
    ApplyResult,
    Assignment,
    StaleCodebookError,
    WindowInputError,
    WindowStateError,
    WindowStore,
)

TOPIC = "compass.queries"


def items(bucket_offsets: list[tuple[int, int]], partition: int = 0, topic: str = TOPIC) -> list[Assignment]:
    """Assignments q<partition>-<offset> with the given (bucket, offset) pairs and text 't<offset>'."""
    return [
        Assignment(f"q{partition}-{off}", b, topic, partition, off, text=f"t{off}") for b, off in bucket_offsets
    ]


def window_list(redis, store: WindowStore, lang: str) -> list[int]:
    return [int(b) for b in redis.lrange(store.keys(lang)["window"], 0, -1)]


class Truth:
    """The window semantics in plain Python: the ground truth the Redis state must equal."""

    def __init__(self) -> None:
        self.window: deque[int] = deque()
        self.offsets: dict[str, int] = {}

    def apply(self, size: int, batch: list[Assignment]) -> ApplyResult:
        applied = dups = evicted = 0
        for a in batch:
            if a.offset <= self.offsets.get(a.position, -1):
                dups += 1
                continue
            self.offsets[a.position] = a.offset
            self.window.append(a.bucket)
            applied += 1
        while len(self.window) > size:
            self.window.popleft()
            evicted += 1
        return ApplyResult(applied, dups, evicted)


def test_counts_equal_the_ground_truth_of_a_random_stream(redis):
    store = WindowStore(redis)
    sizes = {"en": 5, "sw": 7, "fr": 50}
    n_buckets = 6
    truth = {lang: Truth() for lang in sizes}
    rng = random.Random(1234)
    next_offset = [0, 0, 0, 0]  # 4 partitions
    seen: set[str] = set()
    for _ in range(60):
        by_lang: dict[str, list[Assignment]] = {lang: [] for lang in sizes}
        for _ in range(rng.randint(1, 40)):
            p = rng.randrange(4)
            lang = rng.choice(list(sizes))
            bucket = rng.randrange(n_buckets)
            by_lang[lang].append(Assignment(f"id{p}-{next_offset[p]}", bucket, TOPIC, p, next_offset[p]))
            next_offset[p] += 1
        if rng.random() < 0.2:  # re-deliver a slice of the batch (at-least-once delivery)
            for lang in by_lang:
                by_lang[lang] += by_lang[lang][: len(by_lang[lang]) // 2]
        batch = {lang: (sizes[lang], b) for lang, b in by_lang.items() if b}
        results = store.apply_batch(batch, "v1", n_buckets)
        for lang, (size, b) in batch.items():
            t = truth[lang].apply(size, b)
            assert results[lang] == ApplyResult(t.applied, t.duplicates, t.evicted, reset=lang not in seen)
            seen.add(lang)
        for lang, t in truth.items():
            snap = store.snapshot(lang)
            expected = np.bincount(np.array(t.window, dtype=np.int64), minlength=n_buckets)
            np.testing.assert_array_equal(snap.counts, expected)
            assert snap.counts.dtype == np.int64
            assert snap.size == len(t.window) == int(snap.counts.sum())
            assert window_list(redis, store, lang) == list(t.window)
            assert snap.offsets == t.offsets
            assert snap.codebook_version == "v1"
    assert store.languages() == ["en", "fr", "sw"]
    assert [store.snapshot(lang).size for lang in ("en", "sw", "fr")] == [5, 7, 50]


def test_hand_computed_window_counts_and_evictions(redis):
    store = WindowStore(redis)
    r = store.apply("en", 3, "v1", 4, items([(0, 0), (1, 1), (1, 2), (3, 3), (2, 4)]))
    assert r == ApplyResult(applied=5, duplicates=0, evicted=2, reset=True)  # first use records the version
    snap = store.snapshot("en")
    assert snap.counts.tolist() == [0, 1, 1, 1]  # window [1, 3, 2]
    assert (snap.size, snap.codebook_version, snap.offsets) == (3, "v1", {f"{TOPIC}:0": 4})
    assert redis.hgetall(store.keys("en")["counts"]) == {b"1": b"1", b"2": b"1", b"3": b"1"}  # no zero fields
    r = store.apply("en", 3, "v1", 4, items([(3, 5)]))
    assert r == ApplyResult(1, 0, 1)
    assert store.snapshot("en").counts.tolist() == [0, 0, 1, 2]


def test_redelivered_batch_changes_nothing(redis):
    store = WindowStore(redis)
    batch = items([(0, 10), (1, 11), (2, 12)]) + items([(3, 7)], partition=1)
    store.apply("en", 10, "v1", 4, batch)
    before = store.snapshot("en")
    recent_before = store.recent("en")
    r = store.apply("en", 10, "v1", 4, batch)
    assert r == ApplyResult(applied=0, duplicates=4, evicted=0)
    after = store.snapshot("en")
    np.testing.assert_array_equal(after.counts, before.counts)
    assert (after.size, after.offsets) == (before.size, before.offsets) == (4, {f"{TOPIC}:0": 12, f"{TOPIC}:1": 7})
    assert store.recent("en") == recent_before


def test_partially_overlapping_redelivery_counts_only_the_new(redis):
    store = WindowStore(redis)
    store.apply("en", 100, "v1", 3, items([(0, off) for off in range(10)]))
    r = store.apply("en", 100, "v1", 3, items([(1, off) for off in range(5, 15)]))
    assert r == ApplyResult(applied=5, duplicates=5, evicted=0)
    snap = store.snapshot("en")
    assert snap.counts.tolist() == [10, 5, 0]
    assert snap.offsets == {f"{TOPIC}:0": 14}
    # offsets are per language: the same partition position in another language is not a duplicate
    assert store.apply("sw", 100, "v1", 3, items([(2, 3)])) == ApplyResult(1, 0, 0, reset=True)
    # and per partition and topic
    r = store.apply("en", 100, "v1", 3, items([(2, 3)], partition=1) + items([(2, 3)], topic="other"))
    assert r == ApplyResult(2, 0, 0)
    # a duplicate inside one call (same offset twice) is counted once
    assert store.apply("en", 100, "v1", 3, items([(2, 20), (2, 20)])) == ApplyResult(1, 1, 0)


def test_apply_batch_is_one_transaction_over_languages(redis):
    store = WindowStore(redis)
    res = store.apply_batch({"en": (2, items([(0, 0), (1, 1), (1, 2)])), "fr": (5, items([(2, 3)]))}, "v1", 3)
    assert res == {"en": ApplyResult(3, 0, 1, True), "fr": ApplyResult(1, 0, 0, True)}
    assert store.apply_batch({}, "v1", 3) == {}
    assert store.snapshot("en").counts.tolist() == [0, 2, 0]
    assert store.snapshot("fr").counts.tolist() == [0, 0, 1]


def test_the_window_records_the_sampling_rate_it_was_last_filled_at(redis):
    store = WindowStore(redis)
    assert store.snapshot("en").sampling_rate == 1.0  # no window: every query
    store.apply_batch({"en": (5, items([(0, 0)])), "fr": (5, items([(0, 0)]))}, "v1", 3,
                      sampling_rates={"en": 0.25})
    assert (store.snapshot("en").sampling_rate, store.snapshot("fr").sampling_rate) == (0.25, 1.0)
    store.apply("en", 5, "v1", 3, items([(1, 0)]), sampling_rate=0.5)  # a re-delivery applies nothing: kept
    assert store.snapshot("en").sampling_rate == 0.25
    store.apply("en", 5, "v1", 3, items([(1, 1)]), sampling_rate=1 / 3)
    assert store.snapshot("en").sampling_rate == 1 / 3  # repr round trip: the exact double
    with pytest.raises(WindowInputError, match=r"sampling_rate must be a number in \(0, 1\] or None; got 0"):
        store.apply("en", 5, "v1", 3, items([(1, 2)]), sampling_rate=0)
    store.add_sampled_out({"en": 7, "fr": 0})
    store.add_sampled_out({"en": 3})
    assert (store.snapshot("en").sampled_out, store.snapshot("fr").sampled_out) == (10, 0)
    with pytest.raises(WindowInputError, match="sampled-out count of 'en' must be an integer >= 0; got -1"):
        store.add_sampled_out({"en": -1})


def test_store_texts_false_keeps_ids_only(redis):
    store = WindowStore(redis, store_texts=False)
    store.apply("en", 10, "v1", 2, [Assignment("q1", 0, TOPIC, 0, 0, text="my secret question")])
    assert store.recent("en") == [("q1", None)]
    raw = redis.lrange(store.keys("en")["recent"], 0, -1)
    assert raw == [b'["q1"]']
    assert not any(b"secret" in redis.dump(k) for k in redis.keys("*"))
    with_texts = WindowStore(redis)
    with_texts.apply("en", 10, "v1", 2, [Assignment("q2", 1, TOPIC, 0, 1, text="¿dónde está?")])
    assert with_texts.recent("en") == [("q1", None), ("q2", "¿dónde está?")]


def test_a_labelled_query_keeps_its_response_beside_its_text(redis):
    store = WindowStore(redis)
    store.apply("en", 10, "v1", 2, [Assignment("q1", 0, TOPIC, 0, 0, text="how?", response="like this"),
                                    Assignment("q2", 1, TOPIC, 0, 1, text="why?")])
    assert redis.lrange(store.keys("en")["recent"], 0, -1) == [b'["q1", "how?", "like this"]', b'["q2", "why?"]']
    assert store.recent_rows("en") == [("q1", "how?", "like this"), ("q2", "why?", None)]
    assert store.recent("en") == [("q1", "how?"), ("q2", "why?")]  # the monitor's view is unchanged
    ids_only = WindowStore(redis, store_texts=False)
    ids_only.apply("de", 10, "v1", 2, [Assignment("q3", 0, TOPIC, 0, 2, text="wie?", response="so")])
    assert ids_only.recent_rows("de") == [("q3", None, None)]  # store_texts false keeps no text and no response


def test_recent_is_capped_newest_last_with_a_ttl(redis):
    store = WindowStore(redis, recent_max=3, recent_ttl_s=600)
    store.apply("en", 10, "v1", 2, items([(0, off) for off in range(5)]))
    assert store.recent("en") == [("q0-2", "t2"), ("q0-3", "t3"), ("q0-4", "t4")]
    assert store.recent("en", limit=2) == [("q0-3", "t3"), ("q0-4", "t4")]
    assert store.recent("en", limit=0) == []
    assert 0 < redis.ttl(store.keys("en")["recent"]) <= 600
    store.apply("en", 10, "v1", 2, items([(0, off) for off in range(3)]))  # duplicates: not recorded again
    assert [i for i, _ in store.recent("en")] == ["q0-2", "q0-3", "q0-4"]
    assert store.recent("de") == []


def test_codebook_version_change_resets_counts_but_keeps_offsets(redis):
    store = WindowStore(redis)
    store.apply("en", 10, "20250101T000000-aaaaaa", 3, items([(0, 0), (1, 1), (2, 2)]))
    r = store.apply("en", 10, "20250102T000000-bbbbbb", 5, items([(1, 2), (4, 3), (4, 4)]))
    assert r == ApplyResult(applied=2, duplicates=1, evicted=0, reset=True)  # offset 2 was applied before
    snap = store.snapshot("en")
    assert snap.counts.tolist() == [0, 0, 0, 0, 2]
    assert (snap.size, snap.codebook_version) == (2, "20250102T000000-bbbbbb")
    assert snap.offsets == {f"{TOPIC}:0": 4}
    assert len(store.recent("en")) == 5  # the recent queries do not depend on the codebook


def test_an_older_codebook_is_refused_and_writes_nothing(redis):
    store = WindowStore(redis)
    new, old = "20250102T000000-bbbbbb", "20250101T000000-aaaaaa"
    store.apply("en", 10, new, 3, items([(0, 0)]))
    before = {k: redis.dump(k) for k in store.keys("en").values()}
    with pytest.raises(StaleCodebookError) as e:
        store.apply("en", 10, old, 3, items([(1, 1)]))
    assert e.value.stale == {"en": new}
    assert str(e.value) == (
        f"codebook_version {old!r} is of an older lineage than the window of en (window has {new}); reload the "
        "current codebook, re-assign the batch and apply it again"
    )
    assert {k: redis.dump(k) for k in store.keys("en").values()} == before
    # in a batch: the other languages are applied and reported on the error
    with pytest.raises(StaleCodebookError) as e:
        store.apply_batch({"en": (10, items([(1, 1)])), "fr": (10, items([(2, 1)]))}, old, 3)
    assert e.value.stale == {"en": new}
    assert e.value.results == {"fr": ApplyResult(1, 0, 0, True)}
    assert store.snapshot("en").size == 1
    # "-" and "." sort by byte, whatever the server's collation locale
    store.apply("de", 10, "a_b", 3, [])
    with pytest.raises(StaleCodebookError):
        store.apply("de", 10, "a-b", 3, [])


def test_revisions_of_a_lineage_keep_the_window(redis):
    store = WindowStore(redis)
    fit, rev1, rev2 = "20250101T000000-aaaaaa", "20250101T000000-aaaaaa.20250101T000500-bbbbbb", (
        "20250101T000000-aaaaaa.20250101T001000-cccccc")
    store.apply("en", 10, fit, 3, items([(0, 0)]))
    assert store.apply("en", 10, rev2, 3, items([(1, 1)])) == ApplyResult(1, 0, 0, reset=False)
    # a worker that has not reloaded yet applies with an older revision: same bucket ids, accepted
    assert store.apply("en", 10, rev1, 3, items([(2, 2)])) == ApplyResult(1, 0, 0, reset=False)
    snap = store.snapshot("en")
    assert (snap.counts.tolist(), snap.codebook_version) == ([1, 1, 1], rev2)  # the newest version seen
    assert redis.hget(store.keys("en")["meta"], "lineage") == fit.encode()
    with pytest.raises(WindowStateError, match="all revisions of a codebook must keep its bucket count"):
        store.apply("en", 10, rev2, 4, [])
    # a new fit (a newer lineage) resets
    assert store.apply("en", 10, "20250102T000000-dddddd", 3, items([(0, 3)])).reset


def test_a_smaller_window_size_trims_the_oldest(redis):
    store = WindowStore(redis)
    store.apply("en", 10, "v1", 4, items([(i % 4, i) for i in range(10)]))  # [0 1 2 3 0 1 2 3 0 1]
    r = store.apply("en", 4, "v1", 4, [])
    assert r == ApplyResult(0, 0, 6)
    assert window_list(redis, store, "en") == [2, 3, 0, 1]
    assert store.snapshot("en").counts.tolist() == [1, 1, 1, 1]
    assert redis.hget(store.keys("en")["meta"], "window_size") == b"4"
    r = store.apply("en", 1, "v1", 4, items([(3, 10), (2, 11)]))
    assert r == ApplyResult(2, 0, 5)
    assert store.snapshot("en").counts.tolist() == [0, 0, 1, 0]


def test_keys_share_one_hash_tag_and_slot(redis):
    store = WindowStore(redis, prefix="compass", dedup_horizon_s=60)
    keys = store.keys("sw")
    assert keys["window"] == "compass:{sw}:window"
    assert set(keys) == {"window", "counts", "offsets", "recent", "meta", "quality", "ids"}
    assert all("{sw}" in k for k in keys.values())
    assert len({key_slot(k.encode()) for k in keys.values()}) == 1
    assert key_slot(b"compass:{sw}:window") != key_slot(b"compass:{en}:window")
    store.apply("sw", 5, "v1", 2, [Assignment("q", 0, TOPIC, 0, 0, text="t", quality=1.0)])
    assert sorted(k.decode() for k in redis.keys("*")) == sorted(keys.values())


def test_invalid_input_is_refused_before_redis(redis):
    store = WindowStore(redis)
    with pytest.raises(WindowInputError, match=r"item 0 \('q0-0'\) has bucket 3, outside \[0, 3\) of codebook 'v1'"):
        store.apply("en", 5, "v1", 3, items([(3, 0)]))
    with pytest.raises(WindowInputError, match="offset must be an integer in"):
        Assignment("q", 0, TOPIC, 0, -1)
    with pytest.raises(WindowInputError, match="bucket must be an integer >= 0; got True"):
        Assignment("q", True, TOPIC, 0, 1)  # type: ignore[arg-type]
    with pytest.raises(WindowInputError, match="topic must be a Kafka topic name"):
        Assignment("q", 0, "a:b", 0, 1)
    with pytest.raises(WindowInputError, match="lang must be a compass language code .* got 'EN'"):
        store.apply("EN", 5, "v1", 3, [])
    with pytest.raises(WindowInputError, match=r"codebook_version must be 1-128 of .* got '\.\./x'"):
        store.apply("en", 5, "../x", 3, [])
    with pytest.raises(WindowInputError, match="window_size must be an integer >= 1; got 0"):
        store.apply("en", 0, "v1", 3, [])
    with pytest.raises(WindowInputError, match="prefix must use only"):
        WindowStore(redis, prefix="a*b")
    assert redis.keys("*") == []


def test_inconsistent_state_is_refused_without_writing(redis):
    store = WindowStore(redis)
    store.apply("en", 2, "v1", 3, items([(0, 0), (1, 1)]))
    redis.hdel(store.keys("en")["counts"], "0")  # someone edited the state by hand
    with pytest.raises(WindowStateError, match="counts of bucket 0 disagree with the window list"):
        store.apply("en", 2, "v1", 3, items([(2, 2)]))
    assert window_list(redis, store, "en") == [0, 1]
    with pytest.raises(WindowStateError, match="lineage v1 has n_buckets 3 in the window but 4 was given"):
        store.apply("en", 2, "v1", 4, [])


def test_languages_and_reset(redis):
    store = WindowStore(redis)
    other = WindowStore(redis, prefix="other")
    for lang in ("sw", "en", "yo"):
        store.apply(lang, 5, "v1", 2, items([(0, 0)]))
    other.apply("fr", 5, "v1", 2, items([(0, 0)]))
    assert store.languages() == ["en", "sw", "yo"]
    store.reset("sw")
    assert store.languages() == ["en", "yo"]
    snap = store.snapshot("sw")
    assert (snap.size, snap.codebook_version, snap.offsets, snap.counts.shape) == (0, None, {}, (0,))
    store.reset()
    assert store.languages() == []
    assert other.languages() == ["fr"]
    # after a reset the offsets are gone: a rebuild counts the topic again
    assert store.apply("en", 5, "v1", 2, items([(0, 0)])).applied == 1


def test_state_survives_a_redis_restart_with_aof(services):
    from infra.clients import redis_client

    if services.stack is None:
        pytest.skip("Redis comes from the environment; this test restarts only the session's own stack")
    client = redis_client(services.config.redis)
    try:
        client.flushdb()
        store = WindowStore(client)
        store.apply_batch({"en": (4, items([(0, 0), (1, 1), (2, 2), (1, 3), (1, 4)])), "sw": (9, items([(2, 5)]))},
                          "v1", 3)
        before = {lang: store.snapshot(lang) for lang in ("en", "sw")}
        recent = store.recent("en")
    finally:
        client.close()
    services.stack.down(only="redis")
    services.stack.up(only="redis")
    client = redis_client(services.config.redis)
    try:
        store = WindowStore(client)  # the script cache is empty after a restart: redis-py reloads on NOSCRIPT
        for lang, snap in before.items():
            after = store.snapshot(lang)
            np.testing.assert_array_equal(after.counts, snap.counts)
            assert (after.size, after.codebook_version, after.offsets) == (snap.size, "v1", snap.offsets)
        assert store.recent("en") == recent
        assert store.apply("en", 4, "v1", 3, items([(0, 4), (0, 5)])) == ApplyResult(1, 1, 1)
        assert store.snapshot("en").counts.tolist() == [1, 2, 1]
        client.flushdb()
    finally:
        client.close()


def test_quality_scores_are_pushed_once_in_order(redis, monkeypatch):
    store = WindowStore(redis)
    key = store.keys("en")["quality"]
    assert key == "compass:{en}:quality"  # where the daemon's quality signal pops them (daemon/scheduler/quality.py)
    batch = [Assignment("q0", 0, TOPIC, 0, 0, quality=0.5), Assignment("q1", 1, TOPIC, 0, 1),
             Assignment("q2", 1, TOPIC, 0, 2, quality=-3), Assignment("q3", 2, TOPIC, 0, 3, quality=1e-20)]
    store.apply("en", 10, "v1", 4, batch)
    assert redis.lrange(key, 0, -1) == [b"0.5", b"-3.0", b"1e-20"]  # items without a score push nothing
    r = store.apply("en", 10, "v1", 4, batch[2:] + [Assignment("q4", 0, TOPIC, 0, 4, quality=2.25)])
    assert r == ApplyResult(applied=1, duplicates=2, evicted=0)
    assert redis.lrange(key, 0, -1) == [b"0.5", b"-3.0", b"1e-20", b"2.25"]  # a re-delivery adds no score
    monkeypatch.setattr("infra.window.store.QUALITY_MAX", 3)  # unread scores are capped, the oldest dropped
    store.apply("en", 10, "v1", 4, [Assignment("q5", 0, TOPIC, 0, 5, quality=7.0)])
    assert redis.lrange(key, 0, -1) == [b"1e-20", b"2.25", b"7.0"]
    for bad in (float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(WindowInputError, match="quality must be a finite number or None"):
            Assignment("q", 0, TOPIC, 0, 1, quality=bad)  # type: ignore[arg-type]


def test_seen_counts_every_applied_item_and_the_tail_follows_a_cursor(redis):
    store = WindowStore(redis)
    store.apply("en", 4, "v1", 4, items([(0, 0), (1, 1), (2, 2)]))  # window [0, 1, 2]
    first = store.snapshot("en", since=0)  # a first read: the whole window is new
    assert (first.seen, first.tail.tolist(), first.size) == (3, [0, 1, 2], 3)
    plain = store.snapshot("en")  # without a cursor: no tail, the rest as before
    assert (plain.seen, plain.tail.tolist(), plain.counts.tolist()) == (3, [], [1, 1, 1, 0])

    # a duplicate is not seen; two new items evict the oldest: window [1, 2, 3, 3] after [0, 1, 2] + [3, 3]
    r = store.apply("en", 4, "v1", 4, items([(2, 2), (3, 3), (3, 4)]))
    assert r == ApplyResult(applied=2, duplicates=1, evicted=1)
    snap = store.snapshot("en", since=first.seen)
    assert (snap.seen, snap.tail.tolist(), snap.counts.tolist()) == (5, [3, 3], [0, 1, 1, 2])
    assert store.snapshot("en", since=snap.seen).tail.tolist() == []  # nothing new
    assert redis.hget(store.keys("en")["meta"], "seen") == b"5"

    # more new items than the window holds: the tail is what the window still has, oldest first
    store.apply("en", 4, "v1", 4, items([(0, 5), (1, 6), (2, 7), (0, 8), (1, 9), (2, 10)]))  # window [2, 0, 1, 2]
    snap2 = store.snapshot("en", since=snap.seen)
    assert (snap2.seen, snap2.tail.tolist()) == (11, [2, 0, 1, 2])
    # a newer lineage resets the window, never `seen`
    store.apply("en", 4, "v2", 4, items([(1, 11)]))
    snap3 = store.snapshot("en", since=snap2.seen)
    assert (snap3.seen, snap3.tail.tolist(), snap3.size) == (12, [1], 1)


def test_tail_after_a_reset_and_of_a_window_without_seen(redis):
    store = WindowStore(redis)
    store.apply("en", 5, "v1", 3, items([(0, 0), (1, 1)]))
    store.reset("en")  # `seen` goes with the meta hash: a cursor past it gets the whole window
    store.apply("en", 5, "v1", 3, items([(2, 0)]))
    assert (store.snapshot("en", since=2).seen, store.snapshot("en", since=2).tail.tolist()) == (1, [2])
    # a window written by code before `seen` existed: its items count as seen, then new ones add to them
    redis.hdel(store.keys("en")["meta"], "seen")
    assert store.snapshot("en", since=0).seen == 1
    store.apply("en", 5, "v1", 3, items([(1, 1), (0, 2)]))
    snap = store.snapshot("en", since=1)
    assert (snap.seen, snap.tail.tolist()) == (3, [1, 0])
    with pytest.raises(WindowInputError, match="since must be an integer >= 0"):
        store.snapshot("en", since=-1)
