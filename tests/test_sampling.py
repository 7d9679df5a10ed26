"""compass/sampling.py: the keep/drop decision by event id (issue 20). The pinned values were computed once
from BLAKE2b-64 and must never change: a change would move queries in or out of live windows on re-delivery."""

from __future__ import annotations

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


def test_the_consumer_stage_marks_only_sampled_languages():
    from types import SimpleNamespace

    from consumers.events import QueryEvent
    from consumers.query import Query
    from consumers.stages import sample

    def q(qid: str, lang: str | None) -> Query:
        return Query(SimpleNamespace(topic="t", partition=0, offset=0), QueryEvent(id=qid, text="x", lang=lang),
                     lang=lang)

    # q1 is out of the 0.5 sample (see KEPT), q0 in it; en is not sampled; a query without a language yet waits
    queries = [q("q1", "fr"), q("q0", "fr"), q("q1", "en"), q("q1", None)]
    marked = sample(queries, {"fr": 0.5})
    assert [m.sampled_out for m in marked] == [True, False, False, False]
    assert [m.sampled_out for m in sample(marked, {"fr": 0.5})] == [True, False, False, False]  # idempotent
