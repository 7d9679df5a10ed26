"""What one check of the drift daemon returns and hands between its steps (read -> step -> write -> dispatch)."""

from __future__ import annotations

from dataclasses import dataclass

from compass.drift.inflow import Inflow
from compass.drift.lifecycle import Observation
from infra.messages import Event, UpdateJob
from infra.reference import Reference
from infra.window import WindowSnapshot

# check states not recorded in the JS history (infra/history.py): nothing was decided on the window
UNMEASURED_STATES = frozenset({"standby", "disabled", "paused", "updating", "error"})


@dataclass(frozen=True)
class CheckResult:
    lang: str
    state: str  # the lifecycle's check state (compass/drift/lifecycle.py), or standby, dispatch_failed, error
    fired: bool = False
    job: UpdateJob | None = None
    js: float | None = None
    n_samples: int = 0
    detail: str = ""


@dataclass(frozen=True)
class UnservedCheck:
    """One check of the unserved languages: ``state`` checked, standby or error; per language its
    ``compass.drift.emerging`` check; the languages whose language_emerging was published."""

    state: str
    checks: dict[str, str]
    emitted: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Reading:
    """One check's reading of a language: the lifecycle's observation and what dispatch needs besides."""

    obs: Observation
    snap: WindowSnapshot
    ref: Reference | None
    drained: list[Event]  # the inbox reports taken for ``obs.reports``
    inflow: Inflow | None = None  # the window's inflow after this check (compass/drift/inflow.py)
