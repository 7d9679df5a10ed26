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
"""

from __future__ import annotations

import hashlib

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


__all__ = ["keep", "unit"]
