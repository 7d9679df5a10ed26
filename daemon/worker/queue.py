"""The worker's durable job queue in Redis, so a long job never stalls the Kafka consumer group.

A job read from compass.jobs is added here, then its offset is committed: a crash after the add re-delivers the
message, and the add is idempotent (same job_id: already pending or done -> nothing). Keys (one hash tag, so a
Redis Cluster keeps them in one slot and MULTI works)::

  {prefix}:{worker}:pending         hash   job_id -> JSON {job, attempts, next_try_at, source, enqueued_at}
  {prefix}:{worker}:done:<job_id>   string outcome, expires after ``done_ttl_s`` (redelivery de-duplication)

Why not arq or rq: their producers enqueue through their own API, while our jobs arrive on Kafka and the queue
only has to bridge "offset committed" to "job finished"; a job (minutes to hours of training on a model loaded
once per process, see ModelHost) must run in the worker's own thread, not in an rq fork or an arq asyncio task
with a job timeout, and it checkpoints and stays pending on SIGTERM instead of being retried as failed. One job
per language across workers comes from the fenced, heartbeated Lease ``{prefix}:{ll}:worker-lock``, which
neither library has (arq de-duplicates by job id only); the dead letter after ``max_attempts`` goes to a Kafka
topic; and neither library keeps its keys in one hash tag, which a Redis Cluster needs for MULTI.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from infra.keys import Keys

DONE_TTL_S = 7 * 86400


@dataclass
class PendingJob:
    job_id: str
    job: dict[str, Any]  # UpdateJob.to_json()
    attempts: int = 0  # attempts that failed so far
    next_try_at: float = 0.0
    enqueued_at: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)  # topic, partition, offset (for the dead letter)
    last_error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> PendingJob:
        return cls(**json.loads(raw))


class JobQueue:
    def __init__(self, client: redis.Redis, prefix: str = "compass", done_ttl_s: int = DONE_TTL_S):
        self.client = client
        self._keys = Keys(prefix)
        self.pending_key = self._keys.worker_pending()
        self.done_ttl_s = done_ttl_s

    def add(self, job_id: str, job: dict[str, Any], source: dict[str, Any] | None = None) -> bool:
        """Queue a job unless it is pending or done already; True when it was added."""
        if self.client.exists(self._keys.worker_done(job_id)):
            return False
        entry = PendingJob(job_id, job, enqueued_at=time.time(), source=dict(source or {}))
        return bool(self.client.hsetnx(self.pending_key, job_id, entry.to_json()))

    def get(self, job_id: str) -> PendingJob | None:
        raw = self.client.hget(self.pending_key, job_id)
        return PendingJob.from_json(raw) if raw is not None else None

    def pending(self) -> list[PendingJob]:
        """Every pending job, oldest first."""
        entries = [PendingJob.from_json(v) for v in self.client.hvals(self.pending_key)]
        return sorted(entries, key=lambda e: (e.enqueued_at, e.job_id))

    def due(self, now: float | None = None) -> list[PendingJob]:
        now = time.time() if now is None else now
        return [e for e in self.pending() if e.next_try_at <= now]

    def is_done(self, job_id: str) -> bool:
        return bool(self.client.exists(self._keys.worker_done(job_id)))

    def failed(self, entry: PendingJob, error: str, backoff_s: float) -> PendingJob:
        """Record a failed attempt: attempts + 1, tried again after ``backoff_s``."""
        entry.attempts += 1
        entry.last_error = error
        entry.next_try_at = time.time() + backoff_s
        self.client.hset(self.pending_key, entry.job_id, entry.to_json())
        return entry

    def postpone(self, entry: PendingJob, delay_s: float) -> None:
        entry.next_try_at = time.time() + delay_s
        self.client.hset(self.pending_key, entry.job_id, entry.to_json())

    def finish(self, job_id: str, outcome: str) -> None:
        """Remove from pending and remember as done (atomically)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.pending_key, job_id)
            pipe.set(self._keys.worker_done(job_id), outcome, ex=self.done_ttl_s)
            pipe.execute()
