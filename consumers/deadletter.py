"""The dead-letter topic: bad input is re-produced there with its original bytes and why it was rejected.

Each dead letter keeps the original key, value and headers, plus:
  compass-dlq-reason            a short tag: a ``BadEvent`` reason (malformed_json, missing_text, ...), or
                                oversize, invalid_unicode, unsupported_schema (a compass-schema header other
                                than 1), bad_quality (the query was counted; only its quality score was unusable)

Only malformed input is dead-lettered: a well-formed query of an unconfigured or undetermined language is counted
as unserved (consumers/unserved.py), not rejected.
  compass-dlq-detail            the human-readable message (names the field, the value and the fix)
  compass-source-topic          where the message was read
  compass-source-partition      (decimal)
  compass-source-offset         (decimal)

``DeadLetterWriter.flush()`` blocks until the broker acknowledged every dead letter sent so far and raises
if one failed: the monitor calls it before committing the batch's offsets, so a message is never
committed past without being either applied or dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

REASON_HEADER = "compass-dlq-reason"
DETAIL_HEADER = "compass-dlq-detail"
SOURCE_TOPIC_HEADER = "compass-source-topic"
SOURCE_PARTITION_HEADER = "compass-source-partition"
SOURCE_OFFSET_HEADER = "compass-source-offset"
_OURS = (REASON_HEADER, DETAIL_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER, SOURCE_OFFSET_HEADER)

# Reasons decided by the monitor itself (decode_event's BadEvent reasons come on top).
OVERSIZE = "oversize"
INVALID_UNICODE = "invalid_unicode"
BAD_QUALITY = "bad_quality"
UNSUPPORTED_SCHEMA = "unsupported_schema"


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message: where it came from, its original bytes, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    detail: str

    def out_headers(self) -> list[tuple[str, bytes]]:
        # A message dead-lettered twice (replayed from the DLQ) keeps only the latest verdict.
        kept = [(k, v) for k, v in self.headers if k not in _OURS]
        return kept + [
            (REASON_HEADER, self.reason.encode()),
            (DETAIL_HEADER, self.detail.encode("utf-8", "replace")),
            (SOURCE_TOPIC_HEADER, self.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.offset).encode()),
        ]


def dead_letter_of(record: Any, reason: str, detail: str) -> DeadLetter:
    """The dead letter of a kafka-python ``ConsumerRecord``."""
    return DeadLetter(record.topic, record.partition, record.offset, record.key, record.value,
                      list(record.headers or []), reason, detail)


class DeadLetterWriter:
    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0):
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self._futures: list[Any] = []

    def send(self, letter: DeadLetter) -> None:
        self._futures.append(
            self.producer.send(self.topic, key=letter.key, value=letter.value, headers=letter.out_headers())
        )

    def flush(self) -> int:
        """Wait for the broker's ack of every pending dead letter; returns how many; raises if one failed."""
        futures, self._futures = self._futures, []
        if not futures:
            return 0
        self.producer.flush(timeout=self.timeout_s)
        for f in futures:
            f.get(timeout=self.timeout_s)  # re-raises the send's KafkaError
        return len(futures)

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
