"""Step 5 of a check, dispatch: publish what the lifecycle decided.

``update`` / ``recluster``: freeze the window (``{prefix}:{lang}:snapshot:<job_id>``, the frozen window a job refers
to), write ``updating`` fenced, then publish drift_detected (or recluster_needed), the job on compass.jobs and
update_enqueued; a failed publish reverts the check (its reports and operator requests go back for the next one)
-> ``dispatch_failed``. ``stuck``: ``language_stuck`` on compass.events and an error in the log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import redis

from compass.drift.lifecycle import Step, detector_mode
from compass.languages import LanguageSettings
from daemon.scheduler.dispatch import Dispatcher
from daemon.scheduler.explain import LabelCache, explain_window, top_clusters
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.results import CheckResult, Reading
from daemon.scheduler.state import LanguageStatus
from daemon.scheduler.write import StatusWriter
from infra.keys import Keys
from infra.lock import LanguageLease
from infra.messages import Event, UpdateJob
from infra.reference import Reference
from infra.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)

JOB_KIND = {"update": "adapter_update", "recluster": "recluster"}  # lifecycle action -> UpdateJob.kind


class Publisher:
    """Publishes a check's job (or its language_stuck) through the ``Dispatcher``."""

    def __init__(self, client: redis.Redis, keys: Keys, windows: WindowStore,
                 dispatcher: Dispatcher, writer: StatusWriter, metrics: DaemonMetrics, labels: LabelCache,
                 snapshot_ttl_s: int):
        self.client = client
        self.keys = keys
        self.windows = windows
        self.dispatcher = dispatcher
        self.writer = writer
        self.metrics = metrics
        self.labels = labels
        self.snapshot_ttl_s = snapshot_ttl_s

    def dispatch(self, lang: str, lease: LanguageLease, token: int, before: LanguageStatus, st: LanguageStatus,
                 out: Step, settings: LanguageSettings, read: Reading) -> CheckResult:
        """Freeze the window, write ``updating`` (fenced), then publish; a failed publish reverts the check."""
        obs, snap, ref, action = read.obs, read.snap, read.ref, out.action
        job_id, now, kind = obs.job_id, obs.now, JOB_KIND[action.kind]
        snapshot_key = self.keys.snapshot(lang, job_id)
        ids = [qid for qid, _ in self.windows.recent(lang, limit=snap.size)] if snap.size else []
        frozen = {"counts": snap.counts.tolist(), "size": snap.size, "codebook_version": snap.codebook_version,
                  "offsets": snap.offsets, "ids": ids, "created_at": now}
        self.client.set(snapshot_key, json.dumps(frozen), ex=self.snapshot_ttl_s)
        st.drift = replace(st.drift, job={**(st.drift.job or {}), "snapshot_key": snapshot_key})
        job = UpdateJob(
            job_id=job_id, kind=kind, language=lang, codebook_version=snap.codebook_version,
            adapter_version=ref.adapter_version if ref else None, snapshot_key=snapshot_key, js=out.js,
            theta=settings.theta, reason=action.reason, n_samples=snap.size, created_at=now,
            noise_share=obs.noise_share, far_share=obs.far_share,
        )
        result = CheckResult(lang, out.check, fired=True, job=job, js=out.js, n_samples=snap.size, detail=out.detail)
        if not self.writer.write(lease, token, st, result, out, settings, read):
            self.client.delete(snapshot_key)
            self.writer.give_back(lang, read)
            return CheckResult(lang, "standby", js=out.js, n_samples=snap.size, detail="lease lost before dispatch")
        mode = detector_mode(settings)
        statistic = out.statistic if out.statistic is not None or mode == "sequential" else out.js
        data = {"js": out.js, "theta": settings.theta, "threshold": st.last_check["threshold"],  # type: ignore[index]
                "statistic": statistic, "detector": mode, "n_samples": snap.size, "reason": action.reason,
                "kind": kind, "codebook_version": snap.codebook_version, "noise_share": job.noise_share,
                "far_share": job.far_share, "top_clusters": self.top_clusters(ref, snap)}
        if action.detection is not None:
            data.update(detected_at=action.detection.get("detected_at"), detected_js=action.detection.get("js"))
        first = "recluster_needed" if kind == "recluster" else "drift_detected"
        try:
            self.dispatcher.emit(Event(first, lang, now, job_id, data))
            self.dispatcher.send_job(job)
        except Exception as e:
            log.error("%s: could not publish job %s (%s); the check is reverted and retried on a later one", lang,
                      job_id, e)
            self.metrics.errors.labels(lang, "dispatch").inc()
            self.client.delete(snapshot_key)
            return self.revert(lang, lease, token, before, out, settings, read, str(e))
        try:
            self.dispatcher.emit(Event("update_enqueued", lang, now, job_id, {"kind": kind, "reason": action.reason,
                                                                              "snapshot_key": snapshot_key}))
        except Exception as e:  # the job is out; only the notice is missing
            log.error("%s: job %s enqueued but update_enqueued not published: %s", lang, job_id, e)
            self.metrics.errors.labels(lang, "event").inc()
        self.metrics.jobs.labels(lang, kind).inc()
        log.info("%s: %s job %s enqueued (reason %s, JS %s, n %d)%s", lang, kind, job_id, action.reason, out.js,
                 snap.size, f": {out.detail}" if out.detail else "")
        return self.writer.finish(lang, st, result)

    def revert(self, lang: str, lease: LanguageLease, token: int, before: LanguageStatus, out: Step,
               settings: LanguageSettings, read: Reading, why: str) -> CheckResult:
        """Back to the state before the check: its reports, manual trigger and resume go back for the next one."""
        self.writer.give_back(lang, read)
        st = LanguageStatus(before.drift, None, before.seen)
        result = CheckResult(lang, "dispatch_failed", js=out.js, n_samples=read.snap.size, detail=why)
        self.writer.write(lease, token, st, result, replace(out, statistic=None, threshold=None), settings, read)
        return self.writer.finish(lang, st, result)

    def top_clusters(self, ref: Reference | None, snap: WindowSnapshot) -> list[dict[str, Any]]:
        """The clusters that contribute most to JS, for the event; [] when not comparable (never raises)."""
        try:
            return top_clusters(explain_window(ref, snap, self.labels.get(snap.codebook_version)))
        except Exception as e:  # the job goes out without it
            log.warning("top clusters not computed: %s", e)
            return []

    def emit_stuck(self, lang: str, st: LanguageStatus, now: float) -> None:
        """``language_stuck`` on compass.events, an error in the log."""
        stuck, last = st.stuck or {}, st.last_update or {}
        log.error("%s: stuck: %s", lang, stuck.get("reason"))
        data = {"reason": stuck.get("reason"), "failures": st.failures, "outcome": stuck.get("outcome")}
        try:
            self.dispatcher.emit(Event("language_stuck", lang, now, last.get("job_id"), data))
        except Exception as e:
            log.error("%s: language_stuck not published: %s", lang, e)
            self.metrics.errors.labels(lang, "event").inc()
