"""Calibrating theta (eq. 6) by bootstrap: the JS a window shows when nothing has drifted.

The paper tunes theta_JS "empirically" per language (§3.3.2). With no drift at all, the monitor window (eq. 4) is
still a finite sample of P_ref, so JS(P_ref || P_mon) > 0 by sampling noise alone, and that noise grows as the
window shrinks (roughly (K - 1) / (8 n ln 2) bits for K used buckets and n queries: JS ~ chi^2 / 8n nats).
``null_js_samples`` draws that null distribution: ``n_boot`` multinomial windows of ``window_size`` queries from
P_ref, each compared with P_ref.

``propose_theta`` turns a false-alarm budget into a threshold. With one check every ``check_every`` queries, a
budget of F false alarms per 10,000 queries allows a per-check false-alarm probability

    alpha = F * check_every / 10000

and theta is the (1 - alpha) quantile of the null samples (``decide`` fires on JS > theta, so under the null
P(fire) <= alpha up to bootstrap error). Checks are treated as independent. They are not: consecutive windows
overlap when check_every < window_size, so null exceedances come in runs, and the trigger's hysteresis and cooldown
turn a run into one alarm. The expected number of exceeding checks is n_checks * alpha either way (linearity), so
the rate of *alarms* is at most the budget: conservative-ish. What is not covered: real traffic is not i.i.d.
(bursts, time-of-day topics widen the true null), P_ref is itself estimated from finite data, and a window that is
not yet full (between min_samples and window_size) has a wider null than a full one. Treat the proposal as a floor
to review, never as a setting to apply blindly.

Sampling (issue 20; ``compass/sampling.py``) leaves every threshold here, and the live one of
``compass/drift/calibrated.py``, unchanged. A consumer keeps a query iff a hash of its event id falls below the
rate: the decision does not look at the query, so it is independent of its cluster. Under the null the kept
queries are therefore still independent draws from the same mix (a thinned stationary stream is the same
stationary stream), and a window of n kept queries is the multinomial(n, P) window that eq. 4 counts at rate 1.
Its P_mon, hence JS(P_ref || P_mon) of eq. 5, hence the (1 - alpha) quantile compared in eq. 6, have the null they
have unsampled; the same holds under a cap (``max_per_second``), whose rate changes per time bucket but still by
the id alone. Everything above counts kept queries: ``window_size``, ``check_every`` and the budget (false alarms
per 10,000 *kept* queries, or ``false_alarm_every`` kept queries). What sampling changes is time: at ``Q``
queries a second kept at rate ``r`` (or under a cap ``N``: min(Q, N) kept a second), n kept queries take
n / (Q * r) seconds, so the same budget is a false alarm r times less often in wall time and the same delay in
samples is 1 / r times longer in seconds. ``in_seconds`` converts a proposal's counts (``compass calibrate
--arrival-rate``); ``compass simulate --sampling-rate`` measures the delays themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from compass.drift.timing import Sampling
from compass.errors import CompassError
from compass.params import check_int

THETA_FLOOR = 1e-4  # bits; LanguageSettings.theta must be > 0, and a null that is all 0 (one bucket) gives 0
THETA_CEIL = 1.0  # JS in bits never exceeds 1


class CalibrationError(CompassError, ValueError):
    """An input to the calibration is invalid; the message names the field, the value and the fix."""


@dataclass(frozen=True)
class Proposal:
    theta: float  # the proposed threshold in bits (clipped to [THETA_FLOOR, 1])
    quantile: float  # the level of the null quantile it is, 1 - per_check_alpha
    per_check_alpha: float  # false-alarm probability allowed per check
    null_mean: float  # mean JS of a no-drift window, bits
    null_p99: float  # 99th percentile of the null, bits
    null_max: float  # largest null sample, bits
    floored: bool  # the quantile was below THETA_FLOOR and the floor was proposed instead
    resolved: bool  # n_boot * alpha >= 1: the bootstrap has at least one sample beyond the quantile
    window_size: int
    check_every: int
    false_alarms_per_10k: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reference(p_ref: ArrayLike) -> np.ndarray:
    p = np.asarray(p_ref, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise CalibrationError(f"p_ref: expected a non-empty 1-d vector; got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise CalibrationError(f"p_ref: got {p.tolist()}; entries must be finite and >= 0 (counts or probabilities)")
    total = float(p.sum())
    if total <= 0:
        raise CalibrationError(f"p_ref: sums to {total}; give at least one positive count")
    return p / total


def js_rows(p_ref: np.ndarray, q_rows: np.ndarray) -> np.ndarray:
    """JS(p_ref || q) in bits (eq. 5) for each row q of ``q_rows`` (probabilities), exact at zero entries."""
    m = 0.5 * (p_ref[None, :] + q_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p_ref[None, :] > 0, p_ref[None, :] * np.log2(p_ref[None, :] / m), 0.0).sum(axis=1)
        kl_q = np.where(q_rows > 0, q_rows * np.log2(q_rows / m), 0.0).sum(axis=1)
    return np.clip(0.5 * kl_p + 0.5 * kl_q, 0.0, 1.0)


def null_js_samples(p_ref: ArrayLike, window_size: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` draws of JS(P_ref || P_mon) where P_mon is a window of ``window_size`` queries drawn from P_ref."""
    p = _reference(p_ref)
    n = check_int("window_size", "null_js_samples", window_size, 1, CalibrationError, allow_numpy=True)
    b = check_int("n_boot", "null_js_samples", n_boot, 1, CalibrationError, allow_numpy=True)
    counts = rng.multinomial(n, p, size=b).astype(np.float64)
    return js_rows(p, counts / n)


def per_check_alpha(false_alarms_per_10k: float, check_every: int) -> float:
    """The per-check false-alarm probability that spends F alarms per 10,000 queries with a check every N."""
    f = float(false_alarms_per_10k)
    n = check_int("check_every", "per_check_alpha", check_every, 1, CalibrationError, allow_numpy=True)
    if not math.isfinite(f) or f <= 0:
        raise CalibrationError(f"false_alarms_per_10k: got {false_alarms_per_10k!r}; must be > 0, e.g. 1.0")
    alpha = f * n / 10_000
    if alpha >= 1:
        raise CalibrationError(
            f"false_alarms_per_10k * check_every / 10000 = {f} * {n} / 10000 = {alpha:g} >= 1: every check may "
            f"false-alarm; lower false_alarms_per_10k below {10_000 / n:g} or check more often"
        )
    return alpha


def theta_from_null(null: ArrayLike, alpha: float) -> float:
    """The (1 - alpha) quantile of the null samples, taken as an order statistic (numpy's "higher" method: never
    interpolated below an observed value)."""
    x = np.asarray(null, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise CalibrationError(f"null: expected a non-empty 1-d sample; got shape {x.shape}")
    if not 0 < alpha < 1:
        raise CalibrationError(f"alpha: got {alpha!r}; must be in (0, 1)")
    return float(np.quantile(x, 1.0 - alpha, method="higher"))


def propose_theta(
    p_ref: ArrayLike,
    window_size: int,
    check_every: int,
    false_alarms_per_10k: float,
    n_boot: int = 2000,
    seed: int = 0,
) -> Proposal:
    """A theta for ``window_size``-query windows checked every ``check_every`` queries that spends about
    ``false_alarms_per_10k`` false alarms per 10,000 queries when nothing drifts (see the module docstring)."""
    alpha = per_check_alpha(false_alarms_per_10k, check_every)
    null = null_js_samples(p_ref, window_size, n_boot, np.random.default_rng(seed))
    q = theta_from_null(null, alpha)
    theta = min(max(q, THETA_FLOOR), THETA_CEIL)
    return Proposal(
        theta=theta,
        quantile=1.0 - alpha,
        per_check_alpha=alpha,
        null_mean=float(null.mean()),
        null_p99=float(np.quantile(null, 0.99, method="higher")),
        null_max=float(null.max()),
        floored=q < THETA_FLOOR,
        resolved=n_boot * alpha >= 1,
        window_size=int(window_size),
        check_every=int(check_every),
        false_alarms_per_10k=float(false_alarms_per_10k),
        n_boot=int(n_boot),
        seed=int(seed),
    )


@dataclass(frozen=True)
class InSeconds:
    """A calibration's kept-query counts in wall seconds at a language's arrival and sampling rates."""

    kept_per_s: float  # kept queries a second: Q * r, or min(Q, N) under a cap
    check_s: float  # between two checks (check_every kept queries): the smallest possible detection delay
    window_s: float  # for a full window (window_size kept queries) to fill: the scale of a detection's delay
    false_alarm_every: float  # the budget: kept queries between false alarms
    false_alarm_every_s: float  # the same in seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_seconds(sampling: Sampling, window_size: int, check_every: int, false_alarm_every: float) -> InSeconds:
    """``window_size``, ``check_every`` and ``false_alarm_every`` (kept queries; the thresholds are the same at
    any sampling rate, module docstring) in seconds at ``sampling``'s arrival and sampling rates."""
    if not math.isfinite(false_alarm_every) or false_alarm_every <= 0:
        raise CalibrationError(f"false_alarm_every: got {false_alarm_every!r}; give the kept queries between false "
                               "alarms, > 0, e.g. 50000")
    return InSeconds(kept_per_s=sampling.kept_per_s, check_s=sampling.seconds(check_every),
                     window_s=sampling.seconds(window_size), false_alarm_every=float(false_alarm_every),
                     false_alarm_every_s=sampling.seconds(false_alarm_every))
