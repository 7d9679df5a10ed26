"""Sample counts and wall seconds of a sampled language (issue 20): what the drift replay and calibration report.

The drift statistic counts *kept* queries: P_mon is the last ``window_size`` kept queries (eq. 4), a check runs
every ``increment`` kept queries, a detection delay is the kept queries of the new period seen before the update.
Sampling changes none of that (``compass/drift/calibrate.py`` says why the null is the one at rate 1), but it
changes how long those queries take to arrive. A language offered ``Q`` queries a second and sampled keeps

    rate r (``sampling.rate``):                   Q * r queries a second;
    cap N (``sampling.max_per_second``):          min(Q, N) a second once the cap is in force (each bucket's rate
                                                  from the traffic of the buckets just before, ``capped_rate``),

so ``n`` kept queries take ``n / kept_per_s`` seconds (``compass.sampling.seconds_for``): a delay of 300 samples is
30 s at 10 queries/s unsampled and 300 s at rate 0.1.

``Sampling`` is those settings with the arrival rate; ``Sampling.kept`` applies them to the ids of an offered
stream, query by query, the way the consumers do (``compass.sampling.keep`` on the event id, with a cap's rate
per time bucket). ``Clock`` maps the replay of the kept stream back onto the offered one: the offered stream
advances 1/Q s per query (offered query i arrives in [i/Q, (i+1)/Q)), so a delay in seconds is the offered queries
from the change through the detecting kept one, divided by Q: exact, not the steady-state ``n / kept_per_s``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compass.sampling import bucket_rates, keep, seconds_for

DEFAULT_ARRIVAL_RATE = 10.0  # queries a second offered when no rate is given: a modest language
DEFAULT_BUCKET_S = 1.0  # seconds per bucket of a cap's rate: consumer.sampling_bucket_s's default
DEFAULT_LOOKBACK_S = 10.0  # seconds of traffic a cap's rate is measured over: consumer.sampling_lookback_s's


def kept_per_second(arrival_rate: float, rate: float = 1.0, max_per_second: float | None = None) -> float:
    """Kept queries a second: ``arrival_rate * rate``, or ``min(arrival_rate, max_per_second)`` under a cap."""
    if max_per_second is not None:
        return min(arrival_rate, max_per_second)
    return arrival_rate * rate


def offered_seconds(offered: int, arrival_rate: float) -> float:
    """Seconds that ``offered`` queries take to arrive at ``arrival_rate`` a second (each takes 1 / Q)."""
    return offered / arrival_rate


def spacing(length: float, events: int) -> float | None:
    """Mean spacing of ``events`` over ``length`` (samples or seconds); None without an event."""
    return length / events if events > 0 else None


def _positive(name: str, value: float, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: got {value!r}; {fix}")


@dataclass(frozen=True)
class Sampling:
    """A language's sampling (a fixed ``rate``, or a cap ``max_per_second``) at ``arrival_rate`` queries a second.

    Errors name the field; the CLIs name their flag (--arrival-rate, --sampling-rate, --max-per-second)."""

    arrival_rate: float = DEFAULT_ARRIVAL_RATE
    rate: float = 1.0
    max_per_second: float | None = None
    bucket_s: float = DEFAULT_BUCKET_S
    lookback_s: float = DEFAULT_LOOKBACK_S

    def __post_init__(self) -> None:
        _positive("arrival_rate", self.arrival_rate, "give the language's offered queries a second, > 0, e.g. 10")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 < self.rate <= 1.0:
            raise ValueError(f"rate: got {self.rate!r}; give the share of queries kept, in (0, 1] (1 keeps all)")
        if self.max_per_second is not None:
            _positive("max_per_second", self.max_per_second, "give the cap on kept queries a second, > 0, or none")
            if self.rate < 1.0:
                raise ValueError(f"max_per_second: got {self.max_per_second!r} with rate {self.rate}; give one, a "
                                 "fixed share (rate) or a cap (max_per_second), as languages.yaml's sampling does")
        _positive("bucket_s", self.bucket_s, "give the seconds per bucket of the cap's rate, > 0, e.g. 1")
        _positive("lookback_s", self.lookback_s, "give the seconds of traffic a cap's rate is measured over, > 0")

    @property
    def sampled(self) -> bool:
        """Whether any query may be dropped (a rate < 1 or a cap)."""
        return self.rate < 1.0 or self.max_per_second is not None

    @property
    def kept_per_s(self) -> float:
        """Kept queries a second in steady state (``kept_per_second``)."""
        return kept_per_second(self.arrival_rate, self.rate, self.max_per_second)

    @property
    def share(self) -> float:
        """The share of the offered queries kept in steady state: r, or min(1, N / Q) under a cap."""
        return self.kept_per_s / self.arrival_rate

    def seconds(self, samples: float) -> float:
        """Steady-state seconds for ``samples`` kept queries (``compass.sampling.seconds_for``)."""
        return seconds_for(samples, self.arrival_rate, self.share)

    def rates(self, n: int) -> np.ndarray:
        """The rate each of ``n`` offered queries is sampled at. A cap's rate is per bucket of ``bucket_s``
        seconds (offered query i falls in bucket floor(i / (Q * bucket_s))), from the counts of the ``lookback_s``
        before it (``compass.sampling.bucket_rates``); the first bucket has nothing before it and keeps
        everything, as the consumers do."""
        if self.max_per_second is None:
            return np.full(n, float(self.rate))
        bucket = np.floor(np.arange(n) / (self.arrival_rate * self.bucket_s)).astype(np.int64)
        counts = np.bincount(bucket) if n else np.zeros(0, dtype=np.int64)
        lookback = max(1, int(round(self.lookback_s / self.bucket_s)))
        per_bucket = bucket_rates([int(c) for c in counts], self.max_per_second, self.bucket_s, lookback)
        return np.asarray(per_bucket, dtype=np.float64)[bucket]

    def kept(self, ids: Sequence[str]) -> np.ndarray:
        """Offered indices of the kept queries, in order: ``keep(id, rate)`` per query, as the consumers decide."""
        rates = self.rates(len(ids))
        return np.asarray([i for i, (e, r) in enumerate(zip(ids, rates, strict=True)) if keep(e, float(r))],
                          dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"arrival_rate": self.arrival_rate, "rate": self.rate, "max_per_second": self.max_per_second,
                "bucket_s": self.bucket_s, "lookback_s": self.lookback_s, "kept_per_s": self.kept_per_s}


def stream_ids(lang: str, n: int) -> list[str]:
    """Stable event ids of a simulated stream's queries: ``sim:{lang}:{i}`` (the same keep decision every run)."""
    return [f"sim:{lang}:{i}" for i in range(n)]


@dataclass(frozen=True)
class Clock:
    """Where the kept queries of a replay sit in the offered stream, and so in seconds (module docstring).

    ``offered[k]`` is the offered index of kept query k; ``changes`` the offered stream's transitions."""

    offered: np.ndarray
    changes: tuple[int, ...]
    arrival_rate: float
    n_offered: int

    @classmethod
    def unsampled(cls, n: int, changes: Sequence[int], arrival_rate: float = DEFAULT_ARRIVAL_RATE) -> Clock:
        """Every offered query kept: kept index == offered index."""
        return cls(np.arange(n, dtype=np.int64), tuple(changes), float(arrival_rate), n)

    @property
    def n_kept(self) -> int:
        return len(self.offered)

    @property
    def duration_s(self) -> float:
        return offered_seconds(self.n_offered, self.arrival_rate)

    def at(self, t: int) -> float:
        """Seconds at which the check after ``t`` kept queries runs: when the t-th kept query has arrived."""
        return 0.0 if t <= 0 else offered_seconds(int(self.offered[t - 1]) + 1, self.arrival_rate)

    def change_of(self, kept_change: int) -> int:
        """The offered transition a kept transition belongs to: the latest offered change at or before its first
        kept query (a period that lost every query to sampling has no kept transition of its own)."""
        o = int(self.offered[kept_change])
        return max((c for c in self.changes if c <= o), default=0)

    def delay_offered(self, kept_change: int, delay: int) -> int:
        """Offered queries from the change through the detecting kept query (``delay`` kept queries after
        ``kept_change``); 0 for a delay of 0 (an update at the change itself: the oracle)."""
        if delay <= 0:
            return 0
        return int(self.offered[kept_change + delay - 1]) + 1 - self.change_of(kept_change)

    def delay_s(self, kept_change: int, delay: int) -> float:
        return offered_seconds(self.delay_offered(kept_change, delay), self.arrival_rate)


def timed(row: Any, clock: Clock, kept_changes: Sequence[int]) -> Any:
    """``row`` (a ``SweepRow``) with its delays, updates and false-alarm spacing also in seconds (its ``extra``):
    ``delays_offered`` (offered queries from each change through its detection), ``delays_s``, ``avg_delay_s``,
    ``fired_at_s``, ``false_alarm_spacing`` (kept samples per false alarm) and ``false_alarm_spacing_s``."""
    from dataclasses import replace

    offered = [None if d is None else clock.delay_offered(s, d) for s, d in zip(kept_changes, row.delays, strict=True)]
    delays_s = [None if o is None else offered_seconds(o, clock.arrival_rate) for o in offered]
    hit = [d for d in delays_s if d is not None]
    extra = {"delays_offered": offered, "delays_s": delays_s,
             "avg_delay_s": float(np.mean(hit)) if hit else None,
             "fired_at_s": [clock.at(t) for t in row.fired_at],
             "false_alarm_spacing": spacing(row.n_samples, row.false_positives),
             "false_alarm_spacing_s": spacing(clock.duration_s, row.false_positives)}
    return replace(row, extra={**row.extra, **extra})


__all__ = ["DEFAULT_ARRIVAL_RATE", "DEFAULT_BUCKET_S", "DEFAULT_LOOKBACK_S", "Clock", "Sampling", "kept_per_second",
           "offered_seconds", "spacing", "stream_ids", "timed"]
