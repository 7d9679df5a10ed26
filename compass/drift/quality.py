"""A performance-aware second signal (past the "performance-blind" JS trigger of paper §6.1-6.2).

JS (eq. 5-6) sees a shift of *what* is asked, not whether the adapter still answers it well. ``QualitySignal``
watches a per-language stream of quality values (e.g. the adapter's NLL on sampled queries, or a user-feedback
score carried in an event's ``meta``) with one of river's change detectors:

  ``adwin``         ``river.drift.ADWIN``: adaptive windowing; flags a change in the stream's mean in either
                    direction, with a false-positive bound ``delta``;
  ``page_hinkley``  ``river.drift.PageHinkley``: cumulative deviation from the running mean past ``threshold``
                    (``mode`` "up", "down" or "both").

Keyword parameters go to the river detector unchanged. ``combine`` joins the JS trigger with it by the language's
``combine`` rule (``compass.languages.LanguageSettings``):

  ``js_only``  JS alone decides (the paper's trigger; the quality signal is only observed);
  ``any``      either signal fires;
  ``all``      both must fire. ``quality_fired=None`` means no quality data arrived since the last check, and
               then ``all`` falls back to JS alone: a language without a quality producer is not muted.

A detection is momentary (one value of the stream) while JS describes a whole window, so a caller combining them
per check should pass "a detection since the last check" as ``quality_fired`` (``QualitySignal.feed`` returns
exactly that for a batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, get_args

from compass.errors import CompassError

QualityKind = Literal["adwin", "page_hinkley"]
CombineRule = Literal["js_only", "any", "all"]
KINDS: tuple[str, ...] = get_args(QualityKind)
RULES: tuple[str, ...] = get_args(CombineRule)


class QualitySignalError(CompassError, ValueError):
    """An invalid quality-signal setting or value; the message names the field, the value and the fix."""


def _detector(kind: str, params: dict[str, Any]) -> Any:
    from river import drift

    cls = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}.get(kind)
    if cls is None:
        raise QualitySignalError(f"quality_signal: got {kind!r}; use one of {', '.join(KINDS)} (or 'none' in config)")
    try:
        return cls(**params)
    except TypeError as e:
        raise QualitySignalError(f"quality_signal {kind}: bad parameters {params!r} ({e}); see river.drift."
                                 f"{cls.__name__} for its keyword arguments") from None


class QualitySignal:
    """One language's quality stream through a river drift detector, with explicit counters."""

    def __init__(self, kind: str, **params: Any):
        self.kind = kind
        self.params = dict(params)
        self.detector = _detector(kind, self.params)
        self.n_seen = 0  # values fed so far
        self.n_detections = 0  # changes flagged so far
        self.last_detection_index: int | None = None  # 0-based position in the stream of the last flagged value

    def update(self, x: float) -> bool:
        """Feed one value; True when the detector flags a change on this value."""
        value = float(x)
        if not math.isfinite(value):
            raise QualitySignalError(f"quality value #{self.n_seen}: got {x!r}; must be a finite number")
        self.detector.update(value)
        index = self.n_seen
        self.n_seen += 1
        if self.detector.drift_detected:
            self.n_detections += 1
            self.last_detection_index = index
            return True
        return False

    def feed(self, values: Iterable[float]) -> bool | None:
        """Feed a batch; None when it is empty (no data), else whether any value in it was flagged."""
        fired: bool | None = None
        for x in values:
            fired = self.update(x) or bool(fired)
        return fired

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_seen": self.n_seen, "n_detections": self.n_detections,
                "last_detection_index": self.last_detection_index}


def combine(js_fired: bool, quality_fired: bool | None, rule: str) -> bool:
    """Join the JS trigger with the quality signal by ``rule`` (see the module docstring)."""
    if rule == "js_only":
        return js_fired
    if rule == "any":
        return js_fired or bool(quality_fired)
    if rule == "all":
        return js_fired if quality_fired is None else (js_fired and quality_fired)
    raise QualitySignalError(f"combine: got {rule!r}; use one of {', '.join(RULES)}")
