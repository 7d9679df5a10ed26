"""Step 4 of a check, write: ``{prefix}:{lang}:status`` (scheduler/state.py) with the lease's fencing token.

A newer lease holder wins: the write fails and the check hands the reports and operator requests it took back to
the next check (``give_back``), this replica's or the newer holder's. A written check updates the language's
gauges and, unless nothing was decided on the window (``UNMEASURED_STATES``), appends its reading to the JS history
the status page draws (infra/history.py).

A check round (``LanguageCheck.check_round``) writes all its languages' statuses in one pipeline of the same fenced
script (``write_many``) and appends all their readings in one MULTI (``finish_many``): the same writes, two round
trips per round instead of two per language.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from compass.drift import inflow
from compass.drift.lifecycle import Step, detector_mode
from compass.languages import LanguageSettings
from daemon.scheduler.dispatch import requeue_inbox
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.results import UNMEASURED_STATES, CheckResult, Reading
from daemon.scheduler.state import LanguageStatus, effective_threshold
from infra import history
from infra.keys import Keys
from infra.lock import LanguageLease
from infra.window import WindowSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """One language's check of a round, stepped and recorded, waiting for its fenced write."""

    lang: str
    lease: LanguageLease
    token: int
    st: LanguageStatus
    result: CheckResult
    out: Step
    settings: LanguageSettings
    read: Reading


class StatusWriter:
    """Writes checks fenced and records them (metrics, history); hands back what a check did not act on."""

    def __init__(self, client: redis.Redis, prefix: str, keys: Keys, owner: str,
                 metrics: DaemonMetrics, history_cap: int):
        self.client = client
        self.prefix = prefix
        self.keys = keys
        self.owner = owner
        self.metrics = metrics
        self.history_cap = history_cap  # daemon.history_js_max

    def write(self, lease: LanguageLease, token: int, st: LanguageStatus, result: CheckResult, out: Step,
              settings: LanguageSettings, read: Reading) -> bool:
        """Record the check in ``st.last_check`` and write ``st`` fenced; False when a newer holder has written."""
        self.record(st, result, out, settings, read)
        return lease.fenced_set("status", st.to_json(), token)

    def write_many(self, pending: Sequence[Pending]) -> list[bool | Exception]:
        """``write`` of every check of ``pending`` (already ``record``ed) in one pipeline; per check True when
        written, False when a newer holder has written, or the exception its write raised."""
        with self.client.pipeline(transaction=False) as pipe:
            for p in pending:
                p.lease.queue_fenced_set(pipe, "status", p.st.to_json(), p.token)
            replies = pipe.execute(raise_on_error=False)
        return [r if isinstance(r, Exception) else bool(r) for r in replies]

    def record(self, st: LanguageStatus, result: CheckResult, out: Step, settings: LanguageSettings,
               read: Reading) -> None:
        """The check's reading in ``st.last_check``: what ``write`` stores."""
        obs, snap = read.obs, read.snap
        threshold = out.threshold if out.threshold is not None else effective_threshold(st.drift, settings, snap.size)
        st.last_check = {"at": obs.now, "state": result.state, "js": result.js, "n_samples": result.n_samples,
                         "theta": settings.theta, "detail": result.detail, "detector": detector_mode(settings),
                         "statistic": out.statistic, "threshold": threshold, "noise_share": obs.noise_share,
                         "far_share": obs.far_share, "size": snap.size, "codebook_version": snap.codebook_version,
                         **window_rates(snap, read.inflow)}
        if settings.quality_signal != "none":
            st.last_check.update(quality=obs.quality, quality_alarm=st.drift.quality_alarm)

    def finish(self, lang: str, st: LanguageStatus, result: CheckResult) -> CheckResult:
        """Metrics and the status page's history of a written check."""
        self._gauges(lang, st)
        if result.state not in UNMEASURED_STATES:
            try:  # a failure there never changes the check's outcome
                history.record_check(self.client, lang, st.last_check or {}, self.prefix, cap=self.history_cap)
            except Exception as e:
                self._not_recorded(lang, e)
        return result

    def finish_many(self, written: Sequence[tuple[str, LanguageStatus, CheckResult]]) -> None:
        """``finish`` of every written check of a round (lang, status, result), the history appends in one MULTI."""
        rows = []
        with self.client.pipeline(transaction=True) as pipe:
            for lang, st, result in written:
                self._gauges(lang, st)
                if result.state not in UNMEASURED_STATES:
                    try:
                        history.queue_check(pipe, lang, st.last_check or {}, self.prefix, cap=self.history_cap)
                        rows.append(lang)
                    except Exception as e:  # a reading that cannot be stored: nothing queued for it
                        self._not_recorded(lang, e)
            if not rows:
                return
            try:
                replies = pipe.execute(raise_on_error=False)
            except Exception as e:  # Redis down: no reading of the round recorded
                replies = [e, e] * len(rows)
        for i, lang in enumerate(rows):  # two commands per reading: RPUSH, LTRIM
            failed = next((r for r in replies[2 * i:2 * i + 2] if isinstance(r, Exception)), None)
            if failed is not None:
                self._not_recorded(lang, failed)

    def _gauges(self, lang: str, st: LanguageStatus) -> None:
        m, d = self.metrics, st.drift
        m.of(m.updating, lang).set(1 if d.phase == "updating" else 0)
        m.of(m.stuck, lang).set(1 if d.phase == "stuck" else 0)
        m.of(m.failures, lang).set(d.failures)
        threshold = (st.last_check or {}).get("threshold")
        if threshold is not None:
            m.of(m.threshold, lang).set(threshold)

    def _not_recorded(self, lang: str, e: Exception) -> None:
        log.warning("%s: JS history not recorded: %s", lang, e)
        self.metrics.errors.labels(lang, "history").inc()

    def give_back(self, lang: str, read: Reading) -> None:
        """Hand what a check took and did not act on (reports, a manual trigger, a resume) to the next check, this
        replica's or the newer lease holder's."""
        obs = read.obs
        requeue_inbox(self.client, lang, self.prefix, read.drained)
        for name, asked in (("force", obs.forced), ("resume", obs.resume)):
            if asked:
                self.client.set(self.keys.language(lang, name),
                                json.dumps({"at": obs.now, "by": self.owner, "requeued": True}))


def window_rates(snap: WindowSnapshot, flow: inflow.Inflow | None) -> dict[str, float | None]:
    """What the status shows of the window's pace: the sampling rate it was filled at (its meta), its inflow in
    queries/s, the seconds its queries span, and the language's own query rate (the inflow undoing the sampling).
    Sampling stretches the span, not the JS null (compass/drift/inflow.py)."""
    qps = flow.qps if flow is not None else None
    rate = snap.sampling_rate
    return {"sampling_rate": rate, "inflow_qps": qps, "window_span_s": inflow.window_span_s(snap.size, qps),
            "traffic_qps": inflow.traffic_qps(qps, rate) if 0.0 < rate <= 1.0 else None}
