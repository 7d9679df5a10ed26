"""The dead-letter topic: bad input is re-produced there with its original bytes and why it was rejected.

Each dead letter keeps the original key, value and headers, plus:
  compass-dlq-reason            a short tag: a ``BadEvent`` reason (malformed_json, missing_text, ...), or
                                oversize, invalid_unicode, unsupported_schema (a compass-schema header other
                                than 1), ambiguous_schema (the header twice), too_deep, number_too_large,
                                non_finite_number, nul_character, internal_error (handling the message raised;
                                the detail names the exception), bad_quality (the query was counted; only its
                                quality score was unusable)

Only malformed input is dead-lettered: a well-formed query of an unconfigured or undetermined language is counted
as unserved (infra/unserved.py), not rejected.
  compass-dlq-detail            the human-readable message (names the field, the value and the fix)
  compass-source-topic          where the message was read
  compass-source-partition      (decimal)
  compass-source-offset         (decimal)

A dead letter always fits the producer's request limit (``max_bytes``, under the broker's default 1 MB
``message.max.bytes``): when the original key, value and headers plus ours would not, the value is cut to a
prefix (then the original headers and the key are dropped if still needed) and these are added:
  compass-dlq-truncated         what was cut: "value", "value,headers" or "value,headers,key"
  compass-dlq-original-bytes    the original value's size (decimal)
  compass-dlq-sha256            hex digest of the original value
A dead letter the broker still refuses raises ``DeadLetterError``: the monitor stops rather than retry forever.

``DeadLetterWriter.flush()`` blocks until the broker acknowledged every dead letter sent so far and raises
if one failed: the monitor calls it before committing the batch's offsets, so a message is never
committed past without being either applied or dead-lettered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from compass.errors import CompassError

REASON_HEADER = "compass-dlq-reason"
DETAIL_HEADER = "compass-dlq-detail"
SOURCE_TOPIC_HEADER = "compass-source-topic"
SOURCE_PARTITION_HEADER = "compass-source-partition"
SOURCE_OFFSET_HEADER = "compass-source-offset"
TRUNCATED_HEADER = "compass-dlq-truncated"
ORIGINAL_BYTES_HEADER = "compass-dlq-original-bytes"
SHA256_HEADER = "compass-dlq-sha256"
_OURS = (REASON_HEADER, DETAIL_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER, SOURCE_OFFSET_HEADER,
         TRUNCATED_HEADER, ORIGINAL_BYTES_HEADER, SHA256_HEADER)
MAX_BYTES = 1_000_000  # below the broker's default message.max.bytes (1,048,588) and the producer's 1 MiB request
_RECORD_OVERHEAD = 512  # record batch and record framing, generously
_HEADER_OVERHEAD = 16  # per header: varint lengths
MAX_DETAIL_CHARS = 2000

# Reasons decided by the monitor itself (decode_event's BadEvent reasons come on top).
OVERSIZE = "oversize"
INVALID_UNICODE = "invalid_unicode"
BAD_QUALITY = "bad_quality"
UNSUPPORTED_SCHEMA = "unsupported_schema"
AMBIGUOUS_SCHEMA = "ambiguous_schema"  # more than one compass-schema header
INTERNAL_ERROR = "internal_error"  # handling the message raised (a bug or a backend's failure on this input)


class DeadLetterError(CompassError, RuntimeError):
    """A dead letter could not be written; the monitor stops instead of retrying the batch forever."""


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
    truncated: tuple[tuple[str, bytes], ...] = ()  # our truncation headers, set by ``fit``

    def out_headers(self) -> list[tuple[str, bytes]]:
        # A message dead-lettered twice (replayed from the DLQ) keeps only the latest verdict.
        kept = [(k, v) for k, v in self.headers if k not in _OURS]
        return kept + list(self.truncated) + [
            (REASON_HEADER, self.reason.encode()),
            (DETAIL_HEADER, self.detail[:MAX_DETAIL_CHARS].encode("utf-8", "replace")),
            (SOURCE_TOPIC_HEADER, self.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.offset).encode()),
        ]


def _size(letter: DeadLetter) -> int:
    headers = sum(len(k.encode("utf-8", "replace")) + len(v or b"") + _HEADER_OVERHEAD for k, v in letter.out_headers())
    return _RECORD_OVERHEAD + len(letter.key or b"") + len(letter.value or b"") + headers


def fit(letter: DeadLetter, max_bytes: int = MAX_BYTES) -> DeadLetter:
    """``letter`` as is when it fits ``max_bytes``, else with a value prefix (and, only if needed, without the
    original headers and key) and the truncation headers; see the module docstring."""
    if _size(letter) <= max_bytes:
        return letter
    value = letter.value or b""
    cut = ["value"]
    marks = lambda: ((TRUNCATED_HEADER, ",".join(cut).encode()),  # noqa: E731
                     (ORIGINAL_BYTES_HEADER, str(len(value)).encode()),
                     (SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()))
    out = replace(letter, value=b"", truncated=marks())
    if _size(out) > max_bytes:
        cut.append("headers")
        out = replace(out, headers=[(k, v) for k, v in out.headers if k in _OURS], truncated=marks())
    if _size(out) > max_bytes:
        cut.append("key")
        out = replace(out, key=None, truncated=marks())
    room = max_bytes - _size(out)
    return replace(out, value=value[: max(0, room)])


def dead_letter_of(record: Any, reason: str, detail: str) -> DeadLetter:
    """The dead letter of a kafka-python ``ConsumerRecord``."""
    return DeadLetter(record.topic, record.partition, record.offset, record.key, record.value,
                      list(record.headers or []), reason, detail)


# Errors that mean "the broker is not there right now": retried, unlike a refusal of the letter itself.
_UNREACHABLE: tuple[type[Exception], ...] = (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError,
                                             kafka_errors.NodeNotReadyError)


class DeadLetterWriter:
    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0, max_bytes: int = MAX_BYTES):
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._futures: list[tuple[DeadLetter, Any]] = []

    def send(self, letter: DeadLetter) -> None:
        letter = fit(letter, self.max_bytes)
        self._futures.append((letter, self.producer.send(self.topic, key=letter.key, value=letter.value,
                                                         headers=letter.out_headers())))

    def flush(self) -> int:
        """Wait for the broker's ack of every pending dead letter; returns how many. A broker that cannot be
        reached raises its KafkaError (retriable: the batch is rewound); a letter the broker refuses for what it
        is (too large, invalid) raises DeadLetterError."""
        futures, self._futures = self._futures, []
        if not futures:
            return 0
        self.producer.flush(timeout=self.timeout_s)
        for letter, f in futures:
            try:
                f.get(timeout=self.timeout_s)  # re-raises the send's KafkaError
            except KafkaError as e:
                if getattr(e, "retriable", False) or isinstance(e, _UNREACHABLE):
                    raise
                raise DeadLetterError(
                    f"dead letter of {letter.topic}:{letter.partition}@{letter.offset} (reason {letter.reason}, "
                    f"{_size(letter)} bytes) was refused by topic {self.topic!r}: {e!r}; raise the topic's "
                    "max.message.bytes or lower consumer.max_dead_letter_bytes, then restart"
                ) from e
        return len(futures)

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)


class NullDeadLetters:
    """A dead-letter writer that writes nothing (a null object, like river's NoDrift): the path that must not
    re-send dead letters (a rebuild re-reads history whose bad messages were dead-lettered already) uses it
    instead of ``None`` checks. The caller still counts the letters in its stats and metrics, as before."""

    def send(self, letter: DeadLetter) -> None:
        """Drop ``letter``."""

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to close."""
