"""Scoring a replay against the stream's known period boundaries: the rows of Table 11 (paper App. D.2).

With samples numbered from 0 and check t seeing samples [0, t):
  * transitions: the indices s where a sample's period differs from the previous sample's (T1->T2 at s is
    the first T2 sample);
  * an update dispatched at check t belongs to the latest transition s < t (at least one sample of the new
    period has arrived). The first update belonging to a transition is its detection, with delay t - s: the
    samples of the new period that had arrived when the update was dispatched (a multiple of ``increment`` when
    periods are). With ``settle_s`` > 0 the update is scored at its dispatch; ``detected_at`` keeps the
    detection it came from;
  * every other update (before the first transition, or a second one in the same period) is a false positive:
    an update without a new distribution shift. FP rate = false positives / updates, in percent (Table 11: 8
    of 12 updates = 66.7% at theta 0.05, 3 of 7 = 42.9% at 0.10); ``false_alarms_per_10k`` = false positives
    per 10,000 samples of the stream (on a stable stream, the false-alarm rate a budget promises);
  * average delay: the mean delay over the detected transitions (None when none was detected).

A replay with ``recluster="auto"`` also counts its re-clusterings (``reclusterings``, when: ``reclustered_at``):
a re-clustering is not an adapter update, so it is neither a detection nor a false positive; the update that
follows it on the new codebook is.

Two rows need no replay: ``fixed-interval`` is the paper's "Fixed" row, an oracle that updates exactly at every
transition (delay 0, no false positive), and ``never`` the static adapter (no update, every transition missed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the lifecycle-driven rows, then the two that need no replay
DETECTORS = ("js", "calibrated", "sequential", "fixed-interval", "never")
LIFECYCLE_DETECTORS = DETECTORS[:3]
BASELINES = DETECTORS[3:]


@dataclass(frozen=True)
class SweepRow:
    """One (detector, theta) of the replay: a row of Table 11, and what it is made of."""

    theta: float | None  # the fixed JS threshold; None for calibrated, sequential, fixed-interval, never
    updates: int
    transitions: int
    detected: int
    avg_delay: float | None  # samples; None when no transition was detected
    false_positives: int
    fp_rate: float  # percent of the updates
    fired_at: tuple[int, ...]  # the checks (samples seen) at which an update was dispatched
    delays: tuple[int | None, ...]  # per transition: samples from the change to its detection, None if missed
    n_checks: int
    check_ms: float  # mean wall time of one check: assign the batch, P_mon, the lifecycle step
    detector: str = "js"  # js | calibrated | sequential | fixed-interval | never
    false_alarms_per_10k: float = 0.0  # false positives per 10,000 samples
    detected_at: tuple[int, ...] = ()  # the detection each dispatched update came from (== fired_at without settle)
    thresholds: tuple[dict[str, Any], ...] = ()  # calibrated / sequential: the learned threshold per reference
    n_samples: int = 0
    reclusterings: int = 0  # codebooks the replay re-fitted (recluster="auto")
    reclustered_at: tuple[int, ...] = ()  # the checks at which they were installed
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the guard theta of a burn-in

    def to_dict(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if k != "extra"}
        return {**d, **self.extra}


def score(fired: Sequence[int], change_points: Sequence[int]) -> tuple[list[int | None], int]:
    """(delay per transition or None, false positives) of the updates ``fired`` (see the module docstring)."""
    delays: list[int | None] = [None] * len(change_points)
    false_positives = 0
    for t in fired:
        owner = max((i for i, s in enumerate(change_points) if s < t), default=None)
        if owner is None or delays[owner] is not None:
            false_positives += 1
        else:
            delays[owner] = t - change_points[owner]
    return delays, false_positives


def make_row(detector: str, theta: float | None, fired: Sequence[int], change_points: Sequence[int],
             n_samples: int, *, n_checks: int = 0, check_s: float = 0.0, detected_at: Sequence[int] | None = None,
             thresholds: Sequence[dict[str, Any]] = (), delays: Sequence[int | None] | None = None,
             false_positives: int | None = None, extra: dict[str, Any] | None = None,
             reclustered_at: Sequence[int] = ()) -> SweepRow:
    """A scored row; ``delays`` and ``false_positives`` given override ``score`` (the oracle row)."""
    if delays is None or false_positives is None:
        delays, false_positives = score(fired, change_points)
    hit = [d for d in delays if d is not None]
    return SweepRow(
        theta=theta, updates=len(fired), transitions=len(change_points), detected=len(hit),
        avg_delay=float(np.mean(hit)) if hit else None, false_positives=false_positives,
        fp_rate=100.0 * false_positives / len(fired) if fired else 0.0, fired_at=tuple(int(t) for t in fired),
        delays=tuple(delays), n_checks=n_checks, check_ms=1000.0 * check_s, detector=detector,
        false_alarms_per_10k=10_000.0 * false_positives / n_samples if n_samples else 0.0,
        detected_at=tuple(int(t) for t in (fired if detected_at is None else detected_at)),
        thresholds=tuple(thresholds), n_samples=n_samples, reclusterings=len(reclustered_at),
        reclustered_at=tuple(int(t) for t in reclustered_at), extra=dict(extra or {}),
    )


def baseline_row(detector: str, change_points: Sequence[int], n_samples: int) -> SweepRow:
    """``fixed-interval`` (an update at each transition itself: delay 0, no false positive) or ``never``."""
    if detector == "fixed-interval":
        points = list(change_points)
        return make_row(detector, None, points, points, n_samples, delays=[0] * len(points), false_positives=0)
    if detector == "never":
        return make_row(detector, None, [], change_points, n_samples)
    raise ValueError(f"detector: got {detector!r}; the rows without a replay are {', '.join(BASELINES)}")


__all__ = ["BASELINES", "DETECTORS", "LIFECYCLE_DETECTORS", "SweepRow", "baseline_row", "make_row", "score"]
