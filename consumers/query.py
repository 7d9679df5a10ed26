"""One polled query as it goes through a batch, and the decoding of Kafka records into queries.

A ``Query`` is created by ``decode`` and gains, stage by stage (``dataclasses.replace``), its language, whether it
is served, its embedding, its cluster bucket and its quality score: one record per query instead of parallel
lists. A record that cannot become a query is a ``DeadLetter`` with its reason (see infra/deadletter.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from consumers.events import SCHEMA_HEADER, SCHEMA_VERSION, BadEvent, QueryEvent, decode_event
from infra import deadletter as dl
from infra.isolate import describe
from infra.safejson import JsonLimits
from infra.unserved import Traffic
from infra.window import Assignment


@dataclass(frozen=True, eq=False)
class Query:
    """A decoded query event and what the batch learnt about it so far."""

    record: Any  # the Kafka record: its position, and its original bytes for a dead letter
    event: QueryEvent
    lang: str | None = None  # the event's own language, else the identified one
    confidence: float = 1.0  # 1.0 where the producer gave the language
    served: bool = False  # an enabled language: goes to that language's window
    sampled_out: bool = False  # served but outside its language's sample (compass/sampling.py): counted, not embedded
    rate: float = 1.0  # the sampling rate its language's sample was drawn at (1.0: not sampled)
    traffic: Traffic | None = None  # its record for the unserved store (served or not), set by routing
    vector: np.ndarray | None = None  # its embedding (served queries only)
    bucket: int | None = None  # its cluster id in [0, K), K for noise
    quality: float | None = None  # a usable quality score from meta[consumer.quality_meta_key]

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def text(self) -> str:
        return self.event.text

    @property
    def position(self) -> tuple[str, int, int]:
        return self.record.topic, self.record.partition, self.record.offset

    def assignment(self, max_chars: int) -> Assignment:
        """Its contribution to the window (the stored text is the embedded one: bounded in Redis too)."""
        topic, partition, offset = self.position
        # meta.response labels the query (a reviewed answer): a labelled window row COMPASS may train on (plan.py)
        response = self.event.meta.get("response") if isinstance(self.event.meta, dict) else None
        response = response[:max_chars] if isinstance(response, str) and response.strip() else None
        return Assignment(self.id, int(self.bucket), topic, partition, offset, self.text[:max_chars], self.quality,
                          response)

    def dead_letter(self, reason: str, detail: str) -> dl.DeadLetter:
        return dl.dead_letter_of(self.record, reason, detail)


def check_record(r: Any, limit: int) -> tuple[str | None, str]:
    """(reason, detail) of a message refused before decoding (size, schema header), else (None, "")."""
    size = len(r.value or b"")
    if size > limit:
        return dl.OVERSIZE, (f"message value is {size} bytes; the limit is consumer.max_message_bytes = {limit}; "
                             "shorten the query or raise the limit")
    schemas = [v for k, v in (r.headers or []) if k == SCHEMA_HEADER]
    if len(schemas) > 1:
        return dl.AMBIGUOUS_SCHEMA, (f"header {SCHEMA_HEADER!r} appears {len(schemas)} times ({schemas[:4]!r}); "
                                     "send it once (or leave it out for version 1)")
    if schemas and schemas[0] != str(SCHEMA_VERSION).encode():
        return dl.UNSUPPORTED_SCHEMA, (
            f"header {SCHEMA_HEADER!r} is {schemas[0]!r:.80}; this consumer reads schema version "
            f"{SCHEMA_VERSION}; upgrade compass or produce version-1 events (the header may be left out)")
    return None, ""


def decode(records: list[Any], max_bytes: int, limits: JsonLimits) -> tuple[list[Query], list[dl.DeadLetter]]:
    """The records that are valid query events, as queries, and a dead letter for each of the others."""
    good: list[Query] = []
    bad: list[dl.DeadLetter] = []
    for r in records:
        try:
            reason, detail = check_record(r, max_bytes)
            if reason is None:
                event = decode_event(r.value or b"", limits)
                good.append(Query(r, event, lang=event.lang))
                continue
        except BadEvent as e:
            reason, detail = e.reason, str(e)
        except Exception as e:  # noqa: BLE001 - decoding is pure: whatever it raises is this message's fault
            reason, detail = dl.INTERNAL_ERROR, f"decoding raised {describe(e)}"
        bad.append(dl.dead_letter_of(r, reason, detail))
    return good, bad
