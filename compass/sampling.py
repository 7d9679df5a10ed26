"""Per-language sampling of the monitored stream (issue 20): keep a query or not, decided by its event id.

A language with ten times the traffic does not need ten times the embeddings to estimate its cluster
distribution: a uniform sample of rate ``r`` estimates the same window. The decision is a pure function of the
event id, never of a random draw or of the consumer, because several parties must make the same choice:

- every consumer of the group (a partition moves to another worker on a rebalance);
- a Kafka re-delivery after a crash (the window's exactly-once bookkeeping assumes the re-delivered batch is the
  same batch: a random draw would apply a query the first delivery had skipped, or the other way round);
- a later replay or rebuild of the topic, and anyone checking the window against the topic.

``keep`` maps the id through a stable hash (BLAKE2b, 8 bytes; Python's ``hash`` is salted per process) to
``u`` uniform in [0, 1) and keeps the query iff ``u < rate``: rate 1.0 keeps every query, 0.0 none.

A cap (``sampling.max_per_second``) turns the fixed rate into one per time bucket of the events' own time:
``capped_rate`` of the language's queries counted in the buckets just before (a look-back of a few seconds) by all
consumers together. The rate of a
bucket is frozen where every consumer reads it (infra/sampling.py), so the decision stays a function of the id
and of a shared, immutable number. A language under its cap keeps rate 1 (every query); one over it keeps about
``max_per_second`` queries a second, uniformly, whatever its traffic.

What sampling changes for drift detection: a uniform sample of a stationary stream is the same stationary
stream, so the null distribution of the JS statistic (eq. 5-6) and of the sequential detector over ``n`` kept
queries is the one at rate 1; thresholds and false-alarm budgets (counted in queries kept) are unchanged. Time
is not: ``n`` kept queries take ``n / (rate * arrivals_per_s)`` seconds, so a delay measured in samples becomes
``seconds_for`` in wall time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = float(1 << 64)


def unit(event_id: str) -> float:
    """The id's stable position in [0, 1): the first 8 bytes of BLAKE2b(id, UTF-8), big-endian, / 2**64."""
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def keep(event_id: str, rate: float) -> bool:
    """Whether the query ``event_id`` is in the sample of ``rate`` (in [0, 1]); the same answer everywhere."""
    if rate >= 1.0:
        return True  # no hashing: a language that is not sampled costs nothing
    if rate <= 0.0:
        return False
    return unit(event_id) < rate


def capped_rate(max_per_second: float, before: Sequence[int], bucket_s: float) -> float:
    """The rate of a bucket under a cap, from the language's queries counted in the buckets before it, newest first
    (``before[0]`` is bucket b-1, ``before[i]`` bucket b-1-i; the look-back): the traffic is measured from the start
    of the oldest of them that counted any query up to bucket b, so a language that just started (or came back
    after a quiet spell) is measured over the time it has been sending, not over the whole look-back:

        rate = min(1, max_per_second * span * bucket_s / sum(before)),  span = 1 + index of the oldest nonzero

    1.0 when none counted anything (no evidence of load: keep everything rather than guess). infra/sampling.py
    computes the same in Lua, in the same order of operations; tests pin both."""
    total, span = 0, 0
    for i, n in enumerate(before, 1):
        if n > 0:
            total, span = total + int(n), i
    if total <= 0:
        return 1.0
    return min(1.0, max_per_second * span * bucket_s / total)


def bucket_rates(counts: Sequence[int], max_per_second: float, bucket_s: float, lookback: int) -> list[float]:
    """The rate of each of a stream's consecutive buckets ``0..len(counts)-1`` (``counts[b]``: its queries) under a
    cap with a look-back of ``lookback`` buckets, every earlier bucket counted in full (a consumer without lag)."""
    return [capped_rate(max_per_second, [counts[b - i] for i in range(1, min(lookback, b) + 1)], bucket_s)
            for b in range(len(counts))]


def seconds_for(samples: float, arrivals_per_s: float, rate: float = 1.0) -> float:
    """Wall seconds for ``samples`` kept queries of a language arriving at ``arrivals_per_s`` and kept at
    ``rate``: a detection delay in samples, in seconds. ``inf`` for a language with no traffic."""
    kept_per_s = arrivals_per_s * rate
    return float("inf") if kept_per_s <= 0 else samples / kept_per_s


__all__ = ["bucket_rates", "capped_rate", "keep", "seconds_for", "unit"]
