"""compass/drift/timing.py: kept samples and wall seconds of a sampled language (issue 20), by hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest

from compass.drift.scoring import make_row
from compass.drift.timing import (
    Clock,
    Sampling,
    kept_per_second,
    offered_seconds,
    spacing,
    stream_ids,
    timed,
)
from compass.sampling import unit


@pytest.mark.parametrize("arrivals, rate, cap, kept", [
    (100, 0.25, None, 25.0),  # Q * r
    (10, 0.1, None, 1.0),
    (10, 1.0, None, 10.0),  # unsampled
    (100, 1.0, 50, 50.0),  # a cap below the traffic: N
    (100, 1.0, 200, 100.0),  # a cap above it: every query, Q
])
def test_kept_per_second_is_q_times_r_or_min_q_n(arrivals, rate, cap, kept):
    assert kept_per_second(arrivals, rate, cap) == kept
    assert Sampling(arrivals, rate, cap).kept_per_s == kept


@pytest.mark.parametrize("arrivals, rate, cap, samples, seconds", [
    (10, 1.0, None, 300, 30.0),  # 300 samples at 10/s
    (10, 0.1, None, 300, 300.0),  # the same samples at rate 0.1: 10x the time
    (100, 0.25, None, 300, 12.0),  # 300 / 25
    (100, 1.0, 50, 300, 6.0),  # 300 / min(100, 50)
    (100, 1.0, 400, 300, 3.0),  # 300 / min(100, 400)
])
def test_seconds_of_kept_samples(arrivals, rate, cap, samples, seconds):
    assert Sampling(arrivals, rate, cap).seconds(samples) == pytest.approx(seconds)


@pytest.mark.parametrize("offered, arrivals, seconds", [(0, 10, 0.0), (1, 10, 0.1), (250, 100, 2.5), (7, 2, 3.5)])
def test_offered_queries_take_one_over_q_each(offered, arrivals, seconds):
    assert offered_seconds(offered, arrivals) == pytest.approx(seconds)


@pytest.mark.parametrize("length, events, out", [(10_000, 4, 2500.0), (1000.0, 3, 1000 / 3), (500, 0, None)])
def test_spacing(length, events, out):
    assert spacing(length, events) == (None if out is None else pytest.approx(out))


def test_a_caps_rate_per_bucket_comes_from_the_previous_buckets_count():
    # Q = 4/s, 1 s buckets: offered 0-3 in bucket 0, 4-7 in 1, 8-9 in 2 (counts 4, 4, 2). Bucket 0 has no previous
    # count: rate 1. Buckets 1 and 2: min(1, 2 * 1 / 4) = 0.5
    assert Sampling(4, max_per_second=2, bucket_s=1).rates(10).tolist() == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    # 2 s buckets: 8 per bucket; bucket 1 (offered 8, 9): min(1, 2 * 2 / 8) = 0.5
    assert Sampling(4, max_per_second=2, bucket_s=2).rates(10).tolist() == [1] * 8 + [0.5, 0.5]
    assert Sampling(4, max_per_second=10, bucket_s=1).rates(10).tolist() == [1.0] * 10  # the cap above the traffic
    assert Sampling(4, rate=0.3).rates(3).tolist() == [0.3] * 3


def test_kept_applies_keep_to_each_id_at_its_rate():
    ids = stream_ids("sw", 400)
    assert ids[:2] == ["sim:sw:0", "sim:sw:1"]
    want = [i for i, e in enumerate(ids) if unit(e) < 0.25]  # the consumers' rule, by hand
    assert Sampling(10, 0.25).kept(ids).tolist() == want
    assert 60 < len(want) < 140  # about a quarter of 400 (a fixed hash: the same every run)
    assert Sampling(10).kept(ids).tolist() == list(range(400))
    capped = [i for i, e in enumerate(ids) if i < 100 or unit(e) < 0.25]  # bucket 0 all, then 25 / 100 = 0.25
    assert Sampling(100, max_per_second=25, bucket_s=1).kept(ids).tolist() == capped
    # the default bucket is consumer.sampling_bucket_s's, 1 s, with a 10 s look-back: 40 queries at 4/s, bucket 0
    # (ids 0-3) kept whole, then 1 * span / (4 * span) = 0.25 whatever the span
    assert Sampling(4, max_per_second=1).kept(ids[:40]).tolist() == [i for i in range(40)
                                                                      if i < 4 or unit(ids[i]) < 0.25]


def test_clock_counts_offered_queries_from_the_change_through_the_detecting_one():
    # offered 0..9 at 2/s, change at 5; kept offered [0, 2, 3, 7, 8, 9]: offered 5 and 6 were dropped, so the new
    # period's first kept query is kept index 3 (offered 7), and a detection 2 kept queries later (after kept 4 =
    # offered 8) has seen offered 5..8: 4 queries, 2.0 s; 2 kept samples
    clock = Clock(np.array([0, 2, 3, 7, 8, 9]), (5,), 2.0, 10)
    assert clock.change_of(3) == 5
    assert (clock.delay_offered(3, 2), clock.delay_s(3, 2)) == (4, 2.0)
    assert (clock.delay_offered(3, 0), clock.delay_s(3, 0)) == (0, 0.0)  # the oracle updates at the change
    assert [clock.at(t) for t in (0, 1, 2, 6)] == [0.0, 0.5, 1.5, 5.0]  # (offered[t - 1] + 1) / Q
    assert (clock.n_kept, clock.duration_s) == (6, 5.0)
    # a period that lost every query: changes at 2 and 4, kept offered [0, 1, 5]; the kept transition (kept 2)
    # belongs to the change at 4, the latest one at or before offered 5
    assert Clock(np.array([0, 1, 5]), (2, 4), 1.0, 6).change_of(2) == 4


def test_unsampled_seconds_are_samples_over_q():
    clock = Clock.unsampled(1000, (600,), 10.0)
    assert [clock.delay_s(600, d) for d in (0, 100, 200)] == [0.0, 10.0, 20.0]
    assert clock.at(700) == 70.0


def test_timed_adds_every_time_in_seconds_to_a_row():
    # 1000 offered at 10/s (100 s), change at 600; updates at 700 (detects, 100 samples = 10 s) and 900 (a second
    # update in the same period: a false positive); a false alarm every 1000 samples = 100 s
    clock = Clock.unsampled(1000, (600,), 10.0)
    row = timed(make_row("js", 0.1, [700, 900], [600], 1000), clock, [600])
    x = row.to_dict()
    assert (x["delays"], x["delays_offered"], x["delays_s"], x["avg_delay_s"]) == ([100], [100], [10.0], 10.0)
    assert x["fired_at_s"] == [70.0, 90.0]
    assert (x["false_positives"], x["false_alarm_spacing"], x["false_alarm_spacing_s"]) == (1, 1000.0, 100.0)
    missed = timed(make_row("never", None, [], [600], 1000), clock, [600]).to_dict()
    assert (missed["delays_s"], missed["avg_delay_s"], missed["false_alarm_spacing_s"]) == ([None], None, None)


@pytest.mark.parametrize("kw, match", [
    ({"arrival_rate": 0}, "arrival_rate: got 0; give the language's offered queries a second"),
    ({"rate": 1.5}, r"rate: got 1.5; give the share of queries kept, in \(0, 1\]"),
    ({"rate": 0.0}, "rate: got 0.0"),
    ({"max_per_second": -3}, "max_per_second: got -3; give the cap"),
    ({"rate": 0.5, "max_per_second": 20}, "max_per_second: got 20 with rate 0.5; give one"),
    ({"bucket_s": 0}, "bucket_s: got 0"),
])
def test_bad_sampling_names_the_field_value_and_fix(kw, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kw)
