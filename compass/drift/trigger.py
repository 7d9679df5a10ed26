"""The update trigger (eq. 6) with the guards a production daemon needs.

``decide`` is a pure function: state in, decision and new state out. The daemon stores ``TriggerState``
(in Redis, as ``to_dict``) so that a restart or a second replica continues where the last check stopped.

Order of the checks, each with the reason it reports:
  1. ``disabled``              the language is switched off in languages.yaml;
  2. ``insufficient_samples``  the window holds fewer than min_samples queries (JS on few samples is noise);
  3. ``disarmed``              hysteresis: after a trigger, JS must fall below rearm_ratio * theta before the
                               trigger can fire again (``rearmed`` is reported on the check where it does);
  4. ``cooldown``              less than cooldown_s since the later of the last trigger and the last update;
  5. ``drift``                 JS > theta (eq. 6): fire, and disarm;
  6. ``below_threshold``       otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from compass.languages import LanguageSettings


@dataclass(frozen=True)
class TriggerState:
    armed: bool = True
    last_fired_at: float | None = None  # unix seconds of the last trigger
    last_update_at: float | None = None  # unix seconds the last adapter update finished

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriggerState:
        return cls(**{k: data[k] for k in ("armed", "last_fired_at", "last_update_at") if k in data})

    def updated(self, at: float) -> TriggerState:
        """The state after an adapter update finished at ``at`` without a new reference (e.g. the gate rejected
        the candidate): the cooldown starts, hysteresis still holds against the unchanged P_ref."""
        return replace(self, last_update_at=at)

    def rereferenced(self, at: float) -> TriggerState:
        """The state after a new P_ref was installed at ``at`` (a promoted update): the cooldown starts and the
        trigger re-arms. Hysteresis guards against flapping around theta *against one reference*; measured
        against the new one the old level no longer applies, and an update that learned a transitional window
        would otherwise stay disarmed for good (JS never drops below rearm_ratio * theta again)."""
        return replace(self, armed=True, last_update_at=at)


@dataclass(frozen=True)
class Decision:
    fire: bool
    reason: str
    js: float
    n_samples: int
    state: TriggerState  # the state to store after this check


def decide(js: float, n_samples: int, settings: LanguageSettings, state: TriggerState, now: float) -> Decision:
    """One check of one language: should its adapter be updated now? (JS against ``settings.theta``, eq. 6)"""
    if not (0.0 <= js <= 1.0) or math.isnan(js):
        raise ValueError(f"js must be a JS divergence in bits, in [0, 1]; got {js!r} (was it the JS distance?)")
    return guard(js > settings.theta, js < settings.rearm_below, js, n_samples, settings, state, now)


def guard(exceeds: bool, rearm: bool, statistic: float, n_samples: int, settings: LanguageSettings,
          state: TriggerState, now: float) -> Decision:
    """The guards of ``decide`` around any detector: ``exceeds`` is the detector's alarm (eq. 6 for JS),
    ``rearm`` whether its statistic is below the hysteresis level; ``statistic`` is reported as ``js``."""

    def out(reason: str, new: TriggerState = state, fire: bool = False) -> Decision:
        return Decision(fire, reason, statistic, n_samples, new)

    if not settings.enabled:
        return out("disabled")
    if n_samples < settings.min_samples:
        return out("insufficient_samples")
    if not state.armed:
        if rearm:
            return out("rearmed", replace(state, armed=True))
        return out("disarmed")
    if cooling(state, settings.cooldown_s, now):
        return out("cooldown")
    if exceeds:
        return out("drift", replace(state, armed=False, last_fired_at=now), fire=True)
    return out("below_threshold")


def cooling(state: TriggerState, cooldown_s: float, now: float) -> bool:
    """Less than ``cooldown_s`` since the later of the last trigger and the last update."""
    since = max((t for t in (state.last_fired_at, state.last_update_at) if t is not None), default=None)
    return since is not None and now - since < cooldown_s
