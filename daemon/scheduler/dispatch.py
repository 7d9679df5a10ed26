"""Kafka I/O of the daemon: jobs out on compass.jobs, events out and worker reports in on compass.events.

Sends are synchronous (wait for the broker's ack): the daemon marks a language ``updating`` only for a job
the broker has accepted, and reverts the mark when the send fails.

Worker reports are read by one consumer group shared by all daemon replicas (each report is handled once)
and appended to the language's inbox list ``{prefix}:{lang}:inbox`` in Redis; the replica holding the
language's lease applies the inbox on its next check, so every state change happens under the lease.
Each report is settled on its own (infra/intake.py): a malformed one (or one whose handling raised) is
dead-lettered and the reports around it still reach their inboxes; only a Kafka or Redis failure rewinds.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer

from infra import history
from infra.clients import kafka_consumer, kafka_producer
from infra.deadletter import DeadLetterWriter
from infra.intake import MAX_FAILURES, IsolatedIntake
from infra.keys import Keys
from infra.messages import (
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    WORKER_EVENTS,
    BadMessage,
    Event,
    UpdateJob,
    decode_event,
    encode,
)
from infra.settings import KafkaConfig

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 10.0
INBOX_MAX = 1000  # a language's unapplied reports; older ones are dropped (they are stale by then)
BAD_EVENT = "bad_event"  # the dead-letter reason of a malformed event


def inbox_key(lang: str, prefix: str) -> str:
    return Keys(prefix).inbox(lang)


class Dispatcher:
    """Publishes jobs and events; one KafkaProducer (thread-safe) shared by all checks."""

    def __init__(self, cfg: KafkaConfig, producer: KafkaProducer | None = None):
        self.cfg = cfg
        self.producer = producer or kafka_producer(cfg, acks="all")

    def _send(self, topic: str, key: str, value: bytes) -> None:
        headers = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
        self.producer.send(topic, key=key.encode(), value=value, headers=headers).get(timeout=SEND_TIMEOUT_S)

    def send_job(self, job: UpdateJob) -> None:
        self._send(self.cfg.jobs_topic, job.language, encode(job))

    def emit(self, event: Event) -> None:
        self._send(self.cfg.events_topic, event.language, encode(event))

    def close(self) -> None:
        self.producer.close(timeout=5)


class EventInbox:
    """Reads worker reports from compass.events into the languages' Redis inboxes (not thread-safe: one poller).

    ``dead``: where malformed events go (default: a writer on its own producer, to ``cfg.dead_letter_topic``)."""

    def __init__(self, cfg: KafkaConfig, group_id: str, client: redis.Redis, prefix: str,
                 consumer: KafkaConsumer | None = None, events_max: int = history.EVENTS_MAX,
                 dead: DeadLetterWriter | None = None, max_failures: int = MAX_FAILURES, **consumer_overrides: Any):
        self.client = client
        self.prefix = prefix
        self.events_max = events_max  # timeline entries kept per language (infra/history.py)
        self.consumer = consumer or kafka_consumer(cfg, group_id, [cfg.events_topic], **consumer_overrides)
        self._own_dead = dead is None
        self.dead = dead or DeadLetterWriter(kafka_producer(cfg, acks="all"), cfg.dead_letter_topic)
        self.intake = IsolatedIntake(self.consumer, self.dead, client, BAD_EVENT, max_failures)

    @property
    def bad(self) -> int:
        """Messages dead-lettered since start (malformed, or their handling failed)."""
        return sum(self.intake.dead_lettered.values())

    def poll(self, timeout_ms: int = 200) -> int:
        """Move the reports of one poll into the inboxes and every event into its language's timeline, then
        commit; returns how many reports were queued. Raises only on a Kafka or Redis failure (after rewinding
        to the first report not yet settled)."""
        return self.intake.poll(self._handle, timeout_ms)

    def _handle(self, rec: Any) -> bool:
        event = decode_event(rec.value)  # BadMessage: dead-lettered; the language is a checked code from here on
        with self.client.pipeline(transaction=False) as pipe:
            history.queue_event(pipe, event, self.prefix, self.events_max)  # the status page's timeline
            worker = event.type in WORKER_EVENTS  # not our own events (drift_detected, ...) from the same topic
            if worker:
                key = inbox_key(event.language, self.prefix)
                pipe.rpush(key, encode(event))
                pipe.ltrim(key, -INBOX_MAX, -1)
            pipe.execute()
        return worker

    def close(self) -> None:
        self.consumer.close()
        if self._own_dead:
            self.dead.close()


def drain_inbox(client: redis.Redis, lang: str, prefix: str) -> list[Event]:
    """Take every queued report of ``lang`` (atomically); malformed entries are logged and dropped."""
    key = inbox_key(lang, prefix)
    with client.pipeline(transaction=True) as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
    return decode_inbox(key, raw)


def decode_inbox(key: str, raw: list[bytes]) -> list[Event]:
    """The reports of an inbox's entries (``key``: where they were read); malformed entries are logged and dropped."""
    events = []
    for item in raw:
        try:
            events.append(decode_event(item))
        except BadMessage as e:
            log.warning("%s: dropped an unreadable report: %s", key, e)
    return events


def requeue_inbox(client: redis.Redis, lang: str, prefix: str, events: list[Event]) -> None:
    """Put reports taken by ``drain_inbox`` back at the head of the inbox, in their order (a check that could not
    complete hands them to the next one)."""
    if events:
        client.lpush(inbox_key(lang, prefix), *[encode(e) for e in reversed(events)])
