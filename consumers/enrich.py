"""The per-batch step every query goes through: language ID where ``lang`` is absent, one batched
embedding call. Kept apart from the Kafka loop so the monitor consumer and the demo share it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compass.embed.base import Embedder
from compass.langid import LanguageIdentifier
from consumers.events import QueryEvent


@dataclass(frozen=True)
class EnrichedBatch:
    events: list[QueryEvent]
    langs: list[str]  # the event's own lang, else the identified one ('und' below the threshold)
    confidences: list[float]  # 1.0 where the producer gave the language
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised


def enrich(events: Sequence[QueryEvent], identifier: LanguageIdentifier, embedder: Embedder) -> EnrichedBatch:
    events = list(events)
    missing = [i for i, e in enumerate(events) if e.lang is None]
    found = identifier.identify_batch([events[i].text for i in missing])
    langs = [e.lang or "" for e in events]
    conf = [1.0] * len(events)
    for i, ident in zip(missing, found, strict=True):
        langs[i], conf[i] = ident.lang, ident.confidence
    return EnrichedBatch(events, langs, conf, embedder.encode([e.text for e in events]))
