"""Step 2 of a check, read: an ``Observation`` of one language for the pure ``compass.drift.lifecycle.step``.

What it reads (module docstring of daemon/scheduler/service.py): the worker's reports queued in the inbox
(scheduler/dispatch.py), the ``paused`` key, the ``force`` and ``resume`` keys an operator set (read and cleared,
GETDEL), the window (infra/window/) with the cluster ids of the queries since the last check, P_ref
(infra/reference.py: ``missing``, ``bad``, or a ``mismatch`` of codebook lineage or bucket count, logged once on
entry), the noise share; and only when the check gets as far as the stale rule, the far share
(scheduler/farshare.py, with >= min_samples) and, for a window compared with P_ref, the quality signal
(scheduler/quality.py). The job id a dispatch would use is made here, and the window's inflow (queries/s, from
the growth of its ``seen`` counter since the last check: compass/drift/inflow.py).

A check reads its language on its own (``fetch``: one Redis call per key); a round of checks reads all its
languages first in two round trips (``fetch_many``: one MULTI/EXEC for the status, inbox, operator keys and P_ref of
every language, one pipeline of the window snapshots) and lets the far share read ahead (``prefetch``: one pipeline
of the windows' new recent entries), then steps each language from what was fetched. Both give the same
``Fetched``, so a check decides the same either way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import redis

from compass.cluster.codebook import lineage_of
from compass.drift import inflow
from compass.drift.lifecycle import Limits, Observation, Report, step
from compass.drift.stale import noise_share
from compass.languages import LanguageSettings
from daemon.scheduler.dispatch import decode_inbox, drain_inbox, inbox_key
from daemon.scheduler.farshare import FarShareFn
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.quality import NO_QUALITY, QualityFeed, quality_feed
from daemon.scheduler.results import Reading
from daemon.scheduler.state import LanguageStatus
from infra.keys import Keys
from infra.messages import Event
from infra.reference import BadReference, Reference, get_reference, reference_key
from infra.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)

# what the lifecycle's step says of an empty window that got past its early rules (reports ... settling)
PAST_EARLY_RULES = frozenset({"no_reference", "bad_reference", "codebook_mismatch", "insufficient_samples"})


@dataclass(frozen=True)
class Fetched:
    """What a check reads of its language before it steps: the reports it took from the inbox, the window since the
    last check (or the exception reading it raised), the raw P_ref, the operator keys it read (force and resume are
    taken: GETDEL)."""

    drained: list[Event]
    snap: WindowSnapshot | Exception
    ref_raw: bytes | None
    forced: bool
    resume: bool
    paused: bool


class _OneValue:
    """A stand-in client whose ``get`` answers the value fetched in a batch, so that ``get_reference`` parses and
    validates it exactly as it does a value it reads itself."""

    def __init__(self, raw: bytes | None):
        self.raw = raw

    def get(self, key: str) -> bytes | None:
        return self.raw


class LanguageReader:
    """Reads languages for the daemon's checks; keeps what must outlive one check (the quality detectors, which
    problems were logged already)."""

    def __init__(self, client: redis.Redis, prefix: str, keys: Keys, windows: WindowStore,
                 far_share: FarShareFn, metrics: DaemonMetrics, limits: Limits, far_max_texts: int):
        self.client = client
        self.prefix = prefix
        self.keys = keys
        self.windows = windows
        self.far_share = far_share
        self.metrics = metrics
        self.limits = limits
        self.far_max_texts = far_max_texts  # daemon.stale_far_max_texts: 0 turns the far share off
        self._mismatch_logged: set[str] = set()
        self._far_failed: dict[str, str] = {}  # lang -> the last far-share failure logged (warned once per change)
        self._quality: dict[str, QualityFeed] = {}  # the quality detectors (languages.yaml quality_signal)
        self._references: dict[str, tuple[bytes, Reference]] = {}  # lang -> (stored bytes, parsed P_ref)

    def paused(self, lang: str) -> bool:
        return bool(self.client.exists(self.keys.paused(lang)))

    def fetch(self, lang: str, before: LanguageStatus) -> Fetched:
        """One language's reads, one Redis call each (a check on its own: the API's trigger, ``Daemon.check``)."""
        drained = drain_inbox(self.client, lang, self.prefix)
        snap = self.windows.snapshot(lang, since=before.seen or 0)
        return Fetched(drained, snap, self.client.get(self.keys.reference(lang)),
                       forced=self.client.getdel(self.keys.force(lang)) is not None,
                       resume=self.client.getdel(self.keys.resume(lang)) is not None, paused=self.paused(lang))

    def fetch_many(self, langs: list[str]) -> tuple[dict[str, LanguageStatus | Exception], dict[str, Fetched]]:
        """The stored status and the reads of every language of a round in two round trips: the status, inbox,
        operator keys and P_ref in one MULTI/EXEC (the inboxes are taken atomically, as ``drain_inbox`` does), then
        every window since its status's cursor in one pipeline (``WindowStore.snapshot_many``). A language whose
        status cannot be parsed maps to that exception (its check fails alone), and gets no ``Fetched``."""
        k, per = self.keys, 7
        with self.client.pipeline(transaction=True) as pipe:
            for lang in langs:
                inbox = inbox_key(lang, self.prefix)
                pipe.get(k.status(lang))
                pipe.lrange(inbox, 0, -1)
                pipe.delete(inbox)
                pipe.get(reference_key(lang, self.prefix))
                pipe.getdel(k.force(lang))
                pipe.getdel(k.resume(lang))
                pipe.exists(k.paused(lang))
            replies = pipe.execute()
        statuses: dict[str, LanguageStatus | Exception] = {}
        rows: dict[str, list[Any]] = {}
        for i, lang in enumerate(langs):
            row = rows[lang] = replies[i * per:(i + 1) * per]
            try:
                statuses[lang] = LanguageStatus.from_json(row[0])
            except Exception as e:  # a damaged status: that language's check reports it
                statuses[lang] = e
        since = {lang: st.seen or 0 for lang, st in statuses.items() if isinstance(st, LanguageStatus)}
        snaps = self.windows.snapshot_many(since)
        fetched = {}
        for lang, snap in snaps.items():
            _, raw_inbox, _, ref_raw, force, resume, paused = rows[lang]
            fetched[lang] = Fetched(decode_inbox(inbox_key(lang, self.prefix), raw_inbox), snap, ref_raw,
                                    force is not None, resume is not None, bool(paused))
        return statuses, fetched

    def prefetch(self, fetched: Mapping[str, Fetched]) -> None:
        """Let the far share read ahead, in one round trip, what the checks of a round will ask it (its optional
        ``prefetch``: ``RecentFarShare`` reads the new recent entries of the windows that moved). Never raises: a
        failure here leaves each check's own call to read, and to report its failure."""
        ahead = getattr(self.far_share, "prefetch", None)
        if self.far_max_texts == 0 or ahead is None:
            return
        try:
            ahead({lang: f.snap for lang, f in fetched.items() if not isinstance(f.snap, Exception)})
        except Exception as e:
            log.debug("far share prefetch failed (each check reads on its own): %s", e)

    def read(self, lang: str, now: float, settings: LanguageSettings, before: LanguageStatus,
             fetched: Fetched | None = None) -> Reading:
        """The observation of one check; the reports it drained go back on a check that does not act on them.
        ``fetched``: what a round read for this language (``fetch_many``); None reads it now (``fetch``)."""
        f = self.fetch(lang, before) if fetched is None else fetched
        drained = f.drained
        if isinstance(f.snap, Exception):
            raise f.snap
        snap = f.snap
        m = self.metrics
        m.of(m.fill, lang).set(snap.size / settings.window_size)
        ref, reference, detail = self.reference(lang, snap, f.ref_raw)
        noise = noise_share(snap.counts) if snap.size else None
        if noise is not None:
            m.of(m.noise, lang).set(noise)
        obs = Observation(
            now=now, counts=snap.counts, p_ref=np.asarray(ref.probs) if reference == "ok" and ref else None,
            ref_id=ref.identity if ref else None, reference=reference, reference_detail=detail,
            new_labels=snap.tail, noise_share=noise,
            reports=tuple(Report(e.type, e.job_id, e.at, e.data) for e in drained),
            forced=f.forced, resume=f.resume, paused=f.paused,
            job_id=f"{lang}-{int(now * 1000)}-{uuid.uuid4().hex[:6]}",
            baseline=np.asarray(ref.baseline) if reference == "ok" and ref and ref.baseline is not None else None,
            window_behind=reference == "mismatch" and window_behind(ref, snap),
        )
        # The far share embeds texts and the quality detector consumes its values: only for a check that gets as
        # far as the stale rule, as before the lifecycle. The pure step on an empty window tells: it then ends at
        # the reference rules or on the empty window, past every rule before the stale one.
        probe = step(before.drift, replace(obs, counts=None, new_labels=None, noise_share=None), settings,
                     self.limits)
        if probe.check in PAST_EARLY_RULES:
            far = self.measure_far_share(lang, snap) if snap.size >= settings.min_samples else None
            compared = reference == "ok" and snap.size > 0
            quality = self.quality(lang, settings) if compared else None
            obs = replace(obs, far_share=far, quality=quality)
        return Reading(obs, snap, ref, drained, inflow_of(before, snap.seen, now))

    def reference(self, lang: str, snap: WindowSnapshot, raw: bytes | None) -> tuple[Reference | None, str, str]:
        """P_ref (``raw``: its stored JSON) and whether the window can be compared with it: ok, missing, bad or
        mismatch, and why not."""
        try:
            ref = self._parsed_reference(lang, raw)
        except BadReference as e:
            self.metrics.errors.labels(lang, "bad_reference").inc()
            log.error("%s", e)
            return None, "bad", str(e)
        if ref is None:
            return None, "missing", f"no P_ref at {self.keys.reference(lang)}; set one with `compass ref set`"
        mismatch = comparable(ref, snap)
        if mismatch:
            if lang not in self._mismatch_logged:
                log.warning("%s: codebook_mismatch, not compared: %s", lang, mismatch)
                self._mismatch_logged.add(lang)
            return ref, "mismatch", mismatch
        self._mismatch_logged.discard(lang)
        return ref, "ok", ""

    def _parsed_reference(self, lang: str, raw: bytes | None) -> Reference | None:
        """``get_reference`` of ``raw``; the last parse per language is kept while the stored bytes do not change
        (a reference is rewritten only on an update, so a round parses each P_ref once, not every check)."""
        cached = self._references.get(lang)
        if raw is not None and cached is not None and cached[0] == raw:
            return cached[1]
        ref = get_reference(_OneValue(raw), lang, self.prefix)  # type: ignore[arg-type]
        if ref is None:
            self._references.pop(lang, None)
        else:
            self._references[lang] = (raw, ref)
        return ref

    def measure_far_share(self, lang: str, snap: WindowSnapshot) -> float | None:
        """The far share, or None (unknown) when not measured; a failure is logged, counted, never raised."""
        if self.far_max_texts == 0:
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

    def quality(self, lang: str, settings: LanguageSettings) -> bool | None:
        """The quality signal since the last check: True on a detection, False with data and none, None without a
        signal configured or any data yet (or when the signal fails: logged, counted, never raised)."""
        try:
            feed = self._quality.get(lang, NO_QUALITY)
            if feed.kind != settings.quality_signal:
                feed = self._quality[lang] = quality_feed(settings.quality_signal)
            detected, bad = feed.read(self.client, self.keys.quality(lang))
        except Exception as e:  # the JS check must go on whatever the quality path does
            self.metrics.errors.labels(lang, "quality").inc()
            log.warning("%s: quality signal unavailable (%s); JS decides alone this check", lang, e)
            return None
        if bad:
            self.metrics.errors.labels(lang, "quality_value").inc(bad)
        return detected


def inflow_of(before: LanguageStatus, seen: int, now: float) -> inflow.Inflow:
    """The window's inflow after this check, from the previous check's ``seen``, time and estimate (its
    ``last_check``)."""
    last = before.last_check or {}
    prev = None
    if before.seen is not None and last.get("at") is not None:
        prev = inflow.Inflow(before.seen, float(last["at"]), last.get("inflow_qps"))
    return inflow.update(prev, seen, now)


def window_behind(ref: Reference | None, snap: WindowSnapshot) -> bool:
    """The reference's codebook lineage is newer than the window's (versions sort by their UTC stamp, as the
    codebook pointer does): a re-fit switched the references and the consumers have not loaded its codebook yet."""
    if ref is None or snap.codebook_version is None:
        return False
    return lineage_of(ref.codebook_version) > lineage_of(snap.codebook_version)


def comparable(ref: Reference, snap: WindowSnapshot) -> str:
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
