"""One check of one language: lease -> read -> step -> fenced write -> dispatch (daemon/scheduler/service.py).

The decision is the pure ``compass.drift.lifecycle.step``; this module only orders the I/O around it: it holds
the lease (another replica holds it -> ``standby``), reads (scheduler/read.py), steps, writes fenced
(scheduler/write.py: a newer holder wins -> ``standby``) and publishes (scheduler/publish.py).

``check_round`` checks many languages at once, as the schedule does every check_interval_s: it takes their locks,
holds their leases in one pipeline, reads all of them in two Redis round trips (scheduler/read.py ``fetch_many``)
instead of ~7 calls per language, steps each, then writes all their statuses (fenced, the same script) in one
pipeline and appends all their JS readings in one MULTI. Per language the outcome is the same as ``check``'s; only
the I/O is batched (at 200 languages every 2 s the per-call cost of Redis dominated: benchmarks/daemon_scale.py).
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
from daemon.scheduler.write import Pending, StatusWriter
from infra.lease import hold_many
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
        """One check of every language of ``langs`` at ``now``, its Redis I/O batched; the results in their order.
        Never raises. The languages' locks are held for the round (sorted, so it cannot deadlock with a single
        check, which takes one), so that no API trigger steps a language between its batched read and its write.

        Round trips per round, whatever the number of languages: the leases (``infra.lease.hold_many``), the reads
        (``fetch_many``: two), the new recent entries of the windows that moved (the far share's ``prefetch``), the
        fenced status writes (``StatusWriter.write_many``), the JS history appends (``finish_many``); each pipeline of
        scripts adds one SCRIPT EXISTS. A check that publishes a job (rare) writes on its own, as ``check`` does."""
        now = time.time() if now is None else now
        langs = list(dict.fromkeys(langs))
        if self.reader.windows.is_cluster:  # a pipeline cannot span slots: each language on its own there
            return [self.check(lang, now) for lang in langs]
        results: dict[str, CheckResult] = {}
        with contextlib.ExitStack() as held:
            leases = {}
            for lang in sorted(langs):
                lease, lock = self.leases.get(lang)
                held.enter_context(lock)
                leases[lang] = lease
            tokens = self._hold(langs, leases, results)
            try:
                statuses, fetched = self.reader.fetch_many(list(tokens)) if tokens else ({}, {})
            except Exception as e:  # Redis down: every held language fails this round, as its own check would
                statuses, fetched = dict.fromkeys(tokens, e), {}
            self.reader.prefetch(fetched)
            pending: list[Pending] = []
            for lang, token in tokens.items():
                with self.metrics.seconds.time():
                    before = statuses[lang]
                    try:
                        if isinstance(before, Exception):
                            raise before
                        done = self._step(lang, now, leases[lang], token, before, fetched[lang])
                    except Exception as e:
                        done = self._failed(lang, e)
                if isinstance(done, Pending):
                    pending.append(done)
                else:
                    results[lang] = done
            self._write(pending, results)
        out = [results[lang] for lang in langs]
        for result in out:
            self._count(result)
        return out

    def _hold(self, langs: list[str], leases: dict[str, LanguageLease],
              results: dict[str, CheckResult]) -> dict[str, int]:
        """The fencing token of every language whose lease this replica holds (or takes) now; the others' results
        (standby, or error) go in ``results``."""
        try:
            held = hold_many(self.leases.client, [leases[lang] for lang in langs])
        except Exception as e:  # Redis down: every language fails this round, as its own check would
            held = [e] * len(langs)
        tokens: dict[str, int] = {}
        for lang, token in zip(langs, held, strict=True):
            if isinstance(token, Exception):
                results[lang] = self._failed(lang, token)
            elif token is None:
                results[lang] = CheckResult(lang, "standby", detail=f"lease held by {leases[lang].holder()}")
            else:
                tokens[lang] = token
        return tokens

    def _write(self, pending: list[Pending], results: dict[str, CheckResult]) -> None:
        """The fenced writes of a round's stepped checks in one pipeline, then what follows each (``_written``),
        their history appends in one MULTI."""
        if not pending:
            return
        try:
            written = self.writer.write_many(pending)
        except Exception as e:  # Redis down: each check fails as its own write would have failed it
            written = [e] * len(pending)
        done = []
        for p, ok in zip(pending, written, strict=True):
            try:
                if isinstance(ok, Exception):
                    raise ok
                results[p.lang] = self._written(p, ok)
                if ok:
                    done.append((p.lang, p.st, results[p.lang]))
            except Exception as e:
                results[p.lang] = self._failed(p.lang, e)
        self.writer.finish_many(done)

    def _failed(self, lang: str, e: Exception) -> CheckResult:
        log.error("check of %s failed", lang, exc_info=e)
        self.metrics.errors.labels(lang, type(e).__name__).inc()
        return CheckResult(lang, "error", detail=f"{type(e).__name__}: {e}")

    def _count(self, result: CheckResult) -> None:
        m = self.metrics
        m.of(m.checks, result.lang, result.state).inc()
        if result.js is not None:
            m.of(m.js, result.lang).set(result.js)

    def _check(self, lang: str, now: float, lease: LanguageLease) -> CheckResult:
        token = lease.hold()
        if token is None:
            return CheckResult(lang, "standby", detail=f"lease held by {lease.holder()}")
        done = self._step(lang, now, lease, token, self.status(lang))
        if isinstance(done, CheckResult):
            return done
        written = lease.fenced_set("status", done.st.to_json(), token)
        result = self._written(done, written)
        return self.writer.finish(lang, done.st, result) if written else result

    def _step(self, lang: str, now: float, lease: LanguageLease, token: int, before: LanguageStatus,
              fetched: Fetched | None = None) -> CheckResult | Pending:
        """Read (``fetched``: what a round read; None: read now), step, and either publish the job the step asks
        for (a result) or record the check for its fenced write (``Pending``)."""
        settings = self.languages.current.get(lang)
        read = self.reader.read(lang, now, settings, before, fetched)
        out = step(before.drift, read.obs, settings, self.limits)
        self._log_updates(lang, before, out)
        st = LanguageStatus(out.state, None, read.snap.seen)
        if out.action.kind in JOB_KIND:
            return self.publisher.dispatch(lang, lease, token, before, st, out, settings, read)
        result = CheckResult(lang, out.check, js=out.js, n_samples=out.n_samples, detail=out.detail)
        self.writer.record(st, result, out, settings, read)
        return Pending(lang, lease, token, st, result, out, settings, read)

    def _written(self, p: Pending, written: bool) -> CheckResult:
        """What follows a check's fenced write: ``p.result`` when written (its metrics and history still to
        record: ``StatusWriter.finish``), else standby, what it took handed back."""
        lang, read, out = p.lang, p.read, p.out
        if not written:
            self.writer.give_back(lang, read)
            return CheckResult(lang, "standby", detail="lease lost during the check; a newer holder acts")
        if read.obs.forced and out.check != "manual":
            log.info("%s: manual trigger not honoured (%s); ask again when the language can update", lang, out.check)
        if out.action.kind == "stuck":
            self.publisher.emit_stuck(lang, p.st, read.obs.now)
        elif out.action.kind == "settle":
            log.info("%s: %s detected (JS %s); settling %g s before freezing the window", lang, out.action.reason,
                     out.js, p.settings.settle_s)
        return p.result

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
