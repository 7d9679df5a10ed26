"""Per-message isolation of a Kafka intake (the daemon's worker reports, the worker's jobs).

Each record of a poll is *settled* on its own: applied by the caller's ``handle``, or dead-lettered:
  - ``BadMessage`` (the schema, the language code, ...)     -> the intake's bad reason (``bad_event``, ``bad_job``)
  - any other exception but an infrastructure one (a bug)    -> ``internal_error``, detail ``Type: message``
  - a Kafka or Redis error: if Redis answers PING the record is retried (the poll stops, the partitions are
    rewound to the first unsettled record) and after ``max_failures`` failures in a row it is dead-lettered
    (``internal_error``); while Redis does not answer nothing is counted: the outage is retried, never blamed
    on a message.
The dead letters are acknowledged by the broker before the offsets are committed; when that fails the whole
poll is done again (at least once: a report or job applied twice is ignored by its reader).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from infra.clients import REDIS_ERRORS
from infra.deadletter import INTERNAL_ERROR, DeadLetterWriter, dead_letter_of
from infra.messages import BadMessage

log = logging.getLogger(__name__)
INFRA_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, KafkaError)
MAX_FAILURES = 3
DETAIL_MAX = 1000  # characters of a dead letter's detail header
__all__ = ["INFRA_ERRORS", "INTERNAL_ERROR", "MAX_FAILURES", "IsolatedIntake"]


class IsolatedIntake:
    """``poll(handle)``: one poll of ``consumer``, each record settled on its own, then the dead letters flushed
    and the offsets committed. ``handle(record)`` applies one record and returns whether it counts (queued)."""

    def __init__(self, consumer: KafkaConsumer, dead: DeadLetterWriter, client: redis.Redis, bad_reason: str,
                 max_failures: int = MAX_FAILURES):
        self.consumer = consumer
        self.dead = dead
        self.client = client
        self.bad_reason = bad_reason
        self.max_failures = max_failures
        self.dead_lettered: dict[str, int] = {}  # reason -> count, since start
        self._failures: tuple[tuple[str, int, int], int] | None = None  # (topic, partition, offset), failures

    def poll(self, handle: Callable[[Any], bool], timeout_ms: int = 200) -> int:
        batches = self.consumer.poll(timeout_ms=timeout_ms)  # a Kafka failure here consumed nothing
        if not batches:
            return 0
        start = {tp: records[0].offset for tp, records in batches.items()}
        resume = dict(start)  # per partition: the first record not settled yet
        counted = 0
        try:
            for tp, records in batches.items():
                for rec in records:
                    counted += self._settle(rec, handle)
                    resume[tp] = rec.offset + 1
            self.dead.flush()
            self.consumer.commit()  # after the writes and the dead letters: a crash re-delivers, never loses
        except Exception:
            try:
                self.dead.flush()
            except Exception as e:  # a dead letter may be lost: settle the whole poll again
                log.error("dead-letter flush failed (%s); the poll is read again", e)
                resume = start
            self._rewind(resume)
            raise
        return counted

    def _settle(self, rec: Any, handle: Callable[[Any], bool]) -> int:
        where = (rec.topic, rec.partition, rec.offset)
        try:
            ok = handle(rec)
        except BadMessage as e:
            self._dead_letter(rec, self.bad_reason, str(e))
            return 0
        except INFRA_ERRORS as e:
            if not self._redis_answers():
                raise  # an outage: retried without blaming the message
            n = (self._failures[1] if self._failures and self._failures[0] == where else 0) + 1
            if n < self.max_failures:
                self._failures = (where, n)
                log.warning("%s:%d@%d failed (%d/%d), retried: %s: %s", *where, n, self.max_failures,
                            type(e).__name__, e)
                raise
            self._failures = None
            self._dead_letter(rec, INTERNAL_ERROR, f"failed {n} times in a row; last: {type(e).__name__}: {e}")
            return 0
        except Exception as e:  # a bug met by this message: dead-lettered, the others go on
            log.exception("%s:%d@%d: handling raised", *where)
            self._dead_letter(rec, INTERNAL_ERROR, f"{type(e).__name__}: {e}")
            return 0
        self._failures = None
        return int(bool(ok))

    def _dead_letter(self, rec: Any, reason: str, detail: str) -> None:
        detail = detail if len(detail) <= DETAIL_MAX else detail[:DETAIL_MAX] + "..."
        log.warning("%s:%d@%d dead-lettered (%s): %s", rec.topic, rec.partition, rec.offset, reason, detail)
        self.dead.send(dead_letter_of(rec, reason, detail))
        self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1

    def _redis_answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except REDIS_ERRORS:
            return False

    def _rewind(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            try:
                self.consumer.seek(tp, offset)
            except Exception as e:  # revoked by a rebalance: its new owner starts from the committed offset
                log.warning("could not rewind %s to %d: %s", tp, offset, e)
