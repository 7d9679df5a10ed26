"""infra/sampling.py and consumers/sampler.py on a real Redis: the shared, frozen rates of capped sampling."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from compass.languages import LanguagesConfig
from compass.sampling import capped_rate, keep
from consumers.events import QueryEvent
from consumers.query import Query
from consumers.sampler import Sampler, batch_rates
from infra.sampling import SamplingRates
from infra.unserved import Traffic

BUCKET_S = 10


def rates_store(redis, lookback_s: int = BUCKET_S) -> SamplingRates:
    return SamplingRates(redis, "t", bucket_s=BUCKET_S, lookback_s=lookback_s, ttl_s=3600)


@pytest.mark.parametrize("cap,before", [(10.0, []), (10.0, [99]), (10.0, [100]), (10.0, [400]), (3.0, [7]),
                                        (0.7, [123456]), (10.0, [30, 0, 50]), (10.0, [0, 0, 40, 0, 0]),
                                        (1.5, [1, 2, 3, 4, 5]), (10.0, [0, 0, 0, 0, 0])])
def test_the_frozen_rate_is_the_pure_rule_in_the_same_doubles(redis, cap, before):
    # the epoch boundary (600 buckets) falls inside the look-back: b = 1201 looks back to 1196
    store, b = rates_store(redis, lookback_s=5 * BUCKET_S), 1201
    for i, n in enumerate(before, 1):
        if n:
            store.rates({"en": Counter({b - i: n})}, {"en": cap})
    got = store.rates({"en": Counter({b: 1})}, {"en": cap})
    assert got == {("en", b): capped_rate(cap, before[:5], BUCKET_S)}


def test_a_rate_once_frozen_never_changes_and_counts_add_up(redis):
    store = rates_store(redis)
    store.rates({"en": Counter({0: 400})}, {"en": 10.0})
    assert store.rates({"en": Counter({1: 3})}, {"en": 10.0}) == {("en", 1): 0.25}
    store.rates({"en": Counter({0: 400})}, {"en": 10.0})  # b-1 counts more later (a lagging worker, a re-delivery)
    assert store.rates({"en": Counter({1: 2})}, {"en": 10.0}) == {("en", 1): 0.25}  # frozen at the first decision
    assert (store.traffic("en", 0), store.traffic("en", 1)) == (800, 5)
    assert all(0 < redis.ttl(k) <= 3600 for k in redis.scan_iter(match="t:{en}:sampling:*"))


def test_a_batch_counts_its_older_bucket_before_deciding_the_newer(redis):
    store = rates_store(redis)
    # one batch: 200 queries of bucket 7 and 1 of bucket 8 -> bucket 8's rate comes from those 200 (5 a second)
    got = store.rates({"sw": Counter({8: 1, 7: 200}), "en": Counter({8: 1})}, {"sw": 5.0, "en": 5.0})
    assert got == {("sw", 7): 1.0, ("sw", 8): 0.25, ("en", 8): 1.0}


def test_a_bad_language_is_refused_before_anything_is_written(redis):
    from infra.window import WindowInputError

    with pytest.raises(WindowInputError, match="lang must be"):
        rates_store(redis).rates({"EN!": Counter({1: 1})}, {"EN!": 1.0})
    assert redis.dbsize() == 0
    with pytest.raises(WindowInputError, match="bucket_s must be an integer >= 1"):
        SamplingRates(redis, "t", bucket_s=0)
    with pytest.raises(WindowInputError, match=r"lookback_s must be in \[bucket_s, 600 \* bucket_s\]"):
        SamplingRates(redis, "t", bucket_s=2, lookback_s=1)


def queries(n: int, lang: str, bucket: int, start: int = 0) -> list[Query]:
    out = []
    for i in range(start, start + n):
        at_ms = bucket * BUCKET_S * 1000 + i % 1000
        qid = f"{lang}-{bucket}-{i}"
        out.append(Query(SimpleNamespace(topic="q", partition=0, offset=i), QueryEvent(id=qid, text="x", lang=lang),
                         lang=lang, served=True, traffic=Traffic(qid, lang, True, "q", 0, i, at_ms)))
    return out


def test_two_workers_and_a_redelivery_agree_on_every_rate_and_so_on_every_id(redis):
    """Two workers each see half of the traffic, interleaved in batches: each (language, bucket) has one rate
    whoever decides, the kept ids are exactly those ``keep`` says at that rate, and a later re-delivery of the whole
    stream (a third worker, the counts now doubled) keeps the very same ids."""
    languages = LanguagesConfig.model_validate({"languages": {"en": {"sampling": {"max_per_second": 4}},
                                                              "fr": {"sampling": {"rate": 0.5}}, "sw": {}}})
    stream = (queries(200, "en", 0) + queries(120, "en", 1) + queries(90, "en", 2) + queries(40, "fr", 1)
              + queries(30, "sw", 1))
    a, b, again = (Sampler(languages, rates_store(redis)) for _ in range(3))
    marked = []
    for start in range(0, len(stream), 50):
        batch = stream[start:start + 50]
        marked += a.mark(batch[0::2]) + b.mark(batch[1::2])
    rates: dict[tuple[str, int], set[float]] = {}
    for q in marked:
        rates.setdefault((q.lang, q.traffic.at_ms // (BUCKET_S * 1000)), set()).add(q.rate)
    assert all(len(r) == 1 for r in rates.values())
    # bucket 0: nothing counted before it, all kept; bucket 1: 4/s * 10 s over the 200 of bucket 0; bucket 2 was
    # decided on the part of bucket 1 counted when its first query came (a worker's half at least)
    assert rates[("en", 0)] == {1.0} and rates[("en", 1)] == {0.2} and rates[("fr", 1)] == {0.5}
    (r2,) = rates[("en", 2)]
    assert 40 / 120 <= r2 <= 40 / 60
    assert rates[("sw", 1)] == {1.0}
    assert all(q.sampled_out == (not keep(q.id, q.rate)) for q in marked)
    kept = sorted(q.id for q in marked if not q.sampled_out)
    assert 0 < sum(q.sampled_out for q in marked) < len(marked) - 230  # both outcomes in the capped language
    redelivered = [q for start in range(0, len(stream), 64) for q in again.mark(stream[start:start + 64])]
    assert sorted(q.id for q in redelivered if not q.sampled_out) == kept
    assert rates_store(redis).traffic("en", 1) == 240  # counted twice: the count is not exactly-once, the rate is


def test_only_served_queries_are_sampled_and_the_window_records_the_newest_rate(redis):
    languages = LanguagesConfig.model_validate({"languages": {"en": {"sampling": {"rate": 0.5}}}})
    sampler = Sampler(languages, None)
    unserved = [Query(SimpleNamespace(topic="q", partition=0, offset=9), QueryEvent(id="q1", text="x"), lang="en",
                      served=False)]
    assert [q.sampled_out for q in sampler.mark(unserved)] == [False]  # "q1" is out of a 0.5 sample if served
    marked = sampler.mark(queries(10, "en", 0))
    assert batch_rates([q for q in marked if not q.sampled_out]) == {"en": 0.5}
    with pytest.raises(ValueError, match="max_per_second"):
        Sampler(LanguagesConfig.model_validate({"languages": {"en": {"sampling": {"max_per_second": 1}}}}), None)


def test_a_language_under_its_cap_keeps_every_query(redis):
    """fr capped at 5 queries/s sends 4 a second (40 per 10 s bucket) for a minute: every bucket's rate is 1."""
    languages = LanguagesConfig.model_validate({"languages": {"fr": {"sampling": {"max_per_second": 5}}}})
    sampler = Sampler(languages, rates_store(redis, lookback_s=3 * BUCKET_S))
    stream = [q for b in range(6) for q in queries(40, "fr", b, start=100 * b)]
    marked = [q for i in range(0, len(stream), 32) for q in sampler.mark(stream[i:i + 32])]
    assert not any(q.sampled_out for q in marked) and {q.rate for q in marked} == {1.0}
