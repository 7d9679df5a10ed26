"""compass/sampling.py: the keep/drop decision by event id (issue 20). The pinned values were computed once
from BLAKE2b-64 and must never change: a change would move queries in or out of live windows on re-delivery."""

from __future__ import annotations

import json
import os

import pytest

from compass.sampling import keep, unit

# unit(id) rounded to 6 places, and the ids kept at rates 0.1, 0.5 and 0.9 (all the others are dropped)
UNITS = {"q0": 0.119006, "q1": 0.90435, "q2": 0.414514, "q3": 0.288129, "q4": 0.104762, "q5": 0.473647,
         "q6": 0.062107, "q7": 0.884371, "q-123": 0.025238, "abc": 0.846605, "é": 0.793377, "": 0.893168}
KEPT = {0.1: {"q6", "q-123"},
        0.5: {"q0", "q2", "q3", "q4", "q5", "q6", "q-123"},
        0.9: set(UNITS) - {"q1"}}


@pytest.mark.parametrize("event_id", sorted(UNITS))
def test_pinned_units(event_id):
    assert round(unit(event_id), 6) == UNITS[event_id]


@pytest.mark.parametrize("rate", sorted(KEPT))
def test_pinned_decisions(rate):
    assert {i for i in UNITS if keep(i, rate)} == KEPT[rate]


def test_rate_one_keeps_all_and_zero_none():
    ids = [f"id-{i}" for i in range(10_000)] + list(UNITS)
    assert all(keep(i, 1.0) for i in ids)
    assert not any(keep(i, 0.0) for i in ids)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_kept_share_is_the_rate(rate):
    n = 100_000
    kept = sum(keep(f"evt-{i}", rate) for i in range(n))
    assert abs(kept / n - rate) < 0.01


def test_deterministic_and_nested():
    # the same id, the same answer (another consumer, a re-delivery); a query kept at a rate is kept at any higher one
    for i in range(2000):
        qid = f"r{i}"
        assert keep(qid, 0.3) == keep(qid, 0.3)
        assert not keep(qid, 0.3) or keep(qid, 0.6)
        assert 0.0 <= unit(qid) < 1.0


def test_the_consumer_stage_marks_only_the_ids_out_of_their_rate():
    from types import SimpleNamespace

    from consumers.events import QueryEvent
    from consumers.query import Query
    from consumers.stages import sample

    def q(qid: str, lang: str | None, rate: float) -> Query:
        return Query(SimpleNamespace(topic="t", partition=0, offset=0), QueryEvent(id=qid, text="x", lang=lang),
                     lang=lang, rate=rate)

    # q1 is out of the 0.5 sample (see KEPT), q0 in it; a query at rate 1.0 is never sampled out
    queries = [q("q1", "fr", 0.5), q("q0", "fr", 0.5), q("q1", "en", 1.0), q("q1", None, 1.0)]
    marked = sample(queries)
    assert [m.sampled_out for m in marked] == [True, False, False, False]
    assert [m.sampled_out for m in sample(marked)] == [True, False, False, False]  # idempotent


@pytest.mark.parametrize("cap,before,bucket_s,rate", [
    (10.0, [], 1, 1.0),  # nothing before: keep all
    (10.0, [0, 0, 0], 1, 1.0),  # a quiet look-back: no evidence of load
    (10.0, [50], 10, 1.0),  # 5/s under a cap of 10/s
    (10.0, [100], 10, 1.0),  # exactly at the cap
    (10.0, [400], 10, 0.25),  # 40/s, cap 10/s
    (2.0, [1000], 10, 0.02),
    (10.0, [30, 50, 20], 1, 10 * 3 / 100),  # 100 queries in 3 s
    (10.0, [90, 0, 0, 0], 1, 10 / 90),  # it started sending 1 s ago: measured over 1 s, not 4
    (10.0, [0, 0, 40, 0], 1, 10 * 3 / 40),  # span to the oldest nonzero: 3 s (b-3 .. b-1)
    (0.5, [3], 1, 0.5 / 3),
])
def test_capped_rate(cap, before, bucket_s, rate):
    from compass.sampling import capped_rate

    assert capped_rate(cap, before, bucket_s) == rate


def test_bucket_rates_of_a_stream():
    from compass.sampling import bucket_rates

    # 1 s buckets, cap 5/s, a look-back of 2 buckets (the span starts at the oldest that counted anything)
    counts = [2, 20, 20, 20, 0, 0, 0, 20]
    assert bucket_rates(counts, 5.0, 1, 2) == [1.0, 1.0, 10 / 22, 10 / 40, 10 / 40, 10 / 20, 1.0, 1.0]


@pytest.mark.parametrize("samples,arrivals,rate,seconds", [
    (100, 10.0, 1.0, 10.0),
    (100, 10.0, 0.5, 20.0),  # the same 100 kept queries take twice as long at half the rate
    (50, 200.0, 0.25, 1.0),
    (1, 0.0, 1.0, float("inf")),
])
def test_seconds_for(samples, arrivals, rate, seconds):
    from compass.sampling import seconds_for

    assert seconds_for(samples, arrivals, rate) == seconds


def test_a_language_has_a_rate_or_a_cap_not_both():
    from pydantic import ValidationError

    from compass.languages import LanguagesConfig

    ok = LanguagesConfig.model_validate({"defaults": {"sampling": {"max_per_second": 50}}, "languages": {"en": {}}})
    assert ok.get("en").sampling.max_per_second == 50 and ok.get("en").sampling.sampled
    with pytest.raises(ValidationError, match=r"both rate \(0.5\) and max_per_second \(50.0\); give one"):
        LanguagesConfig.model_validate({"languages": {"en": {"sampling": {"rate": 0.5, "max_per_second": 50}}}})
    with pytest.raises(ValidationError, match="max_per_second"):
        LanguagesConfig.model_validate({"languages": {"en": {"sampling": {"max_per_second": 0}}}})


def test_the_hash_is_the_same_in_another_process():
    # Python's own hash() is salted per process; the sample must not be
    import subprocess
    import sys

    ids = sorted(UNITS) + [f"evt-{i}" for i in range(200)]
    code = ("import json,sys; from compass.sampling import keep; "
            "print(json.dumps([keep(i, 0.3) for i in json.load(sys.stdin)]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(out.stdout) == [keep(i, 0.3) for i in ids]
