"""What the drift daemon keeps per language between checks, and the languages config it checks with.

``{prefix}:{lang}:status`` (JSON, written with the lease's fencing token) holds the lifecycle state
(``compass.drift.lifecycle.DriftState.to_dict()``) plus the daemon's own ``last_check`` (the last check's reading)
and ``seen``, the window cursor: the window's ``seen`` counter at the last check, so that the next check reads the
cluster ids of the queries that arrived since (infra/window/). Status written before the lifecycle existed
(trigger, phase, job, ref_adapter_version, ...) still loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from compass.drift.lifecycle import DriftState, detector_mode
from compass.drift.trigger import TriggerState
from compass.languages import LanguagesConfig, LanguageSettings


@dataclass
class LanguageStatus:
    """One language's stored status: the lifecycle state, the last check, the window cursor."""

    drift: DriftState = field(default_factory=DriftState)
    last_check: dict[str, Any] | None = None
    seen: int | None = None  # the window's `seen` at the last check; None: never checked

    # the lifecycle's fields, read through (the API, the status page and the tests read them here)
    @property
    def trigger(self) -> TriggerState:
        return self.drift.trigger

    @property
    def phase(self) -> str:
        return self.drift.phase

    @property
    def job(self) -> dict[str, Any] | None:
        return self.drift.job

    @property
    def adapter_version(self) -> str | None:
        return self.drift.adapter_version

    @property
    def last_trigger(self) -> dict[str, Any] | None:
        return self.drift.last_trigger

    @property
    def last_update(self) -> dict[str, Any] | None:
        return self.drift.last_update

    @property
    def failures(self) -> int:
        return self.drift.failures

    @property
    def retry_at(self) -> float | None:
        return self.drift.retry_at

    @property
    def stuck(self) -> dict[str, Any] | None:
        return self.drift.stuck

    def to_json(self) -> str:
        return json.dumps({**self.drift.to_dict(), "last_check": self.last_check, "seen": self.seen},
                          default=_plain)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> LanguageStatus:
        if raw is None:
            return cls()
        obj = json.loads(raw)
        seen = obj.get("seen")
        return cls(DriftState.from_dict(obj), obj.get("last_check"), None if seen is None else int(seen))


def effective_threshold(state: DriftState, settings: LanguageSettings, n: int) -> float:
    """What the language's detector compares with now: theta (fixed, or guarding a burn-in), the calibrated JS
    threshold for a window of ``n`` queries, or the CUSUM's alarm level (nats)."""
    mode = detector_mode(settings)
    if mode == "calibrated" and state.threshold is not None:
        return state.threshold.at(n)
    if mode == "sequential" and state.cusum is not None:
        return state.cusum.h
    return settings.theta


class LanguagesSource(Protocol):
    """Where the daemon reads the languages config in force: ``daemon.scheduler.reload.ReloadingLanguages`` (a file, hot
    reload) or ``StaticLanguages``; ``maybe_reload`` is optional."""

    @property
    def current(self) -> LanguagesConfig: ...


class StaticLanguages:
    """A languages config held as given (the demo, the simulator, tests); assign ``current`` to change it."""

    def __init__(self, config: LanguagesConfig):
        self.current = config

    def maybe_reload(self) -> bool:
        return False


def languages_source(languages: LanguagesConfig | LanguagesSource) -> LanguagesSource:
    """``languages`` itself when it has ``current``, else a ``StaticLanguages`` around a ``LanguagesConfig``."""
    if isinstance(languages, LanguagesConfig):
        return StaticLanguages(languages)
    if not hasattr(languages, "current"):
        raise TypeError(f"languages: got {type(languages).__name__}; pass a LanguagesConfig or an object with a "
                        "`current` LanguagesConfig (daemon.scheduler.reload.ReloadingLanguages)")
    return languages


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars and arrays a state may carry."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
