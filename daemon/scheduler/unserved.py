"""The daemon's check of the unserved languages: traffic in languages no configured adapter serves.

Scheduled every ``check_interval_s`` like the languages. Under the lease ``{prefix}:{unserved}:lease``: read the
unserved counts of the last ``daemon.emerging_horizon_s`` (infra/unserved.py), decide per language with the pure
``compass.drift.emerging.decide``, write the episodes fenced to ``{prefix}:{unserved}:emerging``, then publish
``language_emerging`` once per episode (a failed publish reverts that language's episode, so a later check
publishes it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

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
from daemon.scheduler.dispatch import Dispatcher
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.results import UnservedCheck
from daemon.scheduler.state import LanguagesSource
from infra.lock import LanguageLease
from infra.messages import Event
from infra.settings import DaemonConfig
from infra.unserved import UnservedReading, UnservedStore

log = logging.getLogger(__name__)

EVENT_SAMPLE_IDS = 10  # sample query ids carried by a language_emerging event
VIEW_SAMPLE_IDS = 5  # ... and shown per unserved language by the API and the status page


class UnservedChecker:
    """Checks and describes the unserved languages (the languages config says which are served)."""

    def __init__(self, client: redis.Redis, store: UnservedStore, languages: LanguagesSource,
                 dispatcher: Dispatcher, metrics: DaemonMetrics, dcfg: DaemonConfig):
        self.client = client
        self.store = store
        self.languages = languages
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.horizon_s = dcfg.emerging_horizon_s
        self.settings = EmergingSettings(dcfg.emerging_share, dcfg.emerging_min_count, dcfg.emerging_rearm_ratio)
        self._gauged: set[str] = set()  # languages with unserved gauges set (zeroed once gone)

    def states(self) -> dict[str, EmergingState]:
        """The episodes of the unserved languages as last written (``{prefix}:{unserved}:emerging``)."""
        key = self.store.key("emerging")
        return states_from_json(self.client.get(key), key)

    def check(self, now: float, lease: LanguageLease, lock: threading.Lock) -> UnservedCheck:
        """One check at ``now`` under ``lease``. Never raises: failures are logged."""
        try:
            with lock:
                return self._check(now, lease)
        except Exception as e:
            log.exception("check of the unserved languages failed")
            self.metrics.errors.labels("", "unserved").inc()
            return UnservedCheck("error", {}, detail=f"{type(e).__name__}: {e}")

    def _check(self, now: float, lease: LanguageLease) -> UnservedCheck:
        token = lease.hold()
        if token is None:
            return UnservedCheck("standby", {}, detail=f"lease held by {lease.holder()}")
        settings, horizon = self.settings, self.horizon_s
        reading = self.store.read(now, horizon)
        before = self.states()
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
                    "sample_ids": self.store.samples(lang, EVENT_SAMPLE_IDS), "how": how_to_serve(lang)}
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
        self._gauge(by_lang, after, configured)
        return UnservedCheck("checked", {lang: st.check for lang, st in steps.items()}, tuple(emitted),
                             f"{reading.total} queries over {horizon} s, {reading.served} served")

    def _gauge(self, by_lang: dict[str, Reading], states: dict[str, EmergingState], configured: set[str]) -> None:
        m, shown = self.metrics, {lang for lang in set(by_lang) | set(states) if lang not in configured}
        for lang in shown | self._gauged:
            r = by_lang.get(lang)
            m.unserved_share.labels(lang).set(r.share if r and lang in shown else 0.0)
            m.unserved_queries.labels(lang).set(r.count if r and lang in shown else 0)
            m.emerging.labels(lang).set(1 if lang in shown and lang in states and states[lang].active else 0)
        self._gauged = shown

    def describe(self, now: float) -> dict[str, Any]:
        """What on-call reads about unserved languages: per language (not configured now) its queries and share over
        the horizon, its count since the start, its episode and the step that starts serving it."""
        settings, horizon = self.settings, self.horizon_s
        reading: UnservedReading = self.store.read(now, horizon)
        states = self.states()
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
                         "sample_ids": self.store.samples(lang, VIEW_SAMPLE_IDS), "how": how_to_serve(lang)})
        rows.sort(key=lambda row: (-row["share"], row["language"]))
        return {"horizon_s": horizon, "emerging_share": settings.share, "emerging_min_count": settings.min_count,
                "rearm_below": settings.rearm_below, "served": reading.served, "total": reading.total,
                "languages": rows}
