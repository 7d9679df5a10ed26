"""Per-message isolation: which failures are an outage (rewind and retry) and which belong to one message.

A batched stage (language ID, embedding, assignment) that raises is retried one message at a time: the
messages that fail alone while others succeed are the poison ones and are dead-lettered as ``internal_error``.
When every message fails alone, the input cannot be told from a failing backend, so the batch is rewound
(``BatchFailed``); after ``consumer.max_batch_failures`` failures in a row the monitor handles messages one at a
time and dead-letters the one that still fails. Infrastructure failures (Kafka, Redis, disk) are never
dead-lettered: they rewind and retry until the service is back; so does an embedding *service* that stopped
answering after its retries (``EmbedderUnavailable``, a ConnectionError, hence an OSError).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import kafka.errors

from compass.errors import CompassError
from infra.clients import REDIS_ERRORS
from infra.deadletter import DeadLetterError
from infra.errors import ServiceUnavailable
from infra.window import StaleCodebookError, WindowStateError

T = TypeVar("T")

# Failures of the infrastructure itself (Kafka, Redis and its state, disk): rewound and retried without end,
# never blamed on a message. Input cannot cause them: decode_event hands on only valid, bounded strings.
OUTAGE: tuple[type[BaseException], ...] = (
    OSError, ServiceUnavailable, kafka.errors.KafkaError, *REDIS_ERRORS, WindowStateError, StaleCodebookError,
)
# Never caught per message: an outage, or a dead letter that cannot be written (the monitor stops).
NOT_PER_MESSAGE: tuple[type[BaseException], ...] = (*OUTAGE, DeadLetterError)


class BatchFailed(CompassError, RuntimeError):
    """Every message of a stage failed on its own: maybe the backend, not the input. The batch is rewound."""


def describe(e: BaseException) -> str:
    """The exception's type and message, for a dead letter's detail."""
    return f"{type(e).__name__}: {e}"[:1000]


def isolate(items: Sequence[T], batch: Callable[[Sequence[T]], list[Any]], stage: str,
            *, alone_is_poison: bool) -> tuple[list[Any | None], dict[int, BaseException]]:
    """``batch(items)`` (one result per item); if it raises, ``batch([item])`` per item. Returns the results
    (None where it failed) and the failures by index. ``alone_is_poison``: a single item that fails is dead-lettered
    (the monitor sets it after max_batch_failures); otherwise a stage where every item failed raises BatchFailed."""
    if not items:
        return [], {}
    try:
        out = batch(items)
        return list(out), {}
    except NOT_PER_MESSAGE:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one message's handling is isolated below
        first: BaseException = e
    if len(items) == 1:
        if alone_is_poison:
            return [None], {0: first}
        raise BatchFailed(f"{stage} failed for the batch's only message ({describe(first)}); retrying") from first
    results: list[Any | None] = []
    failed: dict[int, BaseException] = {}
    for i, item in enumerate(items):
        try:
            results.append(batch([item])[0])
        except NOT_PER_MESSAGE:
            raise
        except Exception as e:  # noqa: BLE001
            results.append(None)
            failed[i] = e
    if len(failed) == len(items) and not alone_is_poison:
        raise BatchFailed(f"{stage} failed for every one of {len(items)} messages ({describe(first)}); "
                          "retrying the batch") from first
    return results, failed
