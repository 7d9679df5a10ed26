"""The drift daemon: per language, on a schedule and under a lease, read -> step -> fenced write -> dispatch.

Every decision (the worker's reports, disabled, paused, updating and its timeout, resume of a stuck language,
manual trigger, stuck, settling, stale clusters, reference problems, a new reference, the detectors, the backoff
after unsuccessful updates, the quality rule) is made by the pure ``compass.drift.lifecycle.step``; read its
module docstring for the rules and the check states. This module does the I/O around it. One check of
language ``l`` (``Daemon.check``):

  1. lease     hold (or renew) ``l``'s lease; another replica holds it -> ``standby``
  2. read      an ``Observation`` of ``l``: the worker's reports queued in its inbox (daemon/scheduler/dispatch.py), the
               ``paused`` key, the ``force`` and ``resume`` keys an operator set (read and cleared, GETDEL), the
               window (infra/window.py) with the cluster ids of the queries since the last check (the
               ``seen`` cursor), P_ref (infra/reference.py: ``missing``, ``bad``, or a ``mismatch`` of codebook
               lineage or bucket count, logged once on entry; its adapter_version is its identity, a new one is
               a new baseline), the noise share; and only when the check gets as far as the stale rule: the far
               share (``daemon/scheduler/farshare.py``, with >= min_samples) and, for a window compared with P_ref, the
               quality signal (values RPUSHed to ``{prefix}:{l}:quality``, e.g. the NLL of sampled queries, fed to
               a river ADWIN / Page-Hinkley detector in this process: a detection since the last check; a restart
               or another replica starts a fresh detector)
  3. step      ``lifecycle.step(state, observation, settings, limits)`` -> the new state, an action, the check's
               state (``CheckResult.state``)
  4. write     ``{prefix}:{l}:status`` (scheduler/state.py) with the lease's fencing token: a newer holder wins, the
               check reports ``standby`` and hands the reports and operator requests it took back to the inbox
  5. dispatch  ``update`` / ``recluster``: freeze the window (``snapshot:<job_id>``), then publish drift_detected
               (or recluster_needed), the job on compass.jobs and update_enqueued; a failed publish reverts the
               state (the reports and operator requests go back for the next check) -> ``dispatch_failed``.
               ``stuck``: ``language_stuck`` on compass.events and an error in the log (resume with
               ``POST /v1/languages/<l>/resume`` or ``Daemon.resume``). ``settle``: nothing to publish.

Redis keys of ``l`` besides the window's: ``ref`` (infra/reference.py), ``status``, ``inbox``
(scheduler/dispatch.py), ``paused``, ``force``, ``resume``, ``quality``, ``snapshot:<job_id>`` (the frozen window a
job refers to) and ``history:js`` / ``history:events`` (infra/history.py: what the status page draws; every
check but those in ``UNMEASURED_STATES`` appends its reading).

Unserved languages (``Daemon.check_unserved``, scheduled every ``check_interval_s`` like the languages): under the
lease ``{prefix}:{unserved}:lease``, read the unserved counts of the last ``daemon.emerging_horizon_s``
(infra/unserved.py), decide per language with the pure ``compass.drift.emerging.decide``, write the episodes
fenced to ``{prefix}:{unserved}:emerging``, then publish ``language_emerging`` once per episode (a failed publish
reverts that language's episode, so a later check publishes it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from compass.config import LanguagesConfig, LanguageSettings, ServiceConfig
from compass.drift.emerging import (
    EmergingSettings,
    EmergingState,
    Reading,
    decide,
    how_to_serve,
    readings,
    states_from_json,
    states_to_json,
)
from compass.drift.lifecycle import Limits, Observation, Report, Step, detector_mode, detector_view, step
from compass.drift.quality import QualitySignal
from compass.embed.base import Embedder
from daemon.scheduler import stale
from daemon.scheduler.dispatch import Dispatcher, EventInbox, drain_inbox, requeue_inbox
from daemon.scheduler.explain import LabelCache, explain_window, top_clusters
from daemon.scheduler.farshare import FarShareFn, RecentFarShare
from daemon.scheduler.state import LanguagesSource, LanguageStatus, effective_threshold, languages_source
from infra import history
from infra.clients import REDIS_ERRORS, redis_client
from infra.lock import LanguageLease
from infra.messages import Event, UpdateJob
from infra.reference import BadReference, Reference, get_reference
from infra.unserved import TAG as UNSERVED
from infra.unserved import UnservedReading, UnservedStore
from infra.window import WindowSnapshot, WindowStore, lineage_of

log = logging.getLogger(__name__)

# check states not recorded in the JS history (infra/history.py): nothing was decided on the window
UNMEASURED_STATES = frozenset({"standby", "disabled", "paused", "updating", "error"})
# what the lifecycle's step says of an empty window that got past its early rules (reports ... settling)
PAST_EARLY_RULES = frozenset({"no_reference", "bad_reference", "codebook_mismatch", "insufficient_samples"})
_JOB_KIND = {"update": "adapter_update", "recluster": "recluster"}  # lifecycle action -> UpdateJob.kind
EVENT_SAMPLE_IDS = 10  # sample query ids carried by a language_emerging event
VIEW_SAMPLE_IDS = 5  # ... and shown per unserved language by the API and the status page

__all__ = ["CheckResult", "Daemon", "DaemonMetrics", "FarShareFn", "LanguageStatus", "RecentFarShare",
           "UnservedCheck"]


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
class _Read:
    """One check's reading of a language: the lifecycle's observation and what dispatch needs besides."""

    obs: Observation
    snap: WindowSnapshot
    ref: Reference | None
    drained: list[Event]  # the inbox reports taken for ``obs.reports``


class DaemonMetrics:
    """Prometheus metrics of one daemon, in its own registry (two daemons in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checks = Counter("compass_daemon_checks", "checks by language and outcome state",
                              ["lang", "state"], registry=r)
        self.jobs = Counter("compass_daemon_jobs", "jobs enqueued", ["lang", "kind"], registry=r)
        self.errors = Counter("compass_daemon_errors", "errors kept from crashing the daemon",
                              ["lang", "kind"], registry=r)
        self.js = Gauge("compass_daemon_js_bits", "last JS(P_ref || P_mon) in bits (eq. 5)", ["lang"], registry=r)
        self.fill = Gauge("compass_daemon_window_fill_ratio", "window size / window_size", ["lang"], registry=r)
        self.noise = Gauge("compass_daemon_noise_share", "noise-bucket share of the window", ["lang"], registry=r)
        self.updating = Gauge("compass_daemon_updating", "1 while a job is out", ["lang"], registry=r)
        self.stuck = Gauge("compass_daemon_stuck", "1 while the language is stuck (no automatic update until ops "
                           "resume it)", ["lang"], registry=r)
        self.threshold = Gauge("compass_daemon_threshold", "effective threshold of the language's detector (JS bits; "
                               "nats for the sequential detector)", ["lang"], registry=r)
        self.failures = Gauge("compass_daemon_failures", "updates in a row that did not promote", ["lang"],
                              registry=r)
        self.seconds = Histogram("compass_daemon_check_seconds", "duration of one language check", registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
        self.ready = Gauge("compass_daemon_ready", "1 while the service answered the last readiness probe (/readyz), "
                           "by service (redis, kafka)", ["service"], registry=r)
        self.unserved_share = Gauge("compass_daemon_unserved_share", "share of all queries over "
                                    "daemon.emerging_horizon_s of a language no configured adapter serves (und: "
                                    "undetermined)", ["lang"], registry=r)
        self.unserved_queries = Gauge("compass_daemon_unserved_queries", "queries over daemon.emerging_horizon_s of "
                                      "an unserved language", ["lang"], registry=r)
        self.emerging = Gauge("compass_daemon_language_emerging", "1 while an unserved language is in an emerging "
                              "episode (language_emerging published, not re-armed)", ["lang"], registry=r)


class Daemon:
    """Checks every enabled language of ``languages`` every ``daemon.check_interval_s`` seconds."""

    def __init__(
        self,
        config: ServiceConfig,
        languages: LanguagesConfig | LanguagesSource,
        *,
        owner: str | None = None,
        client: redis.Redis | None = None,
        dispatcher: Dispatcher | None = None,
        far_share: FarShareFn | None = None,
        embedder: Embedder | None = None,
    ):
        """``languages``: a ``LanguagesConfig`` (held as is) or anything with a ``current`` LanguagesConfig and
        optionally ``maybe_reload()`` (``daemon.scheduler.reload.ReloadingLanguages``: a file, hot reloaded).
        ``far_share``: measures the far share of a language (default ``RecentFarShare``, with ``embedder`` or,
        built on first use, ``compass.embed.make_embedder(config.embedder)``)."""
        self.config = config
        self.dcfg = config.daemon
        self.prefix = config.redis.key_prefix
        self.languages = languages_source(languages)
        self.client = client or redis_client(config.redis)
        c = config.consumer
        self.windows = WindowStore(self.client, self.prefix, store_texts=c.store_texts, recent_max=c.recent_max,
                                   recent_ttl_s=c.recent_ttl_s)
        self.dispatcher = dispatcher or Dispatcher(config.kafka)
        self.far_share: FarShareFn = far_share or RecentFarShare(config, self.windows, self.client, embedder)
        self.unserved = UnservedStore(self.client, self.prefix, bucket_s=c.unserved_bucket_s,
                                      retention_s=self.dcfg.emerging_horizon_s, samples_max=c.unserved_samples_max,
                                      samples_ttl_s=c.recent_ttl_s)
        self._unserved_gauged: set[str] = set()  # languages with unserved gauges set (zeroed once gone)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.inbox: EventInbox | None = None
        self.scheduler: Any = None
        self._leases: dict[str, LanguageLease] = {}
        self._lang_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._mismatch_logged: set[str] = set()
        self._far_failed: dict[str, str] = {}  # lang -> the last far-share failure logged (warned once per change)
        self._quality: dict[str, QualitySignal] = {}  # the quality detectors (languages.yaml quality_signal)
        self.labels = LabelCache(c.codebook_dir)  # the codebooks' cluster labels, for explanations

    @property
    def limits(self) -> Limits:
        """The service-wide limits of the lifecycle (``daemon.*``)."""
        d = self.dcfg
        return Limits(update_timeout_s=d.update_timeout_s, stale_noise_share=d.stale_noise_share,
                      stale_far_share=d.stale_far_share)

    # ------------------------------------------------------------------ keys and small state

    def key(self, lang: str, name: str) -> str:
        return f"{self.prefix}:{{{lang}}}:{name}"

    def _lease(self, lang: str) -> LanguageLease:
        with self._guard:
            if lang not in self._leases:
                self._leases[lang] = LanguageLease(self.client, lang, self.owner, self.dcfg.lease_ttl_ms, self.prefix)
                self._lang_locks[lang] = threading.Lock()
            return self._leases[lang]

    def status(self, lang: str) -> LanguageStatus:
        return LanguageStatus.from_json(self.client.get(self.key(lang, "status")))

    def is_paused(self, lang: str) -> bool:
        return bool(self.client.exists(self.key(lang, "paused")))

    def pause(self, lang: str) -> None:
        self.client.set(self.key(lang, "paused"), json.dumps({"at": time.time(), "by": self.owner}))

    def resume(self, lang: str) -> bool:
        """Un-pause ``lang`` and, when it is stuck, resume it on its next check (failures cleared, trigger armed).
        True when it was stuck."""
        self.client.delete(self.key(lang, "paused"))
        stuck = self.status(lang).phase == "stuck"
        if stuck:
            self.client.set(self.key(lang, "resume"), json.dumps({"at": time.time(), "by": self.owner}))
        return stuck

    def request_trigger(self, lang: str) -> None:
        """Ask the replica holding ``lang``'s lease to fire on its next check (read and cleared there)."""
        self.client.set(self.key(lang, "force"), json.dumps({"at": time.time(), "by": self.owner}))

    def cancel_trigger(self, lang: str) -> None:
        self.client.delete(self.key(lang, "force"))

    def reload(self) -> bool:
        """Pick up a changed languages config when its source reloads (scheduler/reload.py: an invalid file keeps the
        config in force); False for a config held as given."""
        maybe_reload = getattr(self.languages, "maybe_reload", None)
        return bool(maybe_reload()) if callable(maybe_reload) else False

    # ------------------------------------------------------------------ the check

    def check(self, lang: str, now: float | None = None) -> CheckResult:
        """One check of ``lang`` at ``now`` (unix seconds). Never raises: failures are logged and counted."""
        now = time.time() if now is None else now
        started = time.perf_counter()
        lease = self._lease(lang)
        try:
            with self._lang_locks[lang]:  # the scheduler and an API trigger must not interleave one language
                result = self._check(lang, now, lease)
        except Exception as e:  # Redis down, a bad stored value, ...: keep the daemon alive
            log.exception("check of %s failed", lang)
            self.metrics.errors.labels(lang, type(e).__name__).inc()
            result = CheckResult(lang, "error", detail=f"{type(e).__name__}: {e}")
        self.metrics.seconds.observe(time.perf_counter() - started)
        self.metrics.checks.labels(lang, result.state).inc()
        if result.js is not None:
            self.metrics.js.labels(lang).set(result.js)
        return result

    def _check(self, lang: str, now: float, lease: LanguageLease) -> CheckResult:
        token = lease.hold()
        if token is None:
            return CheckResult(lang, "standby", detail=f"lease held by {lease.holder()}")
        settings = self.languages.current.get(lang)
        before = self.status(lang)
        read = self._read(lang, now, settings, before)
        out = step(before.drift, read.obs, settings, self.limits)
        self._log_updates(lang, before, out)
        st = LanguageStatus(out.state, None, read.snap.seen)
        if out.action.kind in _JOB_KIND:
            return self._dispatch(lang, lease, token, before, st, out, settings, read)
        result = CheckResult(lang, out.check, js=out.js, n_samples=out.n_samples, detail=out.detail)
        if not self._write(lease, token, st, result, out, settings, read):
            self._give_back(lang, read)
            return CheckResult(lang, "standby", detail="lease lost during the check; a newer holder acts")
        if read.obs.forced and out.check != "manual":
            log.info("%s: manual trigger not honoured (%s); ask again when the language can update", lang, out.check)
        if out.action.kind == "stuck":
            self._emit_stuck(lang, st, now)
        elif out.action.kind == "settle":
            log.info("%s: %s detected (JS %s); settling %g s before freezing the window", lang, out.action.reason,
                     out.js, settings.settle_s)
        return self._finish(lang, st, result)

    def _log_updates(self, lang: str, before: LanguageStatus, out: Step) -> None:
        """An update that ended on this check, in the log (a timeout also counted as an error)."""
        last = out.state.last_update or {}
        if not last or last == before.last_update or last.get("job_id") is None:
            return
        if last.get("outcome") == "timeout":
            log.warning("%s: job %s had no update_finished within daemon.update_timeout_s %.0f s; given up on",
                        lang, last.get("job_id"), self.dcfg.update_timeout_s)
            self.metrics.errors.labels(lang, "update_timeout").inc()
        elif before.phase == "updating" and out.state.phase != "updating":
            log.info("%s: update %s %s (%d unsuccessful in a row)", lang, last.get("job_id"), last.get("outcome"),
                     out.state.failures)

    # ------------------------------------------------------------------ read

    def _read(self, lang: str, now: float, settings: LanguageSettings, before: LanguageStatus) -> _Read:
        """The observation of one check (module docstring, step 2); the job id a dispatch would use is made here."""
        drained = drain_inbox(self.client, lang, self.prefix)
        snap = self.windows.snapshot(lang, since=before.seen or 0)
        self.metrics.fill.labels(lang).set(snap.size / settings.window_size)
        ref, reference, detail = self._reference(lang, snap)
        noise = stale.noise_share(snap.counts) if snap.size else None
        if noise is not None:
            self.metrics.noise.labels(lang).set(noise)
        obs = Observation(
            now=now, counts=snap.counts, p_ref=np.asarray(ref.probs) if reference == "ok" and ref else None,
            ref_id=ref.adapter_version if ref else None, reference=reference, reference_detail=detail,
            new_labels=snap.tail, noise_share=noise,
            reports=tuple(Report(e.type, e.job_id, e.at, e.data) for e in drained),
            forced=self.client.getdel(self.key(lang, "force")) is not None,
            resume=self.client.getdel(self.key(lang, "resume")) is not None,
            paused=self.is_paused(lang), job_id=f"{lang}-{int(now * 1000)}-{uuid.uuid4().hex[:6]}",
        )
        # The far share embeds texts and the quality detector consumes its values: only for a check that gets as
        # far as the stale rule, as before the lifecycle. The pure step on an empty window tells: it then ends at
        # the reference rules or on the empty window, past every rule before the stale one.
        probe = step(before.drift, replace(obs, counts=None, new_labels=None, noise_share=None), settings,
                     self.limits)
        if probe.check in PAST_EARLY_RULES:
            far = self._far_share(lang, snap) if snap.size >= settings.min_samples else None
            compared = reference == "ok" and snap.size > 0
            quality = self._quality_reading(lang, settings) if compared else None
            obs = replace(obs, far_share=far, quality=quality)
        return _Read(obs, snap, ref, drained)

    def _reference(self, lang: str, snap: WindowSnapshot) -> tuple[Reference | None, str, str]:
        """P_ref and whether the window can be compared with it: ok, missing, bad or mismatch, and why not."""
        try:
            ref = get_reference(self.client, lang, self.prefix)
        except BadReference as e:
            self.metrics.errors.labels(lang, "bad_reference").inc()
            log.error("%s", e)
            return None, "bad", str(e)
        if ref is None:
            return None, "missing", f"no P_ref at {self.key(lang, 'ref')}; set one with `compass ref set`"
        mismatch = self._comparable(ref, snap)
        if mismatch:
            if lang not in self._mismatch_logged:
                log.warning("%s: codebook_mismatch, not compared: %s", lang, mismatch)
                self._mismatch_logged.add(lang)
            return ref, "mismatch", mismatch
        self._mismatch_logged.discard(lang)
        return ref, "ok", ""

    @staticmethod
    def _comparable(ref: Reference, snap: WindowSnapshot) -> str:
        """"" when the window can be compared with P_ref, else why not."""
        if snap.codebook_version is None:
            return ""  # no window yet: insufficient_samples, not a mismatch
        # a revision (eq. 2 moved centroids) keeps the cluster ids of its lineage: still comparable
        if lineage_of(snap.codebook_version) != lineage_of(ref.codebook_version):
            return (f"window codebook {snap.codebook_version!r} != reference codebook {ref.codebook_version!r} "
                    f"(adapter {ref.adapter_version!r}), another lineage; P_ref must be rebuilt with the window's "
                    "codebook")
        if len(snap.counts) != ref.n_buckets:
            return (f"window has {len(snap.counts)} buckets but P_ref has {ref.n_buckets} for codebook "
                    f"{ref.codebook_version!r}; rewrite P_ref with the codebook's bucket count")
        return ""

    def _far_share(self, lang: str, snap: WindowSnapshot) -> float | None:
        """The far share, or None (unknown) when not measured; a failure is logged, counted, never raised."""
        if self.dcfg.stale_far_max_texts == 0:
            return None
        try:
            share = self.far_share(lang, snap)
        except Exception as e:  # an embedder outage, a missing codebook: the JS check goes on
            problem = f"{type(e).__name__}: {e}"
            level = logging.DEBUG if self._far_failed.get(lang) == problem else logging.WARNING
            log.log(level, "%s: far share not measured: %s", lang, problem)
            self._far_failed[lang] = problem
            self.metrics.errors.labels(lang, "far_share").inc()
            return None
        self._far_failed.pop(lang, None)
        if share is not None and not 0.0 <= share <= 1.0:
            log.error("%s: far share %r outside [0, 1] ignored", lang, share)
            self.metrics.errors.labels(lang, "far_share").inc()
            return None
        return share

    def _quality_reading(self, lang: str, settings: LanguageSettings) -> bool | None:
        """Feed what producers pushed to ``{prefix}:{lang}:quality`` (RPUSH of numbers, e.g. NLL or a feedback
        score) into the language's detector: True on a detection, False with data and none, None without a signal
        configured or any data yet (or when the signal fails: logged, counted, never raised)."""
        if settings.quality_signal == "none":
            self._quality.pop(lang, None)
            return None
        try:
            signal = self._quality.get(lang)
            if signal is None or signal.kind != settings.quality_signal:
                signal = self._quality[lang] = QualitySignal(settings.quality_signal)
            values = []
            for item in self.client.lpop(self.key(lang, "quality"), 10_000) or []:
                try:
                    value = float(item)
                except (TypeError, ValueError):
                    value = math.nan
                if math.isfinite(value):
                    values.append(value)
                else:
                    self.metrics.errors.labels(lang, "quality_value").inc()
            detected = signal.feed(values)
        except Exception as e:  # the JS check must go on whatever the quality path does
            self.metrics.errors.labels(lang, "quality").inc()
            log.warning("%s: quality signal unavailable (%s); JS decides alone this check", lang, e)
            return None
        if detected:
            return True
        return False if signal.n_seen else None

    # ------------------------------------------------------------------ write

    def _write(self, lease: LanguageLease, token: int, st: LanguageStatus, result: CheckResult, out: Step,
               settings: LanguageSettings, read: _Read) -> bool:
        """Record the check in ``st.last_check`` and write ``st`` fenced; False when a newer holder has written."""
        obs, snap = read.obs, read.snap
        threshold = out.threshold if out.threshold is not None else effective_threshold(st.drift, settings, snap.size)
        st.last_check = {"at": obs.now, "state": result.state, "js": result.js, "n_samples": result.n_samples,
                         "theta": settings.theta, "detail": result.detail, "detector": detector_mode(settings),
                         "statistic": out.statistic, "threshold": threshold, "noise_share": obs.noise_share,
                         "far_share": obs.far_share, "size": snap.size, "codebook_version": snap.codebook_version}
        if settings.quality_signal != "none":
            st.last_check.update(quality=obs.quality, quality_alarm=st.drift.quality_alarm)
        return lease.fenced_set("status", st.to_json(), token)

    def _finish(self, lang: str, st: LanguageStatus, result: CheckResult) -> CheckResult:
        """Metrics and the status page's history of a written check."""
        m, d = self.metrics, st.drift
        m.updating.labels(lang).set(1 if d.phase == "updating" else 0)
        m.stuck.labels(lang).set(1 if d.phase == "stuck" else 0)
        m.failures.labels(lang).set(d.failures)
        threshold = (st.last_check or {}).get("threshold")
        if threshold is not None:
            m.threshold.labels(lang).set(threshold)
        if result.state not in UNMEASURED_STATES:
            try:  # a failure there never changes the check's outcome
                history.record_check(self.client, lang, st.last_check or {}, self.prefix, cap=self.dcfg.history_js_max)
            except Exception as e:
                log.warning("%s: JS history not recorded: %s", lang, e)
                self.metrics.errors.labels(lang, "history").inc()
        return result

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, lang: str, lease: LanguageLease, token: int, before: LanguageStatus, st: LanguageStatus,
                  out: Step, settings: LanguageSettings, read: _Read) -> CheckResult:
        """Freeze the window, write ``updating`` (fenced), then publish; a failed publish reverts the check."""
        obs, snap, ref, action = read.obs, read.snap, read.ref, out.action
        job_id, now, kind = obs.job_id, obs.now, _JOB_KIND[action.kind]
        snapshot_key = self.key(lang, f"snapshot:{job_id}")
        ids = [qid for qid, _ in self.windows.recent(lang, limit=snap.size)] if snap.size else []
        frozen = {"counts": snap.counts.tolist(), "size": snap.size, "codebook_version": snap.codebook_version,
                  "offsets": snap.offsets, "ids": ids, "created_at": now}
        self.client.set(snapshot_key, json.dumps(frozen), ex=self.dcfg.snapshot_ttl_s)
        st.drift = replace(st.drift, job={**(st.drift.job or {}), "snapshot_key": snapshot_key})
        job = UpdateJob(
            job_id=job_id, kind=kind, language=lang, codebook_version=snap.codebook_version,
            adapter_version=ref.adapter_version if ref else None, snapshot_key=snapshot_key, js=out.js,
            theta=settings.theta, reason=action.reason, n_samples=snap.size, created_at=now,
            noise_share=obs.noise_share, far_share=obs.far_share,
        )
        result = CheckResult(lang, out.check, fired=True, job=job, js=out.js, n_samples=snap.size, detail=out.detail)
        if not self._write(lease, token, st, result, out, settings, read):
            self.client.delete(snapshot_key)
            self._give_back(lang, read)
            return CheckResult(lang, "standby", js=out.js, n_samples=snap.size, detail="lease lost before dispatch")
        mode = detector_mode(settings)
        statistic = out.statistic if out.statistic is not None or mode == "sequential" else out.js
        data = {"js": out.js, "theta": settings.theta, "threshold": st.last_check["threshold"],  # type: ignore[index]
                "statistic": statistic, "detector": mode, "n_samples": snap.size, "reason": action.reason,
                "kind": kind, "codebook_version": snap.codebook_version, "noise_share": job.noise_share,
                "far_share": job.far_share, "top_clusters": self._top_clusters(ref, snap)}
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
            return self._revert(lang, lease, token, before, out, settings, read, str(e))
        try:
            self.dispatcher.emit(Event("update_enqueued", lang, now, job_id, {"kind": kind, "reason": action.reason,
                                                                              "snapshot_key": snapshot_key}))
        except Exception as e:  # the job is out; only the notice is missing
            log.error("%s: job %s enqueued but update_enqueued not published: %s", lang, job_id, e)
            self.metrics.errors.labels(lang, "event").inc()
        self.metrics.jobs.labels(lang, kind).inc()
        log.info("%s: %s job %s enqueued (reason %s, JS %s, n %d)%s", lang, kind, job_id, action.reason, out.js,
                 snap.size, f": {out.detail}" if out.detail else "")
        return self._finish(lang, st, result)

    def _top_clusters(self, ref: Reference | None, snap: WindowSnapshot) -> list[dict[str, Any]]:
        """The clusters that contribute most to JS, for the event; [] when not comparable (never raises)."""
        try:
            return top_clusters(explain_window(ref, snap, self.labels.get(snap.codebook_version)))
        except Exception as e:  # the job goes out without it
            log.warning("top clusters not computed: %s", e)
            return []

    def explain(self, lang: str, top: int = 5) -> dict[str, Any]:
        """Which clusters drive JS(P_ref || window) now, with their labels (daemon/scheduler/explain.py)."""
        snap = self.windows.snapshot(lang)
        try:
            ref = get_reference(self.client, lang, self.prefix)
            return explain_window(ref, snap, self.labels.get(snap.codebook_version), top=top,
                                  examples=self.config.codebook.store_examples)
        except Exception as e:  # a bad P_ref, a damaged window: the rest of describe() still answers
            return {**explain_window(None, snap, None), "reason": f"{type(e).__name__}: {e}"}

    def _revert(self, lang: str, lease: LanguageLease, token: int, before: LanguageStatus, out: Step,
                settings: LanguageSettings, read: _Read, why: str) -> CheckResult:
        """Back to the state before the check: its reports, manual trigger and resume go back for the next one."""
        self._give_back(lang, read)
        st = LanguageStatus(before.drift, None, before.seen)
        result = CheckResult(lang, "dispatch_failed", js=out.js, n_samples=read.snap.size, detail=why)
        self._write(lease, token, st, result, replace(out, statistic=None, threshold=None), settings, read)
        return self._finish(lang, st, result)

    def _give_back(self, lang: str, read: _Read) -> None:
        """Hand what a check took and did not act on (reports, a manual trigger, a resume) to the next check, this
        replica's or the newer lease holder's."""
        obs = read.obs
        requeue_inbox(self.client, lang, self.prefix, read.drained)
        for name, asked in (("force", obs.forced), ("resume", obs.resume)):
            if asked:
                self.client.set(self.key(lang, name), json.dumps({"at": obs.now, "by": self.owner, "requeued": True}))

    def _emit_stuck(self, lang: str, st: LanguageStatus, now: float) -> None:
        """``language_stuck`` on compass.events, an error in the log."""
        stuck, last = st.stuck or {}, st.last_update or {}
        log.error("%s: stuck: %s", lang, stuck.get("reason"))
        data = {"reason": stuck.get("reason"), "failures": st.failures, "outcome": stuck.get("outcome")}
        try:
            self.dispatcher.emit(Event("language_stuck", lang, now, last.get("job_id"), data))
        except Exception as e:
            log.error("%s: language_stuck not published: %s", lang, e)
            self.metrics.errors.labels(lang, "event").inc()

    # ------------------------------------------------------------------ unserved languages

    @property
    def emerging_settings(self) -> EmergingSettings:
        d = self.dcfg
        return EmergingSettings(d.emerging_share, d.emerging_min_count, d.emerging_rearm_ratio)

    def emerging_states(self) -> dict[str, EmergingState]:
        """The episodes of the unserved languages as last written (``{prefix}:{unserved}:emerging``)."""
        key = self.unserved.key("emerging")
        return states_from_json(self.client.get(key), key)

    def check_unserved(self, now: float | None = None) -> UnservedCheck:
        """One check of the unserved languages at ``now`` (module docstring). Never raises: failures are logged."""
        now = time.time() if now is None else now
        lease = self._lease(UNSERVED)
        try:
            with self._lang_locks[UNSERVED]:
                return self._check_unserved(now, lease)
        except Exception as e:
            log.exception("check of the unserved languages failed")
            self.metrics.errors.labels("", "unserved").inc()
            return UnservedCheck("error", {}, detail=f"{type(e).__name__}: {e}")

    def _check_unserved(self, now: float, lease: LanguageLease) -> UnservedCheck:
        token = lease.hold()
        if token is None:
            return UnservedCheck("standby", {}, detail=f"lease held by {lease.holder()}")
        settings, horizon = self.emerging_settings, self.dcfg.emerging_horizon_s
        reading = self.unserved.read(now, horizon)
        before = self.emerging_states()
        configured = set(self.languages.current.enabled)
        by_lang = readings(reading.counts, reading.served)
        steps = {lang: decide(before.get(lang, EmergingState()), by_lang.get(lang, Reading(lang, 0, reading.total)),
                              settings, configured=lang in configured, now=now)
                 for lang in sorted(set(by_lang) | set(before))}
        after = {lang: st.state for lang, st in steps.items() if st.state != EmergingState()}
        if not lease.fenced_set("emerging", states_to_json(after), token):
            return UnservedCheck("standby", {}, detail="lease lost during the check; a newer holder acts")
        emitted, failed = [], []
        for lang, st in steps.items():
            if not st.emit:
                continue
            r = by_lang[lang]
            data = {"share": r.share, "count": r.count, "total": r.total, "horizon_s": horizon,
                    "emerging_share": settings.share, "emerging_min_count": settings.min_count,
                    "sample_ids": self.unserved.samples(lang, EVENT_SAMPLE_IDS), "how": how_to_serve(lang)}
            try:
                self.dispatcher.emit(Event("language_emerging", lang, now, None, data))
                emitted.append(lang)
                log.warning("%s: emerging unserved language: %d of %d queries (%.2f%%) over %d s; to serve it: %s",
                            lang, r.count, r.total, 100 * r.share, horizon, how_to_serve(lang))
            except Exception as e:  # not announced: the episode is taken back so a later check announces it
                log.error("%s: language_emerging not published (%s); retried on a later check", lang, e)
                self.metrics.errors.labels(lang, "event").inc()
                failed.append(lang)
        if failed:
            for lang in failed:
                if lang in before:
                    after[lang] = before[lang]
                else:
                    after.pop(lang, None)
            lease.fenced_set("emerging", states_to_json(after), token)
        self._gauge_unserved(by_lang, after, configured)
        return UnservedCheck("checked", {lang: st.check for lang, st in steps.items()}, tuple(emitted),
                             f"{reading.total} queries over {horizon} s, {reading.served} served")

    def _gauge_unserved(self, by_lang: dict[str, Reading], states: dict[str, EmergingState],
                        configured: set[str]) -> None:
        m, shown = self.metrics, {lang for lang in set(by_lang) | set(states) if lang not in configured}
        for lang in shown | self._unserved_gauged:
            r = by_lang.get(lang)
            m.unserved_share.labels(lang).set(r.share if r and lang in shown else 0.0)
            m.unserved_queries.labels(lang).set(r.count if r and lang in shown else 0)
            m.emerging.labels(lang).set(1 if lang in shown and lang in states and states[lang].active else 0)
        self._unserved_gauged = shown

    def describe_unserved(self, now: float | None = None) -> dict[str, Any]:
        """What on-call reads about unserved languages: per language (not configured now) its queries and share over
        the horizon, its count since the start, its episode and the step that starts serving it."""
        now = time.time() if now is None else now
        settings, horizon = self.emerging_settings, self.dcfg.emerging_horizon_s
        reading: UnservedReading = self.unserved.read(now, horizon)
        states = self.emerging_states()
        configured = set(self.languages.current.enabled)
        by_lang = readings(reading.counts, reading.served)
        rows = []
        for lang in sorted((set(by_lang) | set(reading.totals) | set(states)) - configured):
            r, state = by_lang.get(lang, Reading(lang, 0, reading.total)), states.get(lang, EmergingState())
            st = decide(state, r, settings, configured=False, now=now)
            rows.append({"language": lang, "count": r.count, "share": r.share,
                         "total_count": reading.totals.get(lang, 0),
                         "status": "emerging" if state.active or st.emit else st.check, "emerging": state.active,
                         "since": state.since if state.active else None, "episodes": state.episodes,
                         "sample_ids": self.unserved.samples(lang, VIEW_SAMPLE_IDS), "how": how_to_serve(lang)})
        rows.sort(key=lambda row: (-row["share"], row["language"]))
        return {"horizon_s": horizon, "emerging_share": settings.share, "emerging_min_count": settings.min_count,
                "rearm_below": settings.rearm_below, "served": reading.served, "total": reading.total,
                "languages": rows}

    # ------------------------------------------------------------------ views for the API

    def describe(self, lang: str) -> dict[str, Any]:
        """What on-call reads about one language: window fill, JS, the detector and its effective threshold, state,
        stuck or backing off, adapter version, last trigger."""
        settings = self.languages.current.get(lang)
        st = self.status(lang)
        snap = self.windows.snapshot(lang)
        try:
            ref = get_reference(self.client, lang, self.prefix)
            ref_view = None if ref is None else {"adapter_version": ref.adapter_version,
                                                 "codebook_version": ref.codebook_version,
                                                 "created_at": ref.created_at}
        except BadReference as e:
            ref_view = {"error": str(e)}
        last = st.last_check or {}
        detector = detector_view(st.drift, settings, last.get("statistic"), last.get("threshold"))
        if detector["effective_threshold"] is None:  # never checked since the lifecycle: what it would use now
            detector["effective_threshold"] = effective_threshold(st.drift, settings, snap.size)
        paused = self.is_paused(lang)
        return {
            "language": lang,
            "enabled": settings.enabled and lang in self.languages.current.languages,
            "paused": paused,
            "state": "paused" if paused else st.phase if st.phase in ("updating", "stuck") else last.get("state"),
            "phase": st.phase,
            "window": {"size": snap.size, "window_size": settings.window_size,
                       "fill": snap.size / settings.window_size, "codebook_version": snap.codebook_version},
            "js": last.get("js"),
            "theta": settings.theta,
            "effective_threshold": detector["effective_threshold"],
            "detector": detector,
            "rearm_below": settings.rearm_below,
            "min_samples": settings.min_samples,
            "cooldown_s": settings.cooldown_s,
            "armed": st.trigger.armed,
            "failures": st.failures,
            "retry_at": st.retry_at,
            "stuck": st.stuck,
            "noise_share": last.get("noise_share"),
            "reference": ref_view,
            "adapter_version": st.adapter_version or (ref_view or {}).get("adapter_version"),
            "job": st.job,
            "last_check": st.last_check,
            "last_trigger": st.last_trigger,
            "last_update": st.last_update,
            "lease_holder": self._lease(lang).holder(),
            "explanation": self.explain(lang),
        }

    def known_languages(self) -> list[str]:
        return sorted(set(self.languages.current.languages) | set(self.windows.languages()))

    def ready(self) -> dict[str, str]:
        """Problems per service ("ok" when reachable): Redis by PING, Kafka by a metadata request."""
        out = {}
        try:
            self.client.ping()
            out["redis"] = "ok"
        except REDIS_ERRORS as e:
            out["redis"] = f"unreachable: {e}"
        try:
            self.dispatcher.producer.partitions_for(self.config.kafka.jobs_topic)
            out["kafka"] = "ok"
        except Exception as e:
            out["kafka"] = f"unreachable: {e}"
        for service, state in out.items():
            self.metrics.ready.labels(service).set(1 if state == "ok" else 0)
        return out

    # ------------------------------------------------------------------ scheduling

    def poll_events(self, timeout_ms: int = 200) -> int:
        """Queue the worker's reports from compass.events into the inboxes (the next check applies them)."""
        if self.inbox is None:
            self.inbox = EventInbox(self.config.kafka, self.dcfg.events_group_id, self.client, self.prefix,
                                    events_max=self.dcfg.history_events_max,
                                    max_failures=self.dcfg.max_message_failures, auto_offset_reset="earliest")
        try:
            return self.inbox.poll(timeout_ms)
        except Exception as e:
            log.error("polling %s failed: %s", self.config.kafka.events_topic, e)
            self.metrics.errors.labels("", "events_poll").inc()
            return 0

    def _tick(self) -> None:
        """Reload languages.yaml when changed (or on SIGHUP) and keep one check job per enabled language."""
        try:
            self.reload()
        except Exception:
            log.exception("languages reload failed; keeping the config in force")
        self._sync_jobs()

    def _sync_jobs(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        wanted = {f"check:{lang}": lang for lang in self.languages.current.enabled}
        have = {job.id for job in self.scheduler.get_jobs() if job.id.startswith("check:")}
        for job_id in have - set(wanted):
            self.scheduler.remove_job(job_id)
            self._release(job_id.removeprefix("check:"))
        for job_id in set(wanted) - have:
            every = IntervalTrigger(seconds=self.dcfg.check_interval_s)
            self.scheduler.add_job(self.check, every, args=[wanted[job_id]], id=job_id, max_instances=1,
                                   coalesce=True, next_run_time=_utcnow())

    def start(self, interval_s: float | None = None) -> None:
        """Run the checks in a background scheduler (APScheduler); ``interval_s`` overrides check_interval_s."""
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        if interval_s is not None:
            self.dcfg = self.dcfg.model_copy(update={"check_interval_s": interval_s})
        self.scheduler = BackgroundScheduler(timezone="UTC")
        tick = min(5.0, self.dcfg.check_interval_s)
        self.scheduler.add_job(self._tick, IntervalTrigger(seconds=tick), id="tick", max_instances=1, coalesce=True)
        self.scheduler.add_job(self.poll_events, IntervalTrigger(seconds=self.dcfg.events_poll_s), id="events",
                               max_instances=1, coalesce=True)
        self.scheduler.add_job(self.check_unserved, IntervalTrigger(seconds=self.dcfg.check_interval_s),
                               id="unserved", max_instances=1, coalesce=True, next_run_time=_utcnow())
        self.scheduler.start()
        self._sync_jobs()
        log.info("daemon %s checking %d language(s) every %.1f s", self.owner, len(self.languages.current.enabled),
                 self.dcfg.check_interval_s)

    def _release(self, lang: str) -> None:
        lease = self._leases.get(lang)
        if lease is not None and lease.token is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                lease.release()  # another replica takes over at once instead of after the TTL

    def stop(self) -> None:
        """Stop the scheduler (waiting for running checks), hand back the leases, close the clients."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        for lang in list(self._leases):
            self._release(lang)
        if self.inbox is not None:
            self.inbox.close()
            self.inbox = None
        self.dispatcher.close()
        close = getattr(self.far_share, "close", None)
        if callable(close):
            close()


def _utcnow():
    from datetime import UTC, datetime

    return datetime.now(UTC)
