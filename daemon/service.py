"""The drift daemon: per-language checks of eq. 6 on a schedule, under a per-language lease, with dispatch.

One check of language ``l`` (``Daemon.check``), in order; the first step that ends the check names its state:

  1. lease      hold (or renew) ``l``'s lease; another replica holds it -> ``standby``
  2. inbox      apply the worker's reports queued for ``l`` (update_started / update_finished / adapter_*)
  3. disabled   ``enabled: false`` in languages.yaml -> ``disabled``
  4. paused     an operator paused ``l`` (POST .../pause) -> ``paused``
  5. updating   a job is out: ``updating``, until update_finished or ``daemon.update_timeout_s`` (then re-armed)
  6. manual     an operator asked for an update (POST .../trigger) -> fires ``manual``
  7. stale      noise (or far) share past its level with >= min_samples -> ``stale_clusters``: recluster job
                (far share: ``RecentFarShare``, the language's recent texts embedded against the window's codebook)
  8. reference  no P_ref -> ``no_reference``; unreadable -> ``bad_reference``; its codebook lineage differs
                from the window's (or its bucket count) -> ``codebook_mismatch`` (logged once on entry; no
                event: the window was re-clustered after the adapter's cycle, so P_ref must be rebuilt with the new
                codebook: by the worker after its re-clustering job, or by ops with ``compass ref set`` or a
                manual trigger, which step 6 honours even here)
  9. trigger    JS(P_ref || P_mon) in bits (eq. 5) through ``compass.drift.decide`` (eq. 6, min_samples,
                hysteresis, cooldown) -> its reason; ``drift`` fires an adapter update
 10. quality    with ``quality_signal`` set (languages.yaml), values RPUSHed to ``{prefix}:{l}:quality`` (NLL of
                sampled queries, a feedback score) feed a river ADWIN / Page-Hinkley detector; ``combine: any``
                also fires on a quality alarm alone (state ``quality``, after decide() let the check through
                to ``below_threshold``); ``combine: all`` holds a JS drift as ``awaiting_quality`` until the
                quality signal agrees (no quality data yet: JS alone decides)
 11. settling   with ``settle_s`` > 0 a drift (or quality) detection does not freeze the window at once: the
                language is ``settling`` for settle_s (trigger state and cooldown as if fired), and the first check
                after that freezes the window, now holding more post-shift queries, and dispatches the job
                (drift_detected, update_enqueued). Without it, an update trained right after a shift learns a
                window that still mixes old and new traffic, and the next window drifts from that P_ref again
                (compass simulate --update-lag: a second, redundant update per shift at theta 0.15 for ja/ko/zh)

State of ``l`` lives in Redis (``{prefix}:{l}:status``, JSON, written with the lease's fencing token), so a
restart or another replica continues it. A new P_ref (its adapter_version changed) re-arms the trigger: the
hysteresis guards one reference, a new adapter is a new baseline.

Redis keys of ``l`` besides the window's: ``ref`` (daemon/reference.py), ``status``, ``inbox``
(daemon/dispatch.py), ``paused``, ``force``, ``quality``, ``snapshot:<job_id>`` (the frozen window a job
refers to) and ``history:js`` / ``history:events`` (daemon/history.py: what the status page draws; every check
past step 5 appends its reading).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from compass.config import LanguageSettings, ServiceConfig
from compass.divergence import js_divergence
from compass.drift import TriggerState, decide
from compass.drift.quality import QualitySignal, combine
from compass.embed.base import Embedder
from consumers.clients import REDIS_ERRORS, redis_client
from consumers.codebook import Codebook, CodebookStore
from consumers.window import WindowSnapshot, WindowStore, lineage_of
from daemon import history, stale
from daemon.dispatch import Dispatcher, EventInbox, drain_inbox
from daemon.lock import LanguageLease
from daemon.messages import Event, UpdateJob
from daemon.reference import BadReference, Reference, get_reference
from daemon.reload import ReloadingLanguages

log = logging.getLogger(__name__)

# check states that end before JS is computed (not recorded in the JS history of daemon/history.py)
UNMEASURED_STATES = frozenset({"standby", "disabled", "paused", "updating", "error"})

# far share of a language's recent points: (lang, window snapshot) -> share in [0, 1], or None when unmeasured
FarShareFn = Callable[[str, WindowSnapshot], float | None]


class RecentFarShare:
    """The default ``FarShareFn`` (paper §6.1): the share of ``lang``'s recent texts (at most
    ``daemon.stale_far_max_texts``, from the window store) whose embeddings lie farther from every centroid of the
    window's codebook than its calibrated distance (``daemon.stale_distance_quantile`` of the training distances,
    consumers/codebook.py). None (unknown) when the window keeps no texts (``consumer.store_texts: false``) or the
    codebook has no calibration; each such reason is logged once per language. Other failures raise, for the
    daemon to log and count. The embedder (``compass.embed.make_embedder``) is built on first use, once."""

    def __init__(self, config: ServiceConfig, windows: WindowStore, client: redis.Redis,
                 embedder: Embedder | None = None):
        self.dcfg = config.daemon
        self.embedder_config = config.embedder
        self.windows = windows
        self.store = CodebookStore(config.consumer.codebook_dir, client, config.redis.key_prefix)
        self._embedder = embedder
        self._lock = threading.Lock()  # checks of several languages run in parallel; one embedder, one codebook
        self._codebook: Codebook | None = None  # the last one loaded: windows of a lineage share it
        self._logged: set[tuple[str, str]] = set()

    def __call__(self, lang: str, snap: WindowSnapshot) -> float | None:
        if snap.codebook_version is None or self.dcfg.stale_far_max_texts == 0:
            return None
        texts = [t for _, t in self.windows.recent(lang, limit=self.dcfg.stale_far_max_texts) if t]
        if not texts:
            self._once(lang, "no_texts", "%s: far share unknown: no recent texts in the window store (with "
                       "consumer.store_texts false only ids are kept); only the noise share is measured", lang)
            return None
        with self._lock:
            codebook = self._load(snap.codebook_version)
            q = self.dcfg.stale_distance_quantile
            radius = codebook.calibrated_distance(q)
            if radius is None:
                self._once(lang, f"uncalibrated:{codebook.version}",
                           "%s: far share unknown: codebook %s has no calibrated distance for quantile %s "
                           "(distance_quantiles %s); rebuild it with `compass codebook build`, or set "
                           "daemon.stale_distance_quantile to a recorded quantile", lang, codebook.version, q,
                           codebook.distance_quantiles)
                return None
            embedder = self._embedder_()
            codebook.check_model(embedder.model_id)
            X = embedder.encode(texts)
        return stale.share_beyond(codebook.nearest_distances(X), radius)

    def close(self) -> None:
        close = getattr(self._embedder, "close", None)
        if callable(close):
            close()

    def _load(self, version: str) -> Codebook:
        if self._codebook is None or self._codebook.version != version:
            self._codebook = self.store.load(version)
        return self._codebook

    def _embedder_(self) -> Embedder:
        if self._embedder is None:
            from compass.embed import make_embedder

            self._embedder = make_embedder(self.embedder_config)
        return self._embedder

    def _once(self, lang: str, what: str, msg: str, *args: Any) -> None:
        if (lang, what) not in self._logged:
            self._logged.add((lang, what))
            log.warning(msg, *args)


@dataclass
class LanguageStatus:
    """What the daemon remembers of one language between checks (Redis ``{prefix}:{lang}:status``)."""

    trigger: TriggerState = field(default_factory=TriggerState)
    phase: str = "idle"  # idle | settling | updating
    job: dict[str, Any] | None = None  # the job out: job_id, kind, reason, enqueued_at, started_at, snapshot_key;
    # while settling: detected_at, reason, js (the detection)
    ref_adapter_version: str | None = None  # adapter of the P_ref the trigger state belongs to
    adapter_version: str | None = None  # last promoted adapter reported by the worker
    last_check: dict[str, Any] | None = None
    last_trigger: dict[str, Any] | None = None
    last_update: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "trigger": self.trigger.to_dict()})

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> LanguageStatus:
        if raw is None:
            return cls()
        obj = json.loads(raw)
        obj["trigger"] = TriggerState.from_dict(obj.get("trigger") or {})
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CheckResult:
    lang: str
    state: str  # see the module docstring
    fired: bool = False
    job: UpdateJob | None = None
    js: float | None = None
    n_samples: int = 0
    detail: str = ""


class DaemonMetrics:
    """Prometheus metrics of one daemon, in its own registry (two daemons in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checks = Counter("compass_daemon_checks", "checks by language and outcome state",
                              ["language", "state"], registry=r)
        self.jobs = Counter("compass_daemon_jobs", "jobs enqueued", ["language", "kind"], registry=r)
        self.errors = Counter("compass_daemon_errors", "errors kept from crashing the daemon",
                              ["language", "kind"], registry=r)
        self.js = Gauge("compass_daemon_js_bits", "last JS(P_ref || P_mon) in bits (eq. 5)", ["language"], registry=r)
        self.fill = Gauge("compass_daemon_window_fill_ratio", "window size / window_size", ["language"], registry=r)
        self.noise = Gauge("compass_daemon_noise_share", "noise-bucket share of the window", ["language"], registry=r)
        self.updating = Gauge("compass_daemon_updating", "1 while a job is out", ["language"], registry=r)
        self.seconds = Histogram("compass_daemon_check_seconds", "duration of one language check", registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))


class Daemon:
    """Checks every enabled language of ``languages_path`` every ``daemon.check_interval_s`` seconds."""

    def __init__(
        self,
        config: ServiceConfig,
        languages_path: str | Path,
        *,
        owner: str | None = None,
        client: redis.Redis | None = None,
        dispatcher: Dispatcher | None = None,
        far_share: FarShareFn | None = None,
        embedder: Embedder | None = None,
    ):
        """``far_share``: measures the far share of a language (default ``RecentFarShare``, with ``embedder``
        or, built on first use, ``compass.embed.make_embedder(config.embedder)``)."""
        self.config = config
        self.dcfg = config.daemon
        self.prefix = config.redis.key_prefix
        self.languages = ReloadingLanguages(languages_path)
        self.client = client or redis_client(config.redis)
        c = config.consumer
        self.windows = WindowStore(self.client, self.prefix, store_texts=c.store_texts, recent_max=c.recent_max,
                                   recent_ttl_s=c.recent_ttl_s)
        self.dispatcher = dispatcher or Dispatcher(config.kafka)
        self.far_share: FarShareFn = far_share or RecentFarShare(config, self.windows, self.client, embedder)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.inbox: EventInbox | None = None
        self.scheduler: Any = None
        self._leases: dict[str, LanguageLease] = {}
        self._lang_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._mismatch_logged: set[str] = set()
        self._far_failed: dict[str, str] = {}  # lang -> the last far-share failure logged (warned once per change)
        # The performance-aware signal (languages.yaml quality_signal / combine). Detector state lives in this
        # process: a restart or another replica starts a fresh detector (documented limitation). A detection is
        # latched until the next trigger, since a detector flags one change point, not a lasting state.
        self._quality: dict[str, QualitySignal] = {}
        self._quality_alarm: set[str] = set()

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

    def resume(self, lang: str) -> None:
        self.client.delete(self.key(lang, "paused"))

    def request_trigger(self, lang: str) -> None:
        """Ask the replica holding ``lang``'s lease to fire on its next check (read and cleared there)."""
        self.client.set(self.key(lang, "force"), json.dumps({"at": time.time(), "by": self.owner}))

    def cancel_trigger(self, lang: str) -> None:
        self.client.delete(self.key(lang, "force"))

    def reload(self) -> bool:
        """Pick up a changed languages.yaml (an invalid file keeps the config in force; see daemon/reload.py)."""
        return self.languages.maybe_reload()

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
        st = self.status(lang)
        self._apply_reports(lang, st, now)

        def done(result: CheckResult, **extra: Any) -> CheckResult:
            st.last_check = {"at": now, "state": result.state, "js": result.js, "n_samples": result.n_samples,
                             "theta": settings.theta, "detail": result.detail, **extra}
            if not lease.fenced_set("status", st.to_json(), token):
                return CheckResult(lang, "standby", detail="lease lost during the check; a newer holder acts")
            self.metrics.updating.labels(lang).set(1 if st.phase == "updating" else 0)
            if result.state not in UNMEASURED_STATES:
                self._record_history(lang, st.last_check)
            return result

        if not settings.enabled:
            return done(CheckResult(lang, "disabled"))
        if self.is_paused(lang):
            return done(CheckResult(lang, "paused"))
        if st.phase == "updating":
            enqueued = (st.job or {}).get("enqueued_at", now)
            if now - enqueued <= self.dcfg.update_timeout_s:
                return done(CheckResult(lang, "updating", detail=f"job {(st.job or {}).get('job_id')}"))
            # no report in time: give up on the job; re-armed, the cooldown since the trigger still applies
            log.warning("%s: job %s had no update_finished after %.0f s; clearing `updating`",
                        lang, (st.job or {}).get("job_id"), now - enqueued)
            self.metrics.errors.labels(lang, "update_timeout").inc()
            st.last_update = {"at": now, "job_id": (st.job or {}).get("job_id"), "outcome": "timeout"}
            st.phase, st.job = "idle", None
            st.trigger = replace(st.trigger, armed=True)

        snap = self.windows.snapshot(lang)
        n = snap.size
        self.metrics.fill.labels(lang).set(n / settings.window_size)
        try:
            ref = get_reference(self.client, lang, self.prefix)
            ref_problem = None
        except BadReference as e:
            ref, ref_problem = None, str(e)
            self.metrics.errors.labels(lang, "bad_reference").inc()
            log.error("%s", e)
        comparable = ref is not None and self._comparable(lang, ref, snap) == ""
        js = js_divergence(ref.probs, snap.counts) if comparable and n > 0 else None

        if self.client.getdel(self.key(lang, "force")) is not None:
            return done(self._fire(lang, lease, token, st, settings, snap, ref, js, now, "adapter_update", "manual"))
        if st.phase == "settling":
            detected = st.job or {}
            waited = now - float(detected.get("detected_at", now))
            if waited < settings.settle_s:
                return done(CheckResult(lang, "settling", js=js, n_samples=n,
                                        detail=f"{detected.get('reason')} detected {waited:.0f} s ago (JS "
                                        f"{detected.get('js')}); the window is frozen after settle_s "
                                        f"{settings.settle_s:g}"))
            return done(self._fire(lang, lease, token, st, settings, snap, ref, js, now, "adapter_update",
                                   str(detected.get("reason", "drift"))))

        noise = stale.noise_share(snap.counts) if n > 0 else None
        far = self._far_share(lang, snap) if n >= settings.min_samples else None
        reading = stale.assess(noise, far, self.dcfg.stale_noise_share, self.dcfg.stale_far_share)
        if noise is not None:
            self.metrics.noise.labels(lang).set(noise)
        extra = {"noise_share": noise, "far_share": far, "size": n, "codebook_version": snap.codebook_version}
        if reading.stale and n >= settings.min_samples and not self._cooling(st.trigger, settings, now):
            log.warning("%s: stale clusters (%s); enqueueing a re-clustering job", lang, reading.why)
            return done(self._fire(lang, lease, token, st, settings, snap, ref, js, now, "recluster",
                                   "stale_clusters", reading), **extra)

        if ref_problem is not None:
            return done(CheckResult(lang, "bad_reference", n_samples=n, detail=ref_problem), **extra)
        if ref is None:
            return done(CheckResult(lang, "no_reference", n_samples=n,
                                    detail=f"no P_ref at {self.key(lang, 'ref')}; set one with `compass ref set`"),
                        **extra)
        mismatch = self._comparable(lang, ref, snap)
        if mismatch:
            if lang not in self._mismatch_logged:
                log.warning("%s: codebook_mismatch, not compared: %s", lang, mismatch)
                self._mismatch_logged.add(lang)
            return done(CheckResult(lang, "codebook_mismatch", n_samples=n, detail=mismatch), **extra)
        self._mismatch_logged.discard(lang)
        if ref.adapter_version != st.ref_adapter_version:
            st.trigger = replace(st.trigger, armed=True)  # a new reference is a new baseline
            st.ref_adapter_version = ref.adapter_version
        if js is None:  # empty window: no P_mon (eq. 4)
            return done(CheckResult(lang, "insufficient_samples", n_samples=0), **extra)
        decision = decide(js, n, settings, st.trigger, now)
        quality = self._quality_reading(lang, settings)
        if settings.quality_signal != "none":
            extra["quality_alarm"] = quality
        if decision.fire and not combine(True, quality, settings.combine):
            # rule "all": JS drifted but the quality stream shows no degradation; stay armed and wait for both
            return done(CheckResult(lang, "awaiting_quality", js=js, n_samples=n,
                                    detail="JS above theta; rule 'all' waits for the quality signal"), **extra)
        st.trigger = decision.state
        if decision.fire:
            self._quality_alarm.discard(lang)
            return done(self._detect(lang, lease, token, st, settings, snap, ref, js, now, "drift"), **extra)
        if decision.reason == "below_threshold" and settings.combine == "any" and quality:
            # the quality signal alone fires; min_samples, hysteresis and cooldown were honoured by decide()
            self._quality_alarm.discard(lang)
            return done(self._detect(lang, lease, token, st, settings, snap, ref, js, now, "quality"), **extra)
        return done(CheckResult(lang, decision.reason, js=js, n_samples=n), **extra)

    def _record_history(self, lang: str, reading: dict[str, Any]) -> None:
        """Append the check to the status page's JS history; a failure there never changes the check's outcome."""
        try:
            # the cap: DaemonConfig.history_js_max where the config defines it
            history.record_check(self.client, lang, reading, self.prefix,
                                 cap=self.dcfg.history_js_max)
        except Exception as e:
            log.warning("%s: JS history not recorded: %s", lang, e)
            self.metrics.errors.labels(lang, "history").inc()

    def _quality_reading(self, lang: str, settings: LanguageSettings) -> bool | None:
        """Feed what producers pushed to ``{prefix}:{lang}:quality`` (RPUSH of numbers, e.g. NLL or a feedback
        score) into the language's detector. None: no signal configured or no data yet; never raises."""
        if settings.quality_signal == "none":
            self._quality.pop(lang, None)
            return None
        try:
            signal = self._quality.get(lang)
            if signal is None or signal.kind != settings.quality_signal:
                signal = self._quality[lang] = QualitySignal(settings.quality_signal)
            raw = self.client.lpop(self.key(lang, "quality"), 10_000) or []
            values = []
            for item in raw:
                try:
                    value = float(item)
                except (TypeError, ValueError):
                    value = math.nan
                if math.isfinite(value):
                    values.append(value)
                else:
                    self.metrics.errors.labels(lang, "quality_value").inc()
            if signal.feed(values):
                self._quality_alarm.add(lang)
        except Exception as e:  # the JS check must go on whatever the quality path does
            self.metrics.errors.labels(lang, "quality").inc()
            log.warning("%s: quality signal unavailable (%s); JS decides alone this check", lang, e)
            return None
        if lang in self._quality_alarm:
            return True
        return False if signal.n_seen else None

    def _comparable(self, lang: str, ref: Reference, snap: WindowSnapshot) -> str:
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

    def _cooling(self, trig: TriggerState, settings: LanguageSettings, now: float) -> bool:
        since = max((t for t in (trig.last_fired_at, trig.last_update_at) if t is not None), default=None)
        return since is not None and now - since < settings.cooldown_s

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

    # ------------------------------------------------------------------ reports from the worker

    def _apply_reports(self, lang: str, st: LanguageStatus, now: float) -> None:
        current = (st.job or {}).get("job_id")
        for ev in drain_inbox(self.client, lang, self.prefix):
            if ev.type == "adapter_promoted":
                st.adapter_version = ev.data.get("adapter_version", st.adapter_version)
                continue
            if ev.job_id != current:
                log.info("%s: ignored %s for job %s (waiting on %s)", lang, ev.type, ev.job_id, current)
                continue
            if ev.type == "update_started" and st.job is not None:
                st.job["started_at"] = ev.at
            elif ev.type == "adapter_rejected":
                st.last_update = {"at": ev.at, "job_id": ev.job_id, "outcome": "rejected", **ev.data}
            elif ev.type == "update_finished":
                prior = st.last_update or {}
                rejected = prior.get("job_id") == ev.job_id and prior.get("outcome") == "rejected"
                st.last_update = {"at": ev.at, "job_id": ev.job_id, "outcome": "rejected" if rejected else "finished",
                                  **ev.data}
                st.phase, st.job = "idle", None
                st.trigger = st.trigger.updated(ev.at)  # the cooldown runs from the worker's finish
                log.info("%s: update %s finished; cooldown starts", lang, ev.job_id)

    # ------------------------------------------------------------------ dispatch

    def _detect(self, lang: str, lease: LanguageLease, token: int, st: LanguageStatus, settings: LanguageSettings,
                snap: WindowSnapshot, ref: Reference | None, js: float | None, now: float, reason: str) -> CheckResult:
        """A drift or quality detection: dispatch at once, or start settling (step 11 of the module doc)."""
        if settings.settle_s <= 0:
            return self._fire(lang, lease, token, st, settings, snap, ref, js, now, "adapter_update", reason)
        if reason != "drift":  # decide() started drift's cooldown; a quality alarm starts it here
            st.trigger = replace(st.trigger, last_fired_at=now)
        st.phase, st.job = "settling", {"detected_at": now, "reason": reason, "js": js}
        log.info("%s: %s detected (JS %s); settling %g s before freezing the window", lang, reason, js,
                 settings.settle_s)
        return CheckResult(lang, "settling", js=js, n_samples=snap.size,
                           detail=f"{reason} detected; the window is frozen after settle_s {settings.settle_s:g}")

    def _fire(
        self,
        lang: str,
        lease: LanguageLease,
        token: int,
        st: LanguageStatus,
        settings: LanguageSettings,
        snap: WindowSnapshot,
        ref: Reference | None,
        js: float | None,
        now: float,
        kind: str,
        reason: str,
        reading: stale.StaleReading | None = None,
    ) -> CheckResult:
        """Freeze the window, mark ``updating`` (fenced), then publish; a failed publish reverts the mark."""
        job_id = f"{lang}-{int(now * 1000)}-{uuid.uuid4().hex[:6]}"
        snapshot_key = self.key(lang, f"snapshot:{job_id}")
        ids = [qid for qid, _ in self.windows.recent(lang, limit=snap.size)] if snap.size else []
        frozen = {"counts": snap.counts.tolist(), "size": snap.size, "codebook_version": snap.codebook_version,
                  "offsets": snap.offsets, "ids": ids, "created_at": now}
        self.client.set(snapshot_key, json.dumps(frozen), ex=self.dcfg.snapshot_ttl_s)
        job = UpdateJob(
            job_id=job_id, kind=kind, language=lang, codebook_version=snap.codebook_version,
            adapter_version=ref.adapter_version if ref else None, snapshot_key=snapshot_key, js=js,
            theta=settings.theta, reason=reason, n_samples=snap.size, created_at=now,
            noise_share=reading.noise_share if reading else stale.noise_share(snap.counts) if snap.size else None,
            far_share=reading.far_share if reading else None,
        )
        before = LanguageStatus.from_json(st.to_json())
        detection = st.job if st.phase == "settling" else None
        if reason != "drift" and detection is None:  # drift got its state from decide(), a settled one at detection
            st.trigger = replace(st.trigger, last_fired_at=now)
        st.phase = "updating"
        st.job = {"job_id": job_id, "kind": kind, "reason": reason, "enqueued_at": now, "started_at": None,
                  "snapshot_key": snapshot_key}
        st.last_trigger = {"at": now, "job_id": job_id, "kind": kind, "reason": reason, "js": js}
        if not lease.fenced_set("status", st.to_json(), token):
            self.client.delete(snapshot_key)
            return CheckResult(lang, "standby", js=js, n_samples=snap.size, detail="lease lost before dispatch")
        first = "recluster_needed" if kind == "recluster" else "drift_detected"
        data = {"js": js, "theta": settings.theta, "n_samples": snap.size, "reason": reason, "kind": kind,
                "codebook_version": snap.codebook_version, "noise_share": job.noise_share, "far_share": job.far_share}
        if detection is not None:
            data.update(detected_at=detection.get("detected_at"), detected_js=detection.get("js"))
        try:
            self.dispatcher.emit(Event(first, lang, now, job_id, data))
            self.dispatcher.send_job(job)
        except Exception as e:
            log.error("%s: could not publish job %s (%s); `updating` reverted, retried on a later check", lang,
                      job_id, e)
            self.metrics.errors.labels(lang, "dispatch").inc()
            st.__dict__.update(before.__dict__)
            lease.fenced_set("status", st.to_json(), token)
            self.client.delete(snapshot_key)
            return CheckResult(lang, "dispatch_failed", js=js, n_samples=snap.size, detail=str(e))
        try:
            self.dispatcher.emit(Event("update_enqueued", lang, now, job_id, {"kind": kind, "reason": reason,
                                                                              "snapshot_key": snapshot_key}))
        except Exception as e:  # the job is out; only the notice is missing
            log.error("%s: job %s enqueued but update_enqueued not published: %s", lang, job_id, e)
            self.metrics.errors.labels(lang, "event").inc()
        self.metrics.jobs.labels(lang, kind).inc()
        log.info("%s: %s job %s enqueued (reason %s, JS %s, n %d)", lang, kind, job_id, reason, js, snap.size)
        state = "stale_clusters" if kind == "recluster" else reason
        return CheckResult(lang, state, fired=True, job=job, js=js, n_samples=snap.size)

    # ------------------------------------------------------------------ views for the API

    def describe(self, lang: str) -> dict[str, Any]:
        """What on-call reads about one language: window fill, JS, theta, state, adapter version, last trigger."""
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
        lease = self._lease(lang)
        return {
            "language": lang,
            "enabled": settings.enabled and lang in self.languages.current.languages,
            "paused": self.is_paused(lang),
            "state": "paused" if self.is_paused(lang) else st.phase if st.phase == "updating" else last.get("state"),
            "phase": st.phase,
            "window": {"size": snap.size, "window_size": settings.window_size,
                       "fill": snap.size / settings.window_size, "codebook_version": snap.codebook_version},
            "js": last.get("js"),
            "theta": settings.theta,
            "rearm_below": settings.rearm_below,
            "min_samples": settings.min_samples,
            "cooldown_s": settings.cooldown_s,
            "armed": st.trigger.armed,
            "noise_share": last.get("noise_share"),
            "reference": ref_view,
            "adapter_version": st.adapter_version or (ref_view or {}).get("adapter_version"),
            "job": st.job,
            "last_check": st.last_check,
            "last_trigger": st.last_trigger,
            "last_update": st.last_update,
            "lease_holder": lease.holder(),
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
        return out

    # ------------------------------------------------------------------ scheduling

    def poll_events(self, timeout_ms: int = 200) -> int:
        """Queue the worker's reports from compass.events into the inboxes (the next check applies them)."""
        if self.inbox is None:
            self.inbox = EventInbox(self.config.kafka, self.dcfg.events_group_id, self.client, self.prefix,
                                    events_max=self.dcfg.history_events_max, auto_offset_reset="earliest")
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
