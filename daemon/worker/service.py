"""The worker process: Kafka intake into the Redis queue, one job at a time from the queue, events out.

Intake: each message of ``kafka.jobs_topic`` (group ``worker.group_id``) is decoded and added to the durable
queue (daemon/worker/queue.py), or dead-lettered (``bad_job`` when malformed, ``internal_error`` when its handling
raised); the jobs around it proceed (infra/intake.py). Then the offsets are committed; a Kafka or Redis failure
rewinds the poll and the run loop retries it. Jobs run from
the queue by kind: ``adapter_update`` (daemon/worker/pipeline.py) under the language's in-progress lock
``{prefix}:{lang}:worker-lock``, ``recluster`` (daemon/worker/recluster.py) under the global ``{prefix}:recluster:lock``
(a Lease renewed by a heartbeat thread while the job runs; a held lock postpones the job). With
``daemon.recluster: manual`` a recluster job is not run: it is dead-lettered (``recluster_manual``) and reported
with update_finished(ok=false, outcome manual). A failed attempt (either kind) waits ``retry_backoff_s``; after
``max_attempts`` the job is dead-lettered (reason ``max_attempts``) and update_finished(ok=false) is emitted.
Stop (SIGTERM): no new job is taken, the running one checkpoints and stays pending, and resumes from its
checkpoint at the next start (a re-fit starts over, or finishes its staged switch).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from compass.adapt import Interrupted
from compass.languages import LanguagesConfig
from daemon.worker.heartbeat import Heartbeat
from daemon.worker.metrics import WorkerMetrics
from daemon.worker.model import ModelHost
from daemon.worker.pipeline import JobContext, base_report, clustering_config, run_job, write_report
from daemon.worker.queue import JobQueue, PendingJob
from daemon.worker.recluster import recluster_lease, run_recluster
from infra.clients import REDIS_ERRORS
from infra.deadletter import DeadLetter, DeadLetterWriter
from infra.intake import IsolatedIntake
from infra.keys import Keys
from infra.lease import Lease
from infra.messages import Event, UpdateJob, decode_job, encode
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)
BAD_JOB, MAX_ATTEMPTS, RECLUSTER_MANUAL = "bad_job", "max_attempts", "recluster_manual"
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"adapter_update": run_job, "recluster": run_recluster}


def lock_key(lang: str, prefix: str) -> str:
    return Keys(prefix).worker_lock(lang)


class Worker:
    """``Worker(config, languages).run(stop)``; ``run_once`` and ``run_job`` for in-process use (demo, tests)."""

    def __init__(self, config: ServiceConfig, languages: LanguagesConfig, client: redis.Redis | None = None,
                 model: Any = None, tokenizer: Any = None, embedder: Any = None, consumer: Any = None,
                 producer: Any = None):
        from infra.clients import kafka_consumer, kafka_producer, redis_client
        from infra.embedders import make_embedder

        self.config = config
        clustering_config(config)  # worker.selection.params checked at start, not in the first job
        self.client = client or redis_client(config.redis)
        self.queue = JobQueue(self.client, config.redis.key_prefix)
        self.producer = producer or kafka_producer(config.kafka, acks="all")
        self.dead = DeadLetterWriter(self.producer, config.kafka.dead_letter_topic)
        self._consumer = consumer
        self._consumer_factory = lambda: kafka_consumer(config.kafka, config.worker.group_id,
                                                        [config.kafka.jobs_topic], auto_offset_reset="earliest")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ctx = JobContext(config, languages, self.client, ModelHost(config, model, tokenizer),
                              embedder or make_embedder(config.embedder), emit=self.emit)
        self.stop_event = threading.Event()
        self._intake: IsolatedIntake | None = None
        self.intake_errors = 0  # polls that failed on Kafka or Redis (retried)
        self.metrics = WorkerMetrics()
        self._dead_counted: dict[str, int] = {}  # intake dead letters already in metrics.dead_letters

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self._consumer_factory()
        return self._consumer

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        try:
            self.producer.send(self.config.kafka.events_topic, key=event.language.encode(),
                               value=encode(event)).get(timeout=10)
        except Exception as e:  # a missing notice must not fail the job; the report file still has it
            log.error("%s: could not emit %s for job %s: %s", event.language, event.type, event.job_id, e)

    # ------------------------------------------------------------------ intake

    def intake(self, timeout_ms: int = 500) -> int:
        """Move one poll's jobs into the queue (bad ones to the dead-letter topic), then commit; returns jobs added.
        Raises only on a Kafka or Redis failure, after rewinding to the first job not yet settled."""
        if self._intake is None:
            self._intake = IsolatedIntake(self.consumer, self.dead, self.client, BAD_JOB,
                                          self.config.worker.max_message_failures)
        try:
            return self._intake.poll(self._take, timeout_ms)
        finally:
            self._count_intake_dead_letters(self._intake.dead_lettered)

    def _count_intake_dead_letters(self, by_reason: dict[str, int]) -> None:
        """Carry the intake's dead letters since start (bad_job, internal_error) into the counter."""
        for reason, n in by_reason.items():
            if n > self._dead_counted.get(reason, 0):
                self.metrics.dead_letters.labels(reason).inc(n - self._dead_counted.get(reason, 0))
                self._dead_counted[reason] = n

    def _take(self, rec: Any) -> bool:
        job = decode_job(rec.value)  # BadMessage: dead-lettered as bad_job
        source = {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}
        if self.queue.add(job.job_id, job.to_json(), source):
            return True
        log.info("job %s is pending or done already; redelivery ignored", job.job_id)
        return False

    def _intake_safely(self, timeout_ms: int) -> None:
        """``intake`` for the run loop: a Kafka or Redis failure is logged and retried after a pause."""
        try:
            self.intake(timeout_ms)
        except Exception as e:
            self.intake_errors += 1
            self.metrics.intake_errors.inc()
            log.error("intake of %s failed (retried): %s: %s", self.config.kafka.jobs_topic, type(e).__name__, e)
            self.stop_event.wait(1.0)

    # ------------------------------------------------------------------ processing

    def process_due(self, max_jobs: int | None = None) -> int:
        """Run due jobs from the queue (oldest first) until none is left or asked to stop; returns jobs finished."""
        done = 0
        for entry in self.queue.due():
            if self.stop_event.is_set() or (max_jobs is not None and done >= max_jobs):
                break
            if self._process(entry):
                done += 1
        return done

    def _process(self, entry: PendingJob) -> bool:
        job = UpdateJob(**entry.job)
        if self.queue.is_done(job.job_id):
            self.queue.finish(job.job_id, "duplicate")
            return False
        if job.kind == "recluster" and self.config.daemon.recluster == "manual":
            return self._manual(entry, job)
        if job.kind == "recluster":  # one re-fit at a time, whichever language's job asked for it
            lease = recluster_lease(self.ctx, self.owner)
        else:
            lease = Lease(self.client, lock_key(job.language, self.config.redis.key_prefix), self.owner,
                          self.config.worker.lock_ttl_ms)
        if lease.acquire() is None:
            log.info("%s: job %s waits: another worker holds %s (%s)", job.language, job.job_id, lease.key,
                     lease.holder())
            self.queue.postpone(entry, min(5.0, self.config.worker.lock_ttl_ms / 1000))
            return False
        try:
            return self._attempt(entry, job, lease)
        finally:
            lease.release()

    def _attempt(self, entry: PendingJob, job: UpdateJob, lease: Lease) -> bool:
        attempt = entry.attempts + 1
        self.emit(Event("update_started", job.language, time.time(), job.job_id, {"attempt": attempt}))
        try:
            # an interrupted attempt is timed too: it ran until the worker was told to stop
            with Heartbeat(lease), self.metrics.job_seconds.labels(job.kind).time():
                report = RUNNERS[job.kind](self.ctx, job, should_stop=self.stop_event.is_set)
        except Interrupted as e:
            log.info("%s: job %s interrupted (%s); it stays pending", job.language, job.job_id, e)
            return False
        except Exception as e:  # any failure of the pipeline is retried, never fatal to the worker
            self.metrics.attempt_failures.labels(job.language, job.kind).inc()
            return self._failed(entry, job, e)
        self.metrics.jobs.labels(job.language, job.kind, report["outcome"]).inc()
        self.queue.finish(job.job_id, report["outcome"])
        self.emit(Event("update_finished", job.language, time.time(), job.job_id,
                        {"ok": True, "adapter_version": self.ctx.registry.current(job.language),
                         "outcome": report["outcome"], "error": None}))
        log.info("%s: job %s %s (version %s)", job.language, job.job_id, report["outcome"], report["version"])
        return True

    def _failed(self, entry: PendingJob, job: UpdateJob, error: Exception) -> bool:
        msg = f"{type(error).__name__}: {error}"
        wcfg = self.config.worker
        entry = self.queue.failed(entry, msg, wcfg.retry_backoff_s)
        log.error("%s: job %s attempt %d/%d failed: %s", job.language, job.job_id, entry.attempts,
                  wcfg.max_attempts, msg, exc_info=error)
        if entry.attempts < wcfg.max_attempts:
            return False
        self._give_up(entry, job, MAX_ATTEMPTS, "failed",
                      f"job {job.job_id} failed {entry.attempts} times; last error: {msg}", msg)
        shutil.rmtree(self.ctx.checkpoint_dir(job.job_id), ignore_errors=True)
        return True

    def _manual(self, entry: PendingJob, job: UpdateJob) -> bool:
        """``daemon.recluster: manual``: the job is not run; it is dead-lettered where ops see it, and reported
        with outcome ``manual`` so the daemon leaves ``updating`` without counting a failure."""
        msg = (f"job {job.job_id}: re-clustering is manual here (daemon.recluster: manual); run `compass codebook "
               "build --from-windows` to re-fit and re-reference every language, or set daemon.recluster: auto")
        log.warning("%s: %s", job.language, msg)
        self._give_up(entry, job, RECLUSTER_MANUAL, "manual", msg, msg)
        return True

    def _give_up(self, entry: PendingJob, job: UpdateJob, reason: str, outcome: str, detail: str, error: str) -> None:
        """Dead-letter ``job`` with ``reason``, count it, write its report and emit update_finished(ok=false)."""
        src = entry.source
        self.dead.send(DeadLetter(src.get("topic", self.config.kafka.jobs_topic), int(src.get("partition", -1)),
                                  int(src.get("offset", -1)), job.language.encode(), encode(job), [], reason,
                                  detail))
        self.dead.flush()
        self.metrics.dead_letters.labels(reason).inc()
        self.metrics.jobs.labels(job.language, job.kind, outcome).inc()
        kind = "update" if job.kind == "adapter_update" else job.kind
        report = base_report(job.job_id, job.language, kind, job.reason, time.time())
        report.update(finished_at=time.time(), error=error, parent=self.ctx.registry.current(job.language),
                      outcome=outcome)
        write_report(self.ctx.work_dir, report)
        self.queue.finish(job.job_id, outcome)
        self.emit(Event("update_finished", job.language, time.time(), job.job_id,
                        {"ok": False, "adapter_version": self.ctx.registry.current(job.language),
                         "outcome": outcome, "error": error}))

    # ------------------------------------------------------------------ loops

    def run_once(self, timeout_s: float = 1.0) -> int:
        """One intake poll, then every due job; returns how many jobs finished."""
        self.intake(int(timeout_s * 1000))
        return self.process_due()

    def run(self, stop: threading.Event | None = None, max_jobs: int | None = None, once: bool = False) -> int:
        """Until ``stop`` is set (or ``max_jobs`` finished, or, with ``once``, the queue is drained)."""
        if stop is not None:
            self.stop_event = stop
        done = 0
        while not self.stop_event.is_set():
            self._intake_safely(500)
            left = None if max_jobs is None else max_jobs - done
            try:
                done += self.process_due(left)
                if (max_jobs is not None and done >= max_jobs) or (once and not self.queue.due()):
                    break
            except REDIS_ERRORS as e:  # the queue is unreachable: the jobs stay pending, retried after a pause
                log.error("job queue unavailable (retried): %s: %s", type(e).__name__, e)
                self.stop_event.wait(1.0)
        return done

    def run_job(self, job: UpdateJob) -> dict[str, Any]:
        """The pipeline of one job in process, without the queue (the demo's path)."""
        return run_job(self.ctx, job, should_stop=self.stop_event.is_set)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self.producer.close(timeout=5)
