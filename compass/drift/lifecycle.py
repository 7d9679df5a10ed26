"""One language's drift lifecycle: state and one observation in, new state and an action out (pure).

Everything that decides whether a language's adapter is stale lives here; the daemon (``daemon/scheduler/service.py``)
reads an ``Observation`` from Redis, calls ``step``, writes the state (fenced) and dispatches the action, and the
simulator (``compass/drift/replay.py``, behind ``compass simulate``) calls the same ``step`` on a replayed
stream. One step, in order; the first rule that ends it names the check's outcome (``Step.check``):

  1. reports     the worker's reports for this language: ``adapter_promoted`` (new version; clears failures and
                 ``stuck``), ``update_started``, ``adapter_rejected``, ``update_finished`` (ok, rejected,
                 failed, or ``manual``: a recluster job the worker left to ops, like ok). A rejected or failed
                 update is a *failure*: the trigger re-arms, and the next update
                 waits ``cooldown_s * 2^(failures-1)`` (capped at ``backoff_max_s``); ``max_rejections`` failures
                 in a row -> ``stuck`` (action ``stuck``: the service emits ``language_stuck``)
  2. disabled    ``enabled: false``
  3. paused      an operator paused the language
  4. updating    a job is out, until its ``update_finished`` or ``update_timeout_s`` (then: a failure, ``timeout``)
  5. resume      an operator resumed a stuck language: failures cleared, trigger armed
  6. manual      an operator asked for an update -> action ``update`` (reason ``manual``), honoured even when stuck
  7. stuck       no automatic update until ops act (resume, manual trigger, a promotion, a new reference)
  8. settling    after a detection with ``settle_s`` > 0: wait, then action ``update`` with the detection's reason
  9. stale       noise or far share past its level with >= min_samples, outside cooldown -> action ``recluster``;
                 not while the window is behind a re-fit's reference (``window_behind``: the consumers are still
                 switching, and a second re-fit would be skipped by the worker's interval anyway)
 10. reference   ``no_reference`` / ``bad_reference`` / ``codebook_mismatch``. (A new reference, its id changed,
                 is taken right after the reports: a new baseline, trigger re-armed, failures and ``stuck``
                 cleared, a new burn-in begins; a re-fit's reference carries the baseline its adapter was
                 trained for (``Observation.baseline``) and the learned detector is armed from it at once,
                 ``compass/drift/baseline.py``, since the traffic after a re-fit has already shifted.)
 11. detector    ``insufficient_samples`` for an empty window; else the language's detector:
                   js, fixed        JS(P_ref || P_mon) > theta (eq. 5-6)
                   js, calibrated   JS > the threshold the burn-in learned (``compass/drift/calibrated.py``)
                   sequential       CUSUM S > ln(false_alarm_every) (``compass/drift/sequential.py``)
                 While a burn-in runs (``calibrating``) the fixed theta guards. The guards of ``trigger.guard``
                 (min_samples, hysteresis, cooldown) apply to every detector, then the failure backoff
                 (``backoff``), then the quality rule (``combine``: any / all / js_only)
 12. fire        ``settle_s`` > 0 -> ``settling`` (action ``settle``); else action ``update``

Time is whatever clock the caller uses (unix seconds in the daemon, samples in the simulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from compass.divergence import js_divergence
from compass.drift.baseline import armed_burn_in, carried_over
from compass.drift.calibrated import BurnIn, JsThreshold, calibrate_js
from compass.drift.quality import combine
from compass.drift.sequential import Cusum
from compass.drift.stale import assess
from compass.drift.trigger import Decision, TriggerState, cooling, guard
from compass.languages import LanguageSettings

PHASES = ("idle", "settling", "updating", "stuck")
ACTIONS = ("none", "settle", "update", "recluster", "stuck")


@dataclass(frozen=True)
class Report:
    """A worker's report on a job of this language (the ``compass.events`` event, reduced)."""

    type: str  # update_started | adapter_promoted | adapter_rejected | update_finished
    job_id: str | None
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """What one check sees of a language; every field is read by the caller, nothing here does I/O."""

    now: float
    counts: np.ndarray | None = None  # the window's bucket counts (eq. 4); None or all zero: no window yet
    p_ref: np.ndarray | None = None  # P_ref (eq. 3) over the same buckets; None: none set
    ref_id: str | None = None  # the reference's identity; a different one is a new baseline
    reference: str = "ok"  # ok | missing | bad | mismatch
    reference_detail: str = ""  # why, when not ok
    new_labels: np.ndarray | None = None  # cluster ids of the queries since the last step, oldest first
    quality: bool | None = None  # the quality detector flagged since the last step; None: no quality data
    noise_share: float | None = None
    far_share: float | None = None
    reports: tuple[Report, ...] = ()
    forced: bool = False  # an operator asked for an update
    resume: bool = False  # an operator resumed a stuck language
    paused: bool = False
    job_id: str = "job"  # the id of a job this step dispatches
    baseline: np.ndarray | None = None  # a re-fit reference's baseline counts (same buckets); None: live burn-in
    window_behind: bool = False  # the reference is on a newer codebook lineage than the window: a re-fit was
    # installed and the consumers have not switched yet (the window's shares describe the old codebook)

    @property
    def n_samples(self) -> int:
        return 0 if self.counts is None else int(np.asarray(self.counts).sum())


@dataclass(frozen=True)
class Limits:
    """Service-wide limits the lifecycle honours (``daemon.*`` in the service config)."""

    update_timeout_s: float = 6 * 3600.0
    stale_noise_share: float = 0.3
    stale_far_share: float = 0.3


@dataclass(frozen=True)
class DriftState:
    """A language's lifecycle state; JSON-able (``to_dict``/``from_dict``), stored by the daemon."""

    trigger: TriggerState = field(default_factory=TriggerState)
    phase: str = "idle"  # idle | settling | updating | stuck
    job: dict[str, Any] | None = None  # updating: the job out; settling: the detection (detected_at, reason, js)
    ref_id: str | None = None  # the reference the trigger, burn-in and detectors belong to
    adapter_version: str | None = None  # last promoted version reported by the worker
    last_trigger: dict[str, Any] | None = None
    last_update: dict[str, Any] | None = None
    failures: int = 0  # updates in a row that did not promote
    retry_at: float | None = None  # no update before this (backoff after a failure)
    stuck: dict[str, Any] | None = None  # {at, reason} while stuck
    quality_alarm: bool = False  # a quality detection latched until the next update
    burn_in: BurnIn = field(default_factory=BurnIn)
    threshold: JsThreshold | None = None  # the calibrated JS threshold of the current reference
    cusum: Cusum | None = None  # the sequential detector of the current reference

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["trigger"] = self.trigger.to_dict()
        d["burn_in"] = self.burn_in.to_dict()
        d["threshold"] = None if self.threshold is None else self.threshold.to_dict()
        d["cusum"] = None if self.cusum is None else self.cusum.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DriftState:
        if not d:
            return cls()
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["trigger"] = TriggerState.from_dict(d.get("trigger") or {})
        kw["burn_in"] = BurnIn.from_dict(d.get("burn_in"))
        kw["threshold"] = JsThreshold.from_dict(d.get("threshold"))
        kw["cusum"] = Cusum.from_dict(d.get("cusum"))
        if "ref_id" not in d and "ref_adapter_version" in d:  # status written before the lifecycle existed
            kw["ref_id"] = d["ref_adapter_version"]
        return cls(**kw)


@dataclass(frozen=True)
class Action:
    kind: str = "none"  # none | settle | update | recluster | stuck
    reason: str = ""  # drift | quality | manual | stale_clusters, or why the language is stuck
    detection: dict[str, Any] | None = None  # the settled detection a dispatched update comes from


@dataclass(frozen=True)
class Step:
    state: DriftState
    action: Action
    check: str  # the outcome of the check (module docstring)
    js: float | None = None
    n_samples: int = 0
    statistic: float | None = None  # what the detector compared: JS (bits) or the CUSUM S (nats)
    threshold: float | None = None  # what it was compared with
    detail: str = ""

    def detector_view(self, settings: LanguageSettings) -> dict[str, Any]:
        """The detector part of an API / status / event view: mode, threshold, its derivation, burn-in progress."""
        return detector_view(self.state, settings, self.statistic, self.threshold)


def detector_mode(settings: LanguageSettings) -> str:
    """fixed | calibrated | sequential."""
    return "sequential" if settings.detector == "sequential" else settings.threshold


def detector_view(state: DriftState, settings: LanguageSettings, statistic: float | None = None,
                  threshold: float | None = None) -> dict[str, Any]:
    mode = detector_mode(settings)
    ready = mode == "fixed" or (state.threshold if mode == "calibrated" else state.cusum) is not None
    view: dict[str, Any] = {"detector": settings.detector, "threshold_mode": settings.threshold, "mode": mode,
                            "statistic": statistic, "effective_threshold": threshold,
                            "false_alarm_every": None if mode == "fixed" else settings.false_alarm_every,
                            "calibrating": not ready}
    if mode == "fixed":
        view["how"] = f"theta {settings.theta} as set in languages.yaml"
    elif not ready:
        view["how"] = (f"burn-in: {state.burn_in.seen} of {settings.burn_in_queries} queries against the current "
                       f"reference; theta {settings.theta} guards meanwhile")
    elif mode == "calibrated":
        view["how"] = state.threshold.how  # type: ignore[union-attr]
    else:
        c = state.cusum
        view["how"] = (f"CUSUM of Dirichlet-multinomial log q/p0 per check over {len(c.p0)} buckets, alarm at "  # type: ignore[union-attr]
                       f"ln({settings.false_alarm_every:,.0f}) = {c.h:.2f} nats; dispersion {c.phi:.2f}, "  # type: ignore[union-attr]
                       f"precision {c.precision:.0f}, memory {c.memory:.0f} queries")  # type: ignore[union-attr]
    view["burn_in"] = {"seen": state.burn_in.seen, "of": settings.burn_in_queries, "done": ready}
    return view


# ------------------------------------------------------------------------------------------------ the step


def step(state: DriftState, obs: Observation, settings: LanguageSettings, limits: Limits = Limits()) -> Step:
    """One check of one language (module docstring). Pure: the same inputs give the same ``Step``."""
    now = obs.now
    n = obs.n_samples
    comparable = obs.reference == "ok" and obs.p_ref is not None
    js = js_divergence(obs.p_ref, obs.counts) if comparable and n > 0 else None
    st, stuck_now = _apply_reports(state, obs.reports, settings)

    def out(check: str, st: DriftState, action: Action = Action(), **kw: Any) -> Step:
        return Step(st, action, check, js=kw.pop("js", js), n_samples=n, **kw)

    if stuck_now:
        return out("stuck", st, Action("stuck", st.stuck["reason"]), detail=st.stuck["reason"])  # type: ignore[index]
    if comparable and obs.ref_id != st.ref_id:  # a new baseline: hysteresis, failures, burn-in were the old one's
        prev = st
        st = replace(st, ref_id=obs.ref_id, trigger=replace(st.trigger, armed=True), failures=0, retry_at=None,
                     stuck=None, phase="idle" if st.phase == "stuck" else st.phase,
                     burn_in=BurnIn(ref_id=obs.ref_id), threshold=None, cusum=None)
        if obs.baseline is not None:
            st = _armed(st, prev, obs, settings)
    if not settings.enabled:
        return out("disabled", st)
    if obs.paused:
        return out("paused", st)
    if st.phase == "updating":
        job = st.job or {}
        enqueued = float(job.get("enqueued_at", now))
        if now - enqueued <= limits.update_timeout_s:
            return out("updating", st, detail=f"job {job.get('job_id')}")
        st = replace(st, phase="idle", job=None)
        st, stuck_now = _failure(st, now, "timeout", job.get("job_id"), {}, settings)
        if stuck_now:
            return out("stuck", st, Action("stuck", st.stuck["reason"]), detail=st.stuck["reason"])  # type: ignore[index]
    if obs.resume and st.phase == "stuck":
        st = replace(st, phase="idle", stuck=None, failures=0, retry_at=None,
                     trigger=replace(st.trigger, armed=True))
    if obs.forced:
        return _dispatch(st, obs, settings, "update", "manual", js)
    if st.phase == "stuck":
        return out("stuck", st, detail=str((st.stuck or {}).get("reason", "")))
    if st.phase == "settling":
        detected = st.job or {}
        waited = now - float(detected.get("detected_at", now))
        if waited < settings.settle_s:
            return out("settling", st, detail=f"{detected.get('reason')} detected {waited:.0f} s ago (JS "
                       f"{detected.get('js')}); the window is frozen after settle_s {settings.settle_s:g}")
        return _dispatch(st, obs, settings, "update", str(detected.get("reason", "drift")), js)

    why = assess(obs.noise_share, obs.far_share, limits.stale_noise_share, limits.stale_far_share).why
    stale = bool(why) and n >= settings.min_samples and not obs.window_behind
    if stale and not cooling(st.trigger, settings.cooldown_s, now):
        return _dispatch(st, obs, settings, "recluster", "stale_clusters", js, detail=why)

    if obs.reference == "missing" or (obs.reference == "ok" and obs.p_ref is None):
        return out("no_reference", st, detail=obs.reference_detail or "no P_ref for this language")
    if obs.reference == "bad":
        return out("bad_reference", st, detail=obs.reference_detail)
    if obs.reference == "mismatch":
        return out("codebook_mismatch", st, detail=obs.reference_detail)
    if js is None:
        return out("insufficient_samples", st)
    return _detect(st, obs, settings, js)


# ------------------------------------------------------------------------------------------------ detectors


def _detect(st: DriftState, obs: Observation, settings: LanguageSettings, js: float) -> Step:
    now, n = obs.now, obs.n_samples
    mode = detector_mode(settings)
    labels = np.asarray(obs.new_labels if obs.new_labels is not None else (), dtype=np.int64)
    statistic, threshold = js, settings.theta
    fresh = False
    if mode != "fixed":
        st, fresh = _feed(st, obs, settings, labels, js)
    if mode == "calibrated" and st.threshold is not None:
        threshold = st.threshold.at(n)
        decision = guard(js > threshold, js < settings.rearm_ratio * threshold, js, n, settings, st.trigger, now)
    elif mode == "sequential" and st.cusum is not None:
        # the queries that completed the burn-in estimated p0: not evidence against it
        cusum, peak = (st.cusum, st.cusum.stat) if fresh else st.cusum.feed(labels)
        st = replace(st, cusum=cusum)
        statistic, threshold = peak, cusum.h
        decision = guard(peak > cusum.h, cusum.stat < settings.rearm_ratio * cusum.h, peak, n, settings,
                         st.trigger, now)
    else:  # fixed, or the fixed theta guarding a burn-in
        decision = guard(js > settings.theta, js < settings.rearm_below, js, n, settings, st.trigger, now)
    view = {"statistic": statistic, "threshold": threshold}
    calibrating = mode != "fixed" and (st.threshold if mode == "calibrated" else st.cusum) is None

    held = decision.fire or decision.reason == "cooldown"  # the longer wait after a failure names the state
    if held and st.retry_at is not None and now < st.retry_at:
        return Step(st, Action(), "backoff", js=js, n_samples=n, **view,
                    detail=f"{st.failures} unsuccessful update(s) in a row; next update not before "
                    f"{st.retry_at:g}")
    quality = _quality(st, obs)
    if decision.fire and not combine(True, quality, settings.combine):
        return Step(replace(st, quality_alarm=st.quality_alarm or bool(obs.quality)), Action(), "awaiting_quality",
                    js=js, n_samples=n, **view, detail="the detector fired; rule 'all' waits for the quality signal")
    st = replace(st, trigger=decision.state, quality_alarm=st.quality_alarm or bool(obs.quality))
    if decision.fire:
        return _detected(st, obs, settings, "drift", js, view)
    if decision.reason == "below_threshold" and settings.combine == "any" and quality:
        if st.retry_at is not None and obs.now < st.retry_at:
            return Step(st, Action(), "backoff", js=js, n_samples=n, **view)
        return _detected(st, obs, settings, "quality", js, view)
    reason = "calibrating" if calibrating and decision.reason == "below_threshold" else decision.reason
    return Step(st, Action(), reason, js=js, n_samples=n, **view)


def _feed(st: DriftState, obs: Observation, settings: LanguageSettings, labels: np.ndarray,
          js: float) -> tuple[DriftState, bool]:
    """Advance the burn-in; at its end, calibrate the threshold (or start the CUSUM) for this reference.
    True when the detector became ready on this step."""
    ready = st.threshold if settings.detector == "js" else st.cusum
    if ready is not None:
        return st, False
    k = len(obs.p_ref)  # type: ignore[arg-type]
    burn = st.burn_in if len(st.burn_in.counts) in (0, k) else BurnIn(ref_id=st.ref_id)
    burn = burn.add(labels, k, js if obs.n_samples >= settings.window_size else None)  # the floor: full windows
    st = replace(st, burn_in=burn)
    if burn.seen < settings.burn_in_queries or obs.n_samples < settings.min_samples:
        return st, False
    return _learned(st, obs, settings, burn), True


def _learned(st: DriftState, obs: Observation, settings: LanguageSettings, burn: BurnIn) -> DriftState:
    """The state with the detector of this reference learned from the finished burn-in ``burn``."""
    if settings.detector == "sequential":
        return replace(st, burn_in=burn, cusum=Cusum.start(burn.counts, settings.false_alarm_every,
                                                           burn.over_dispersion(), burn.seen,
                                                           burn.seen / max(1, burn.checks)))
    thr = calibrate_js(np.asarray(obs.p_ref, dtype=np.float64), burn, settings.window_size, settings.min_samples,
                       settings.false_alarm_every, seed=burn.seen)
    return replace(st, burn_in=burn, threshold=thr)


def _armed(st: DriftState, prev: DriftState, obs: Observation, settings: LanguageSettings) -> DriftState:
    """A new reference with a baseline: its learned detector armed at once from the baseline, m and phi carried
    over from ``prev`` (``compass/drift/baseline.py``); unchanged (a live burn-in) for a fixed theta, a baseline
    of other buckets than P_ref, or an empty one."""
    base = np.asarray(obs.baseline, dtype=np.float64)
    if detector_mode(settings) == "fixed" or base.shape != np.shape(obs.p_ref):
        return st
    queries_now = 0 if obs.new_labels is None else len(obs.new_labels)
    burn = armed_burn_in(st.ref_id, base, *carried_over(prev.threshold, prev.cusum, prev.burn_in, queries_now))
    return st if burn is None else _learned(st, obs, settings, burn)


def _quality(st: DriftState, obs: Observation) -> bool | None:
    """The quality reading for combine(): True once a detection is latched, None with no data at all."""
    if st.quality_alarm or obs.quality:
        return True
    return obs.quality


# ------------------------------------------------------------------------------------------------ transitions


def _detected(st: DriftState, obs: Observation, settings: LanguageSettings, reason: str, js: float,
              view: dict[str, Any]) -> Step:
    """A detection: dispatch at once, or settle first (``settle_s``)."""
    if settings.settle_s <= 0:
        return _dispatch(st, obs, settings, "update", reason, js, **view)
    if reason != "drift":  # guard() started drift's cooldown; a quality alarm starts it here
        st = replace(st, trigger=replace(st.trigger, last_fired_at=obs.now))
    st = replace(st, phase="settling", job={"detected_at": obs.now, "reason": reason, "js": js})
    return Step(st, Action("settle", reason), "settling", js=js, n_samples=obs.n_samples, **view,
                detail=f"{reason} detected; the window is frozen after settle_s {settings.settle_s:g}")


def _dispatch(st: DriftState, obs: Observation, settings: LanguageSettings, kind: str, reason: str,
              js: float | None, detail: str = "", **view: Any) -> Step:
    """Mark ``updating`` with the job ``obs.job_id``; the caller freezes the window and publishes the job."""
    now = obs.now
    detection = st.job if st.phase == "settling" else None
    trigger = st.trigger
    if reason != "drift" and detection is None:  # drift got its state from guard(), a settled one at detection
        trigger = replace(trigger, last_fired_at=now)
    job_kind = "adapter_update" if kind == "update" else kind  # the UpdateJob kinds: adapter_update | recluster
    job = {"job_id": obs.job_id, "kind": job_kind, "reason": reason, "enqueued_at": now, "started_at": None}
    st = replace(st, trigger=trigger, phase="updating", job=job, quality_alarm=False,
                 last_trigger={"at": now, "job_id": obs.job_id, "kind": job_kind, "reason": reason, "js": js},
                 stuck=None if reason == "manual" else st.stuck,
                 cusum=None if st.cusum is None else st.cusum.reset())
    check = "stale_clusters" if kind == "recluster" else reason
    return Step(st, Action(kind, reason, detection), check, js=js, n_samples=obs.n_samples, detail=detail, **view)


def _apply_reports(st: DriftState, reports: tuple[Report, ...], settings: LanguageSettings) -> tuple[DriftState, bool]:
    """Fold the worker's reports into the state; True when a failure just made the language stuck."""
    stuck_now = False
    for ev in reports:
        current = (st.job or {}).get("job_id") if st.phase == "updating" else None
        if ev.type == "adapter_promoted":  # whatever job it came from, a promoted version is news
            st = replace(st, adapter_version=ev.data.get("adapter_version", st.adapter_version), failures=0,
                         retry_at=None, stuck=None, phase="idle" if st.phase == "stuck" else st.phase)
            continue
        if ev.job_id is None or ev.job_id != current:
            continue  # a report of an older job, or of one this replica gave up on
        if ev.type == "update_started":
            st = replace(st, job={**(st.job or {}), "started_at": ev.at})
        elif ev.type == "adapter_rejected":
            st = replace(st, last_update={"at": ev.at, "job_id": ev.job_id, "outcome": "rejected", **ev.data})
        elif ev.type == "update_finished":
            prior = st.last_update or {}
            rejected = (prior.get("job_id") == ev.job_id and prior.get("outcome") == "rejected") or \
                ev.data.get("outcome") == "rejected"  # the worker says so even when its adapter_rejected was lost
            failed = ev.data.get("ok") is False or ev.data.get("outcome") == "failed"
            manual = ev.data.get("outcome") == "manual"  # a recluster job left to ops (daemon.recluster: manual)
            outcome = "rejected" if rejected else "manual" if manual else "failed" if failed else "finished"
            st = replace(st, phase="idle", job=None,
                         last_update={"at": ev.at, "job_id": ev.job_id, "outcome": outcome, **ev.data})
            if outcome in ("finished", "manual"):  # the cooldown runs from the worker's finish; waiting for ops
                # is no failure (no backoff, never stuck); a promotion or a re-fit re-arms via a new P_ref
                st = replace(st, trigger=st.trigger.updated(ev.at), failures=0, retry_at=None)
            else:
                st, stuck_now = _failure(st, ev.at, outcome, ev.job_id, ev.data, settings)
    return st, stuck_now


def _failure(st: DriftState, at: float, outcome: str, job_id: str | None, data: Mapping[str, Any],
             settings: LanguageSettings) -> tuple[DriftState, bool]:
    """An update that did not promote: re-arm with backoff, or stuck after max_rejections in a row."""
    failures = st.failures + 1
    last = st.last_update if (st.last_update or {}).get("job_id") == job_id and job_id is not None else \
        {"at": at, "job_id": job_id, "outcome": outcome, **data}
    trigger = replace(st.trigger, armed=True)  # retry_at holds the next update back, not the cooldown
    if failures >= settings.max_rejections:
        reason = (f"{failures} updates in a row did not promote (last: {outcome}); resume with POST "
                  "/v1/languages/<lang>/resume after fixing the cause, or trigger an update by hand")
        return replace(st, failures=failures, trigger=trigger, last_update=last, phase="stuck",
                       stuck={"at": at, "reason": reason, "outcome": outcome}, retry_at=None), True
    return replace(st, failures=failures, trigger=trigger, last_update=last,
                   retry_at=at + settings.backoff_s(failures)), False


__all__ = ["ACTIONS", "PHASES", "Action", "Decision", "DriftState", "Limits", "Observation", "Report", "Step",
           "detector_mode", "detector_view", "step"]
