"""A window's inflow (queries/s) from the growth of its monotone ``seen`` counter between checks, and the time
the window spans: what the status page shows next to the sampling rate the window was filled at.

The daemon reads the window's ``seen`` (infra/window/: items ever applied, never lowered) on every check. Its
growth over the time since the previous check is the inflow of that interval; ``update`` smooths it with an
exponentially weighted moving average whose weight follows the elapsed time (a half-life in seconds), so checks
at irregular intervals (a slow round, a restart) weigh by the time they cover, not by their count.

Sampling (compass/sampling.py, ``sampling.rate`` per language) keeps a uniform share ``r`` of a language's
queries, chosen by a hash of the event id and independent of the query's content. The kept queries are then a
uniform subsample of the same stream: under "no drift" the window is still ``window_size`` draws from the same
distribution P, so the null distribution of JS(P_ref || P_mon) for a window of n queries (and with it theta, a
calibrated threshold or the CUSUM's false-alarm rate per window query) is unchanged by sampling. What changes is
time: the window fills from ``r`` times fewer queries per second, so it spans ``window_size / inflow`` seconds,
``1 / r`` times longer than unsampled, and a drift takes that much longer to fill it. ``traffic_qps`` undoes the
sampling to estimate the language's own query rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HALF_LIFE_S = 60.0  # the default smoothing: a reading 60 s old weighs half as much as the newest


@dataclass(frozen=True)
class Inflow:
    """The inflow estimate after a check: the window's ``seen`` and the check's time ``at`` (unix s), and the
    smoothed rate in queries/s (None until two checks have been seen)."""

    seen: int
    at: float
    qps: float | None = None


def update(prev: Inflow | None, seen: int, at: float, half_life_s: float = HALF_LIFE_S) -> Inflow:
    """The estimate after a check that read ``seen`` at ``at``, from the previous one (None: the first check).

    - first check: no rate yet (one point gives no slope)
    - ``seen`` lower than before: the window was reset (``seen`` restarts at 0); the growth is unknown, so the
      rate is kept and the counter restarts from the new ``seen``
    - no time elapsed (``at`` <= the previous ``at``: a clock step back, two checks in one instant): nothing to
      learn, the previous estimate stands
    - else the interval's rate ``(seen - prev.seen) / dt`` is blended in with weight ``1 - 2^(-dt / half_life)``
      (the first rate is taken as is)
    """
    if half_life_s <= 0 or not math.isfinite(half_life_s):
        raise ValueError(f"half_life_s must be a finite number of seconds > 0; got {half_life_s!r}")
    if prev is None:
        return Inflow(seen, at, None)
    if seen < prev.seen:
        return Inflow(seen, at, prev.qps)
    dt = at - prev.at
    if dt <= 0:
        return prev
    rate = (seen - prev.seen) / dt
    if prev.qps is None:
        return Inflow(seen, at, rate)
    weight = 1.0 - 2.0 ** (-dt / half_life_s)
    return Inflow(seen, at, prev.qps + weight * (rate - prev.qps))


def window_span_s(size: int, qps: float | None) -> float | None:
    """Seconds the window's ``size`` queries span at ``qps`` queries/s; None when unknown or without inflow."""
    if qps is None or qps <= 0:
        return None
    return size / qps


def traffic_qps(qps: float | None, sampling_rate: float) -> float | None:
    """The language's own query rate: the window's inflow undoing the sampling (``qps / sampling_rate``)."""
    if qps is None:
        return None
    if not 0.0 < sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate must be in (0, 1]; got {sampling_rate!r}")
    return qps / sampling_rate
