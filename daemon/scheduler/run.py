"""The daemon's schedule (APScheduler, in a background thread): what ``compass daemon`` runs.

Jobs: ``tick`` every min(5 s, check_interval_s) reloads languages.yaml when it changed; ``round`` checks every
enabled language every check_interval_s, its Redis I/O batched (``Daemon.check_round``; a language no longer enabled
loses its lease). Unbatched (``batched=False``), the tick keeps one ``check:<l>`` job per enabled language instead,
each reading and writing on its own (the same decisions; at 200 languages ~2200 Redis round trips per interval
instead of ~14: benchmarks/daemon_scale.py);
``events`` polls the worker's reports into the inboxes every events_poll_s; ``unserved`` checks the unserved
languages every check_interval_s.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from daemon.scheduler.state import LanguagesSource

log = logging.getLogger(__name__)


class Scheduled(Protocol):
    """What the schedule drives (``daemon.scheduler.service.Daemon``)."""

    languages: LanguagesSource

    def check(self, lang: str, now: float | None = None) -> Any: ...

    def check_round(self, langs: list[str] | None = None, now: float | None = None) -> Any: ...

    def check_unserved(self, now: float | None = None) -> Any: ...

    def poll_events(self, timeout_ms: int = 200) -> int: ...

    def reload(self) -> bool: ...

    def release(self, lang: str) -> None: ...


class CheckSchedule:
    """The APScheduler jobs of one daemon; ``start`` once, ``stop`` waits for running checks."""

    def __init__(self, daemon: Scheduled, check_interval_s: float, events_poll_s: float, *, batched: bool = False):
        from apscheduler.schedulers.background import BackgroundScheduler

        self.daemon = daemon
        self.batched = batched
        self._checked: set[str] = set()  # the languages of the last round (batched)
        self.check_interval_s = check_interval_s
        self.events_poll_s = events_poll_s
        self.scheduler = BackgroundScheduler(timezone="UTC")

    def start(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        d, s = self.daemon, self.scheduler
        tick = min(5.0, self.check_interval_s)
        s.add_job(self.tick, IntervalTrigger(seconds=tick), id="tick", max_instances=1, coalesce=True)
        s.add_job(d.poll_events, IntervalTrigger(seconds=self.events_poll_s), id="events", max_instances=1,
                  coalesce=True)
        s.add_job(d.check_unserved, IntervalTrigger(seconds=self.check_interval_s), id="unserved", max_instances=1,
                  coalesce=True, next_run_time=datetime.now(UTC))
        if self.batched:
            s.add_job(self.round, IntervalTrigger(seconds=self.check_interval_s), id="round", max_instances=1,
                      coalesce=True, next_run_time=datetime.now(UTC))
        s.start()
        self.sync_jobs()

    def round(self) -> None:
        """Check every enabled language once (batched); hand back the leases of languages no longer enabled."""
        langs = list(self.daemon.languages.current.enabled)
        for lang in sorted(self._checked - set(langs)):
            self.daemon.release(lang)
        self._checked = set(langs)
        self.daemon.check_round(langs)

    def tick(self) -> None:
        """Reload languages.yaml when changed (or on SIGHUP) and keep one check job per enabled language."""
        try:
            self.daemon.reload()
        except Exception:
            log.exception("languages reload failed; keeping the config in force")
        self.sync_jobs()

    def sync_jobs(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        if self.batched:  # the round job reads the enabled languages itself
            return
        wanted = {f"check:{lang}": lang for lang in self.daemon.languages.current.enabled}
        have = {job.id for job in self.scheduler.get_jobs() if job.id.startswith("check:")}
        for job_id in have - set(wanted):
            self.scheduler.remove_job(job_id)
            self.daemon.release(job_id.removeprefix("check:"))
        for job_id in set(wanted) - have:
            every = IntervalTrigger(seconds=self.check_interval_s)
            self.scheduler.add_job(self.daemon.check, every, args=[wanted[job_id]], id=job_id, max_instances=1,
                                   coalesce=True, next_run_time=datetime.now(UTC))

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
