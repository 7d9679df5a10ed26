"""Emerging languages: when does the traffic of a language nobody serves deserve an adapter? (issue 12)

A query whose language no configured adapter serves (compass/route/decision.py: not configured, or ``und``) is
counted by the consumers as *unserved* (infra/unserved.py), never put in a configured language's window. Over
the horizon ``daemon.emerging_horizon_s`` the daemon reads each unserved language's count and its share of all
traffic (served + unserved) and this pure rule says whether to announce it (``language_emerging``):

  * emerge   share >= ``share`` and count >= ``min_count`` while not in an episode: emit once, the episode starts
  * ongoing  in an episode while share >= ``rearm_ratio * share`` (hysteresis: a share hovering around the level
             does not emit again on every check)
  * rearmed  in an episode and the share fell below ``rearm_ratio * share``: the episode ends; a later rise is a
             new episode with a new event
  * few      share at the level but fewer than ``min_count`` queries: too little evidence yet
  * below    under the level
  * served   the language is configured now (its queries fill its window): any episode ends
  * undetermined  ``und`` never emerges: there is no language to serve (its share is still reported)

State in, state and action out; the daemon (daemon/scheduler/unserved.py) does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from compass.errors import CompassError
from compass.langid import UND

CHECKS = ("emerging", "ongoing", "rearmed", "few", "below", "served", "undetermined")


class EmergingError(CompassError, ValueError):
    """A setting or a stored state of the emerging-language rule is invalid."""


@dataclass(frozen=True)
class EmergingSettings:
    share: float  # the level, in (0, 1]: daemon.emerging_share
    min_count: int  # queries over the horizon, >= 1: daemon.emerging_min_count
    rearm_ratio: float = 0.5  # re-arm below rearm_ratio * share, in (0, 1]: daemon.emerging_rearm_ratio

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.share, bool) or not isinstance(self.share, int | float) or not 0 < self.share <= 1:
            problems.append(f"share: got {self.share!r}; must be a fraction in (0, 1] (daemon.emerging_share)")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 1:
            problems.append(f"min_count: got {self.min_count!r}; must be an integer >= 1 (daemon.emerging_min_count)")
        if (isinstance(self.rearm_ratio, bool) or not isinstance(self.rearm_ratio, int | float)
                or not 0 < self.rearm_ratio <= 1):
            problems.append(f"rearm_ratio: got {self.rearm_ratio!r}; must be in (0, 1] (daemon.emerging_rearm_ratio)")
        if problems:
            raise EmergingError("; ".join(problems))

    @property
    def rearm_below(self) -> float:
        return self.rearm_ratio * self.share


@dataclass(frozen=True)
class EmergingState:
    """One unserved language's episode: ``active`` from its event until it re-arms."""

    active: bool = False
    since: float | None = None  # when the current (or last) episode's event was emitted
    share: float | None = None  # share and count that raised it
    count: int = 0
    episodes: int = 0  # events emitted so far

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str = "emerging state") -> EmergingState:
        if not isinstance(obj, dict) or set(obj) - set(cls.__dataclass_fields__):
            raise EmergingError(f"{where}: got {obj!r}; expected an object with fields "
                                f"{sorted(cls.__dataclass_fields__)}; delete the key to start afresh")
        return cls(**obj)


@dataclass(frozen=True)
class Reading:
    """An unserved language over the horizon: its queries and all queries (served + unserved)."""

    language: str
    count: int
    total: int

    @property
    def share(self) -> float:
        return self.count / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class EmergingStep:
    state: EmergingState
    emit: bool  # publish language_emerging now
    check: str  # one of CHECKS
    detail: str = ""


def readings(counts: Mapping[str, int], served: int) -> dict[str, Reading]:
    """Per unserved language, its reading over the horizon: ``counts`` unserved queries by language, ``served``
    the queries of configured languages in the same buckets."""
    total = served + sum(counts.values())
    return {lang: Reading(lang, int(n), total) for lang, n in sorted(counts.items())}


def decide(state: EmergingState, reading: Reading, settings: EmergingSettings, *, configured: bool,
           now: float) -> EmergingStep:
    """The rule of the module docstring for one language at ``now``."""
    share, level = reading.share, settings.share
    if configured:
        return EmergingStep(replace(state, active=False), False, "served", "configured: its queries fill its window")
    if reading.language == UND:
        return EmergingStep(state, False, "undetermined", "language ID could not tell; nothing to serve")
    if state.active:
        if share < settings.rearm_below:
            return EmergingStep(replace(state, active=False), False, "rearmed",
                                f"share {share:.4f} < {settings.rearm_below:.4f} (rearm_ratio x share): episode over")
        return EmergingStep(state, False, "ongoing", f"emerged at {state.since}; share {share:.4f}")
    if share >= level and reading.count >= settings.min_count:
        new = EmergingState(True, now, share, reading.count, state.episodes + 1)
        return EmergingStep(new, True, "emerging",
                            f"share {share:.4f} >= {level} with {reading.count} >= {settings.min_count} queries")
    if share >= level:
        return EmergingStep(state, False, "few", f"{reading.count} < min_count {settings.min_count} queries")
    return EmergingStep(state, False, "below", f"share {share:.4f} < {level}")


def states_to_json(states: Mapping[str, EmergingState]) -> str:
    return json.dumps({lang: s.to_json() for lang, s in sorted(states.items())}, separators=(",", ":"))


def states_from_json(raw: bytes | str | None, where: str = "emerging states") -> dict[str, EmergingState]:
    if raw is None:
        return {}
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EmergingError(f"{where}: not JSON ({e}); delete the key to start afresh") from None
    if not isinstance(obj, dict):
        raise EmergingError(f"{where}: got {type(obj).__name__}; expected an object language -> state")
    return {lang: EmergingState.from_json(v, f"{where} [{lang!r}]") for lang, v in obj.items()}


def how_to_serve(lang: str) -> str | None:
    """The one step that starts serving ``lang`` (None for ``und``: nothing to serve)."""
    if lang == UND:
        return None
    return (f"add `{lang}: {{}}` to languages.yaml (or set its enabled: true), restart `compass consume`, and run "
            f"`compass adapt --target {lang}` (D_t from worker.targets_dir/{lang}.jsonl; target-only without a "
            f"--proxy usage file); its window fills from then on")


__all__ = ["CHECKS", "EmergingError", "EmergingSettings", "EmergingState", "EmergingStep", "Reading", "decide",
           "how_to_serve", "readings", "states_from_json", "states_to_json"]
