"""Drift detection (paper §3.3.2): reference and monitor distributions (eq. 3-4) and the trigger (eq. 6)."""

from compass.drift.distributions import monitor_distribution, reference_distribution
from compass.drift.trigger import Decision, TriggerState, decide

__all__ = ["Decision", "TriggerState", "decide", "monitor_distribution", "reference_distribution"]
