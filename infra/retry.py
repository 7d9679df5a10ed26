"""The one retry policy of the project: exponential back-off with optional jitter, built on tenacity.

The n-th retry (n = 1, 2, ...) waits up to ``min(max_s, base_s * 2 ** (n - 1))`` seconds (its *ceiling*):

    jitter "none"  the ceiling itself               (deterministic: the monitor's outage back-off)
    jitter "half"  uniform in [ceiling / 2, ceiling] (many clients do not retry in step, yet the wait still grows)
    jitter "full"  uniform in [0, ceiling]           ("full jitter": the widest spread)

``True`` means "half" and ``False`` "none". A server may say how long to wait (HTTP ``Retry-After``): an
exception that carries ``retry_after_s`` (seconds, or None) makes the wait at least that hint, capped at
``max_s`` so that a hostile or confused server cannot park a client for hours. ``parse_retry_after`` turns the
header into that number.

Usage, as a loop (tenacity's iterator protocol)::

    for attempt in retrying(on=ConnectionError, attempts=3, base_s=0.5, max_s=30):
        with attempt:
            call()

or ``retrying(...)(call, *args)``. The last exception is re-raised as itself (not tenacity's ``RetryError``);
``attempts=None`` retries forever. Pass ``sleep`` (a list's ``append``, an ``Event.wait``) to test without
sleeping or to wake early, and ``rng`` (a seeded ``random.Random``) for reproducible jitter.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import tenacity
from tenacity.wait import wait_base

Jitter = Literal["none", "half", "full"]
HINT_ATTR = "retry_after_s"  # the attribute of an exception that carries a server's hint, in seconds
_JITTERS = ("none", "half", "full")


def _jitter_name(jitter: bool | str) -> Jitter:
    if jitter is True:
        return "half"
    if jitter is False:
        return "none"
    if jitter not in _JITTERS:
        raise ValueError(f"The 'jitter' parameter of the retry policy must be a bool or one of {_JITTERS}. "
                         f"Got {jitter!r} instead.")
    return jitter  # type: ignore[return-value]


def ceiling_s(retry: int, *, base_s: float, max_s: float) -> float:
    """The longest wait before the ``retry``-th retry (1-based): ``min(max_s, base_s * 2 ** (retry - 1))``."""
    if retry < 1:
        raise ValueError(f"The 'retry' parameter of ceiling_s must be an int >= 1. Got {retry!r} instead.")
    # 2.0 ** 1024 overflows: far past any cap, so the exponent stops growing there.
    return min(max_s, base_s * 2.0 ** min(retry - 1, 1023))


class Backoff(wait_base):
    """A tenacity wait: exponential back-off with jitter, and at least an exception's ``retry_after_s`` hint."""

    def __init__(self, *, base_s: float, max_s: float, jitter: bool | str = True, rng: random.Random | None = None,
                 hint: Callable[[BaseException], float | None] | None = None):
        if not (base_s >= 0 and math.isfinite(base_s)):
            raise ValueError(f"The 'base_s' parameter of the retry policy must be a finite float >= 0. "
                             f"Got {base_s!r} instead.")
        if not (max_s >= 0 and math.isfinite(max_s)):
            raise ValueError(f"The 'max_s' parameter of the retry policy must be a finite float >= 0. "
                             f"Got {max_s!r} instead.")
        self.base_s, self.max_s = float(base_s), float(max_s)
        self.jitter = _jitter_name(jitter)
        self.rng = rng or random.Random()
        self.hint = hint or hint_of

    def delay(self, retry: int, error: BaseException | None = None) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based) after ``error``."""
        top = ceiling_s(retry, base_s=self.base_s, max_s=self.max_s)
        if self.jitter == "half":
            wait = self.rng.uniform(top / 2, top)
        elif self.jitter == "full":
            wait = self.rng.uniform(0.0, top)
        else:
            wait = top
        hinted = self.hint(error) if error is not None else None
        if hinted is not None:
            wait = max(wait, min(hinted, self.max_s))
        return wait

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return self.delay(retry_state.attempt_number, error)


def hint_of(error: BaseException) -> float | None:
    """The server's wait hint an exception carries (``retry_after_s``), if it is a usable number of seconds."""
    value = getattr(error, HINT_ATTR, None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header value (delta-seconds or an HTTP date), or None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retrying(
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    attempts: int | None,
    base_s: float,
    max_s: float,
    jitter: bool | str = True,
    sleep: Callable[[float], Any] = time.sleep,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    rng: random.Random | None = None,
    hint: Callable[[BaseException], float | None] | None = None,
) -> tenacity.Retrying:
    """A tenacity ``Retrying`` that retries exceptions of type ``on`` (others pass through at once), at most
    ``attempts`` calls in all (None: forever), waiting ``Backoff(base_s, max_s, jitter)`` between them; the last
    exception is re-raised. ``before_sleep`` sees each failed attempt (log it there)."""
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
        raise ValueError(f"The 'attempts' parameter of retrying must be an int >= 1 or None. Got {attempts!r} "
                         "instead.")
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(on),
        stop=tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts),
        wait=Backoff(base_s=base_s, max_s=max_s, jitter=jitter, rng=rng, hint=hint),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
