"""The quality signal as the daemon reads it: numbers producers RPUSH to ``{prefix}:{lang}:quality`` (e.g. the NLL
of sampled queries, a feedback score) fed to the language's river detector (compass/drift/quality.py).

One feed per language, built for its ``quality_signal`` (languages.yaml) and rebuilt when that changes. A language
without one gets ``NO_QUALITY``, the null feed: it reads nothing (the values stay in Redis) and says "no signal".
The detector lives in this process: a restart or another replica starts a fresh one.
"""

from __future__ import annotations

import math
from typing import Protocol

import redis

from compass.drift.quality import QualitySignal

MAX_VALUES = 10_000  # values popped per check


class QualityFeed(Protocol):
    kind: str  # the languages.yaml quality_signal it was built for

    def read(self, client: redis.Redis, key: str) -> tuple[bool | None, int]:
        """(a detection since the last read: True / False, or None without data; how many values were not numbers)."""
        ...


class NoQuality:
    """The feed of a language with ``quality_signal: none``: reads nothing."""

    kind = "none"

    def read(self, client: redis.Redis, key: str) -> tuple[bool | None, int]:
        return None, 0


NO_QUALITY = NoQuality()


class DetectorFeed:
    """Pops the values queued at ``key`` into a river detector (``QualitySignal``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.signal = QualitySignal(kind)

    def read(self, client: redis.Redis, key: str) -> tuple[bool | None, int]:
        values, bad = finite_values(client.lpop(key, MAX_VALUES) or [])
        if self.signal.feed(values):
            return True, bad
        return (False if self.signal.n_seen else None), bad


def quality_feed(kind: str) -> QualityFeed:
    """The feed for a languages.yaml ``quality_signal`` (``none``: the null feed)."""
    return NO_QUALITY if kind == "none" else DetectorFeed(kind)


def finite_values(items: list[bytes | str]) -> tuple[list[float], int]:
    """The finite numbers among ``items`` and how many items were not (unparsable, NaN, inf)."""
    values: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            values.append(value)
    return values, len(items) - len(values)
