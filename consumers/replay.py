"""Replays records as query events onto the queries topic, as a model server would produce them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compass.data import Record
from consumers.events import SCHEMA_HEADER, SCHEMA_VERSION, QueryEvent, encode_event
from infra.clients import kafka_producer
from infra.settings import KafkaConfig


def to_event(record: Record, run_id: str, with_lang: bool = False, with_response: bool = False) -> QueryEvent:
    """The event a model server would send for ``record``. The corpus language and topic travel in
    ``meta`` so a run can be scored; ``lang`` is left out unless asked, so language ID does the work.
    ``with_response``: the record's response goes in ``meta.response``, as a service that sends reviewed answers
    does (a labelled query, which the worker may select for training)."""
    meta = {"run": run_id, "corpus_lang": record.lang, "topic": record.topic}
    if with_response and record.response:
        meta["response"] = record.response
    return QueryEvent(id=f"{run_id}:{record.id}", text=record.text, lang=record.lang if with_lang else None,
                      meta=meta)


def replay(
    cfg: KafkaConfig,
    events: Sequence[QueryEvent],
    topic: str | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Produce ``events`` (key = event id) and wait until the broker acknowledged every one."""
    producer = kafka_producer(cfg, acks="all", linger_ms=5)
    headers = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
    try:
        for i, event in enumerate(events, 1):
            producer.send(topic or cfg.queries_topic, key=event.id.encode(), value=encode_event(event),
                          headers=headers)
            if on_sent and i % 100 == 0:
                on_sent(100)
        producer.flush()
        if on_sent:
            on_sent(len(events) % 100)
    finally:
        producer.close()
    return len(events)
