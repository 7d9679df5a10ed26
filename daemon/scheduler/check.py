"""One check of one language: lease -> read -> step -> fenced write -> dispatch (daemon/scheduler/service.py).

The decision is the pure ``compass.drift.lifecycle.step``; this module only orders the I/O around it: it holds
the lease (another replica holds it -> ``standby``), reads (scheduler/read.py), steps, writes fenced
(scheduler/write.py: a newer holder wins -> ``standby``) and publishes (scheduler/publish.py).

``check_round`` checks many languages at once, as the schedule does every check_interval_s: it takes their locks
and leases, reads all of them in two Redis round trips (scheduler/read.py ``fetch_many``) instead of ~7 calls per
language, then steps, writes and dispatches each language as ``check`` does. Per language the outcome is the same
as ``check``'s; only the reads are batched (at 200 languages every 2 s the per-call cost of the reads dominated).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from compass.drift.lifecycle import Limits, Step, step
from daemon.scheduler.leases import Leases
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.publish import JOB_KIND, Publisher
from daemon.scheduler.read import Fetched, LanguageReader
from daemon.scheduler.results import CheckResult
from daemon.scheduler.state import LanguagesSource, LanguageStatus
from daemon.scheduler.write import StatusWriter
from infra.lock import LanguageLease

log = logging.getLogger(__name__)


class LanguageCheck:
    """``check(lang, now)``: one check; never raises (failures are logged and counted)."""

    def __init__(self, leases: Leases, languages: LanguagesSource, status: Callable[[str], LanguageStatus],
                 reader: LanguageReader, writer: StatusWriter, publisher: Publisher, metrics: DaemonMetrics,
                 limits: Limits):
        self.leases = leases
        self.languages = languages
        self.status = status  # lang -> its stored status
        self.reader = reader
        self.writer = writer
        self.publisher = publisher
        self.metrics = metrics
        self.limits = limits

    def check(self, lang: str, now: float | None = None) -> CheckResult:
        """One check of ``lang`` at ``now`` (unix seconds)."""
        now = time.time() if now is None else now
        with self.metrics.seconds.time():
            lease, lock = self.leases.get(lang)
            try:
                with lock:  # the scheduler and an API trigger must not interleave one language
                    result = self._check(lang, now, lease)
            except Exception as e:  # Redis down, a bad stored value, ...: keep the daemon alive
                result = self._failed(lang, e)
        self._count(result)
        return result

    def check_round(self, langs: Sequence[str], now: float | None = None) -> list[CheckResult]:
        """One check of every language of ``langs`` at ``now``, their reads batched; the results in their order.
        Never raises. The languages' locks are held for the round (sorted, so it cannot deadlock with a single
        check, which takes one), so that no API trigger steps a language between its batched read and its step."""
        now = time.time() if now is None else now
        langs = list(dict.fromkeys(langs))
        if self.reader.windows.is_cluster:  # a MULTI cannot span slots: each language reads on its own there
            return [self.check(lang, now) for lang in langs]
        results: dict[str, CheckResult] = {}
        with contextlib.ExitStack() as held:
            leases = {}
            for lang in sorted(langs):
                lease, lock = self.leases.get(lang)
                held.enter_context(lock)
                leases[lang] = lease
            tokens: dict[str, int] = {}
            for lang in langs:
                try:
                    token = leases[lang].hold()
                except Exception as e:
                    results[lang] = self._failed(lang, e)
                    continue
                if token is None:
                    results[lang] = CheckResult(lang, "standby", detail=f"lease held by {leases[lang].holder()}")
                else:
                    tokens[lang] = token
            try:
                statuses, fetched = self.reader.fetch_many(list(tokens)) if tokens else ({}, {})
            except Exception as e:  # Redis down: every held language fails this round, as its own check would
                statuses, fetched = dict.fromkeys(tokens, e), {}
            for lang, token in tokens.items():
                with self.metrics.seconds.time():
                    before = statuses[lang]
                    try:
                        if isinstance(before, Exception):
                            raise before
                        results[lang] = self._check(lang, now, leases[lang], token, before, fetched[lang])
                    except Exception as e:
                        results[lang] = self._failed(lang, e)
        out = [results[lang] for lang in langs]
        for result in out:
            self._count(result)
        return out

    def _failed(self, lang: str, e: Exception) -> CheckResult:
        log.error("check of %s failed", lang, exc_info=e)
        self.metrics.errors.labels(lang, type(e).__name__).inc()
        return CheckResult(lang, "error", detail=f"{type(e).__name__}: {e}")

    def _count(self, result: CheckResult) -> None:
        self.metrics.checks.labels(result.lang, result.state).inc()
        if result.js is not None:
            self.metrics.js.labels(result.lang).set(result.js)

    def _check(self, lang: str, now: float, lease: LanguageLease, token: int | None = None,
               before: LanguageStatus | None = None, fetched: Fetched | None = None) -> CheckResult:
        """``token``, ``before`` and ``fetched``: the lease, status and reads a round took (None: take them now)."""
        if token is None:
            token = lease.hold()
            if token is None:
                return CheckResult(lang, "standby", detail=f"lease held by {lease.holder()}")
        settings = self.languages.current.get(lang)
        before = self.status(lang) if before is None else before
        read = self.reader.read(lang, now, settings, before, fetched)
        out = step(before.drift, read.obs, settings, self.limits)
        self._log_updates(lang, before, out)
        st = LanguageStatus(out.state, None, read.snap.seen)
        if out.action.kind in JOB_KIND:
            return self.publisher.dispatch(lang, lease, token, before, st, out, settings, read)
        result = CheckResult(lang, out.check, js=out.js, n_samples=out.n_samples, detail=out.detail)
        if not self.writer.write(lease, token, st, result, out, settings, read):
            self.writer.give_back(lang, read)
            return CheckResult(lang, "standby", detail="lease lost during the check; a newer holder acts")
        if read.obs.forced and out.check != "manual":
            log.info("%s: manual trigger not honoured (%s); ask again when the language can update", lang, out.check)
        if out.action.kind == "stuck":
            self.publisher.emit_stuck(lang, st, now)
        elif out.action.kind == "settle":
            log.info("%s: %s detected (JS %s); settling %g s before freezing the window", lang, out.action.reason,
                     out.js, settings.settle_s)
        return self.writer.finish(lang, st, result)

    def _log_updates(self, lang: str, before: LanguageStatus, out: Step) -> None:
        """An update that ended on this check, in the log (a timeout also counted as an error)."""
        last = out.state.last_update or {}
        if not last or last == before.last_update or last.get("job_id") is None:
            return
        if last.get("outcome") == "timeout":
            log.warning("%s: job %s had no update_finished within daemon.update_timeout_s %.0f s; given up on",
                        lang, last.get("job_id"), self.limits.update_timeout_s)
            self.metrics.errors.labels(lang, "update_timeout").inc()
        elif before.phase == "updating" and out.state.phase != "updating":
            log.info("%s: update %s %s (%d unsuccessful in a row)", lang, last.get("job_id"), last.get("outcome"),
                     out.state.failures)
