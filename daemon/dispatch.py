"""Kafka I/O of the daemon: jobs out on compass.jobs, events out and worker reports in on compass.events.

Sends are synchronous (wait for the broker's ack): the daemon marks a language ``updating`` only for a job
the broker has accepted, and reverts the mark when the send fails.

Worker reports are read by one consumer group shared by all daemon replicas (each report is handled once)
and appended to the language's inbox list ``{prefix}:{lang}:inbox`` in Redis; the replica holding the
language's lease applies the inbox on its next check, so every state change happens under the lease.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer

from compass.config import KafkaConfig
from consumers.clients import kafka_consumer, kafka_producer
from daemon import history
from daemon.messages import (
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    WORKER_EVENTS,
    BadMessage,
    Event,
    UpdateJob,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 10.0
INBOX_MAX = 1000  # a language's unapplied reports; older ones are dropped (they are stale by then)


def inbox_key(lang: str, prefix: str) -> str:
    return f"{prefix}:{{{lang}}}:inbox"


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
    """Reads worker reports from compass.events into the languages' Redis inboxes (not thread-safe: one poller)."""

    def __init__(self, cfg: KafkaConfig, group_id: str, client: redis.Redis, prefix: str,
                 consumer: KafkaConsumer | None = None, events_max: int = history.EVENTS_MAX,
                 **consumer_overrides: Any):
        self.client = client
        self.prefix = prefix
        self.events_max = events_max  # timeline entries kept per language (daemon/history.py)
        self.consumer = consumer or kafka_consumer(cfg, group_id, [cfg.events_topic], **consumer_overrides)
        self.bad = 0  # malformed messages skipped

    def poll(self, timeout_ms: int = 200) -> int:
        """Move the reports of one poll into the inboxes and every event into its language's timeline, then
        commit; returns how many reports were queued."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        queued = recorded = 0
        pipe = self.client.pipeline(transaction=False)
        for records in batches.values():
            for rec in records:
                try:
                    event = decode_event(rec.value)
                except BadMessage as e:
                    self.bad += 1
                    log.warning("compass.events %s:%d@%d skipped: %s", rec.topic, rec.partition, rec.offset, e)
                    continue
                history.queue_event(pipe, event, self.prefix, self.events_max)  # the status page's timeline
                recorded += 1
                if event.type not in WORKER_EVENTS:
                    continue  # our own events (drift_detected, ...) come back on the same topic
                key = inbox_key(event.language, self.prefix)
                pipe.rpush(key, encode(event))
                pipe.ltrim(key, -INBOX_MAX, -1)
                queued += 1
        if recorded:
            pipe.execute()
        if batches:
            self.consumer.commit()  # after the inbox write: a crash in between re-delivers, never loses
        return queued

    def close(self) -> None:
        self.consumer.close()


def drain_inbox(client: redis.Redis, lang: str, prefix: str) -> list[Event]:
    """Take every queued report of ``lang`` (atomically); malformed entries are logged and dropped."""
    key = inbox_key(lang, prefix)
    with client.pipeline(transaction=True) as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
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
