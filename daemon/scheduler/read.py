"""Step 2 of a check, read: an ``Observation`` of one language for the pure ``compass.drift.lifecycle.step``.

What it reads (module docstring of daemon/scheduler/service.py): the worker's reports queued in the inbox
(scheduler/dispatch.py), the ``paused`` key, the ``force`` and ``resume`` keys an operator set (read and cleared,
GETDEL), the window (infra/window/) with the cluster ids of the queries since the last check, P_ref
(infra/reference.py: ``missing``, ``bad``, or a ``mismatch`` of codebook lineage or bucket count, logged once on
entry), the noise share; and only when the check gets as far as the stale rule, the far share
(scheduler/farshare.py, with >= min_samples) and, for a window compared with P_ref, the quality signal
(scheduler/quality.py). The job id a dispatch would use is made here.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import numpy as np
import redis

from compass.cluster.codebook import lineage_of
from compass.drift.lifecycle import Limits, Observation, Report, step
from compass.drift.stale import noise_share
from compass.languages import LanguageSettings
from daemon.scheduler.dispatch import drain_inbox
from daemon.scheduler.farshare import FarShareFn
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.quality import NO_QUALITY, QualityFeed, quality_feed
from daemon.scheduler.results import Reading
from daemon.scheduler.state import LanguageStatus
from infra.keys import Keys
from infra.reference import BadReference, Reference, get_reference
from infra.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)

# what the lifecycle's step says of an empty window that got past its early rules (reports ... settling)
PAST_EARLY_RULES = frozenset({"no_reference", "bad_reference", "codebook_mismatch", "insufficient_samples"})


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

    def paused(self, lang: str) -> bool:
        return bool(self.client.exists(self.keys.paused(lang)))

    def read(self, lang: str, now: float, settings: LanguageSettings, before: LanguageStatus) -> Reading:
        """The observation of one check; the reports it drained go back on a check that does not act on them."""
        drained = drain_inbox(self.client, lang, self.prefix)
        snap = self.windows.snapshot(lang, since=before.seen or 0)
        self.metrics.fill.labels(lang).set(snap.size / settings.window_size)
        ref, reference, detail = self.reference(lang, snap)
        noise = noise_share(snap.counts) if snap.size else None
        if noise is not None:
            self.metrics.noise.labels(lang).set(noise)
        obs = Observation(
            now=now, counts=snap.counts, p_ref=np.asarray(ref.probs) if reference == "ok" and ref else None,
            ref_id=ref.identity if ref else None, reference=reference, reference_detail=detail,
            new_labels=snap.tail, noise_share=noise,
            reports=tuple(Report(e.type, e.job_id, e.at, e.data) for e in drained),
            forced=self.client.getdel(self.keys.force(lang)) is not None,
            resume=self.client.getdel(self.keys.resume(lang)) is not None,
            paused=self.paused(lang), job_id=f"{lang}-{int(now * 1000)}-{uuid.uuid4().hex[:6]}",
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
        return Reading(obs, snap, ref, drained)

    def reference(self, lang: str, snap: WindowSnapshot) -> tuple[Reference | None, str, str]:
        """P_ref and whether the window can be compared with it: ok, missing, bad or mismatch, and why not."""
        try:
            ref = get_reference(self.client, lang, self.prefix)
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
