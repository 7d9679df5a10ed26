"""The drift daemon: per language, on a schedule and under a lease, read -> step -> fenced write -> dispatch.

Every decision (the worker's reports, disabled, paused, updating and its timeout, resume of a stuck language,
manual trigger, stuck, settling, stale clusters, reference problems, a new reference, the detectors, the backoff
after unsuccessful updates, the quality rule) is made by the pure ``compass.drift.lifecycle.step``; read its
module docstring for the rules and the check states. The daemon does the I/O around it. One check of
language ``l`` (``Daemon.check``):

  1. lease     hold (or renew) ``l``'s lease; another replica holds it -> ``standby``
  2. read      an ``Observation`` of ``l`` (scheduler/read.py: inbox, operator keys, window, P_ref, noise share,
               far share, quality signal)
  3. step      ``lifecycle.step(state, observation, settings, limits)`` -> the new state, an action, the check's
               state (``CheckResult.state``, scheduler/results.py)
  4. write     ``{prefix}:{l}:status`` (scheduler/state.py) with the lease's fencing token (scheduler/write.py): a
               newer holder wins, the check reports ``standby`` and hands what it took back to the inbox
  5. dispatch  ``update`` / ``recluster``: freeze the window, publish the job (scheduler/publish.py); a failed publish
               reverts the check -> ``dispatch_failed``. ``stuck``: ``language_stuck`` on compass.events and an
               error in the log (resume with ``POST /v1/languages/<l>/resume`` or ``Daemon.resume``). ``settle``:
               nothing to publish.

Redis keys of ``l`` besides the window's: ``ref`` (infra/reference.py), ``status``, ``inbox``
(scheduler/dispatch.py), ``paused``, ``force``, ``resume``, ``quality``, ``snapshot:<job_id>`` (the frozen window a
job refers to) and ``history:js`` / ``history:events`` (infra/history.py: what the status page draws; every
check but those in ``UNMEASURED_STATES`` appends its reading).

The unserved languages are checked on the same schedule (scheduler/unserved.py); the schedule itself is
scheduler/run.py, the views for the API scheduler/views.py, the metrics scheduler/metrics.py.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import redis

from compass.drift.emerging import EmergingState
from compass.drift.lifecycle import Limits
from compass.embed.base import Embedder
from compass.languages import LanguagesConfig
from daemon.scheduler.check import LanguageCheck
from daemon.scheduler.dispatch import Dispatcher, EventInbox
from daemon.scheduler.explain import LabelCache
from daemon.scheduler.farshare import FarShareFn, RecentFarShare
from daemon.scheduler.leases import Leases
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.publish import Publisher
from daemon.scheduler.read import LanguageReader
from daemon.scheduler.results import CheckResult, UnservedCheck
from daemon.scheduler.run import CheckSchedule
from daemon.scheduler.state import LanguagesSource, LanguageStatus, languages_source
from daemon.scheduler.unserved import UnservedChecker
from daemon.scheduler.views import LanguageViews, readiness
from daemon.scheduler.write import StatusWriter
from infra.clients import redis_client
from infra.keys import Keys
from infra.settings import ServiceConfig
from infra.unserved import TAG as UNSERVED
from infra.unserved import UnservedStore
from infra.window import WindowStore

log = logging.getLogger(__name__)


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
        built on first use, ``infra.embedders.make_embedder(config.embedder)``)."""
        self.config = config
        self.dcfg = d = config.daemon
        self.prefix = config.redis.key_prefix
        self.keys = Keys(self.prefix)
        self.languages = languages_source(languages)
        self.client = client or redis_client(config.redis)
        c = config.consumer
        self.windows = WindowStore(self.client, self.prefix, store_texts=c.store_texts, recent_max=c.recent_max,
                                   recent_ttl_s=c.recent_ttl_s)
        dispatcher = dispatcher or Dispatcher(config.kafka)
        self.far_share: FarShareFn = far_share or RecentFarShare(config, self.windows, self.client, embedder)
        self.unserved = UnservedStore(self.client, self.prefix, bucket_s=c.unserved_bucket_s,
                                      retention_s=d.emerging_horizon_s, samples_max=c.unserved_samples_max,
                                      samples_ttl_s=c.recent_ttl_s)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.labels = LabelCache(c.codebook_dir)  # the codebooks' cluster labels, for explanations
        self.reader = LanguageReader(self.client, self.prefix, self.keys, self.windows, self.far_share, self.metrics,
                                     self.limits, d.stale_far_max_texts)
        self.writer = StatusWriter(self.client, self.prefix, self.keys, self.owner, self.metrics, d.history_js_max)
        self.publisher = Publisher(self.client, self.keys, self.windows, dispatcher, self.writer, self.metrics,
                                   self.labels, d.snapshot_ttl_s)
        self.emerging = UnservedChecker(self.client, self.unserved, self.languages, dispatcher, self.metrics, d)
        self.views = LanguageViews(self.client, self.prefix, self.windows, self.languages, self.labels,
                                   config.codebook.store_examples)
        self.leases = Leases(self.client, self.owner, d.lease_ttl_ms, self.prefix)
        self.inbox: EventInbox | None = None
        self.checks = LanguageCheck(self.leases, self.languages, self.status, self.reader, self.writer,
                                    self.publisher, self.metrics, self.limits)
        self.scheduler: CheckSchedule | None = None

    @property
    def limits(self) -> Limits:
        """The service-wide limits of the lifecycle (``daemon.*``)."""
        d = self.dcfg
        return Limits(update_timeout_s=d.update_timeout_s, stale_noise_share=d.stale_noise_share,
                      stale_far_share=d.stale_far_share)

    @property
    def dispatcher(self) -> Dispatcher:
        """Publishes the jobs and events (one Kafka producer); assigning one replaces it everywhere."""
        return self.publisher.dispatcher

    @dispatcher.setter
    def dispatcher(self, dispatcher: Dispatcher) -> None:
        self.publisher.dispatcher = self.emerging.dispatcher = dispatcher

    # ------------------------------------------------------------------ keys and small state

    def release(self, lang: str) -> None:
        """Hand ``lang``'s lease back when held: another replica takes over at once, not after the TTL."""
        self.leases.release(lang)

    def status(self, lang: str) -> LanguageStatus:
        return LanguageStatus.from_json(self.client.get(self.keys.status(lang)))

    def is_paused(self, lang: str) -> bool:
        return self.reader.paused(lang)

    def pause(self, lang: str) -> None:
        self.client.set(self.keys.paused(lang), json.dumps({"at": time.time(), "by": self.owner}))

    def resume(self, lang: str) -> bool:
        """Un-pause ``lang`` and, when it is stuck, resume it on its next check (failures cleared, trigger armed).
        True when it was stuck."""
        self.client.delete(self.keys.paused(lang))
        stuck = self.status(lang).phase == "stuck"
        if stuck:
            self.client.set(self.keys.resume(lang), json.dumps({"at": time.time(), "by": self.owner}))
        return stuck

    def request_trigger(self, lang: str) -> None:
        """Ask the replica holding ``lang``'s lease to fire on its next check (read and cleared there)."""
        self.client.set(self.keys.force(lang), json.dumps({"at": time.time(), "by": self.owner}))

    def cancel_trigger(self, lang: str) -> None:
        self.client.delete(self.keys.force(lang))

    def reload(self) -> bool:
        """Pick up a changed languages config when its source reloads (scheduler/reload.py: an invalid file keeps the
        config in force); False for a config held as given."""
        maybe_reload = getattr(self.languages, "maybe_reload", None)
        return bool(maybe_reload()) if callable(maybe_reload) else False

    # ------------------------------------------------------------------ the check

    def check(self, lang: str, now: float | None = None) -> CheckResult:
        """One check of ``lang`` at ``now`` (unix seconds; scheduler/check.py). Never raises: failures are logged and
        counted."""
        return self.checks.check(lang, now)

    def check_round(self, langs: list[str] | None = None, now: float | None = None) -> list[CheckResult]:
        """One check of each of ``langs`` (default: the enabled languages) at ``now``, their Redis reads batched
        (scheduler/check.py); what the schedule runs every check_interval_s. Never raises."""
        return self.checks.check_round(self.languages.current.enabled if langs is None else langs, now)

    # ------------------------------------------------------------------ unserved languages

    def emerging_states(self) -> dict[str, EmergingState]:
        """The episodes of the unserved languages as last written (``{prefix}:{unserved}:emerging``)."""
        return self.emerging.states()

    def check_unserved(self, now: float | None = None) -> UnservedCheck:
        """One check of the unserved languages at ``now`` (scheduler/unserved.py). Never raises."""
        now = time.time() if now is None else now
        return self.emerging.check(now, *self.leases.get(UNSERVED))

    def describe_unserved(self, now: float | None = None) -> dict[str, Any]:
        """Per unserved language its queries and share over the horizon, its episode, how to serve it."""
        return self.emerging.describe(time.time() if now is None else now)

    # ------------------------------------------------------------------ views for the API

    def describe(self, lang: str) -> dict[str, Any]:
        """What on-call reads about one language (scheduler/views.py)."""
        return self.views.describe(lang, self.status(lang), self.is_paused(lang), self.leases.get(lang)[0].holder())

    def explain(self, lang: str, top: int = 5) -> dict[str, Any]:
        """Which clusters drive JS(P_ref || window) now, with their labels (daemon/scheduler/explain.py)."""
        return self.views.explain(lang, top)

    def known_languages(self) -> list[str]:
        return sorted(set(self.languages.current.languages) | set(self.windows.languages()))

    def ready(self) -> dict[str, str]:
        """Problems per service ("ok" when reachable): Redis by PING, Kafka by a metadata request."""
        return readiness(self.client, self.dispatcher, self.config.kafka.jobs_topic, self.metrics)

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

    def start(self, interval_s: float | None = None, *, batched: bool = True) -> None:
        """Run the checks in a background scheduler (scheduler/run.py); ``interval_s`` overrides check_interval_s.
        ``batched``: one round of all languages per interval, its Redis I/O batched (``check_round``); False: one job
        per language, each reading and writing on its own (the path before issue 20, kept to compare:
        benchmarks/daemon_scale.py)."""
        if interval_s is not None:
            self.dcfg = self.dcfg.model_copy(update={"check_interval_s": interval_s})
        self.scheduler = CheckSchedule(self, self.dcfg.check_interval_s, self.dcfg.events_poll_s, batched=batched)
        self.scheduler.start()
        log.info("daemon %s checking %d language(s) every %.1f s", self.owner, len(self.languages.current.enabled),
                 self.dcfg.check_interval_s)

    def stop(self) -> None:
        """Stop the scheduler (waiting for running checks), hand back the leases, close the clients."""
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        self.leases.release_all()
        if self.inbox is not None:
            self.inbox.close()
            self.inbox = None
        self.dispatcher.close()
        self.far_share.close()
