"""Drift detection (paper §3.3.2): reference and monitor distributions (eq. 3-4) and the trigger (eq. 6)."""

from compass.drift.distributions import reference_distribution
from compass.drift.trigger import Decision, TriggerState, decide

__all__ = ["Decision", "TriggerState", "decide", "reference_distribution"]
