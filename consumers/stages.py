"""The per-query stages of one batch: language ID, routing (served or not), embedding, cluster assignment,
quality score, grouping by window.

Isolation (infra/isolate.py): an exception while handling one query (language ID, embedding, assignment)
dead-letters that query as ``internal_error`` with the exception in the detail, and the rest of the batch
proceeds; a batched stage that fails is retried query by query to find the poison one (``alone``: the batch is
a single message handled alone after repeated failures, so its failure is its own).

Served and unserved: a query of a language enabled in languages.yaml goes to that language's window; a query
of any other language, or of none (``und``: language ID could not tell), never does: it is counted as
*unserved* under its detected language (infra/unserved.py) so that the daemon can announce an emerging
language. It is not dead-lettered: the dead-letter topic is for malformed input only.

Sampling (compass/sampling.py, consumers/sampler.py): a query of a served language with a rate < 1 (fixed, or the
frozen rate of its time bucket under a cap) is kept or sampled out by its event id, before embedding; an event that
carries its language never costs a language ID either. A sampled-out query is counted and committed, never
embedded nor put in a window, never dead-lettered.

Each stage takes the queries and a list that collects dead letters, and returns the queries that go on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import numpy as np

from compass.langid import Identification
from compass.route.decision import classify
from compass.sampling import keep
from consumers.query import Query
from infra import deadletter as dl
from infra.isolate import describe, isolate
from infra.unserved import Traffic
from infra.window import Assignment


def _drop(queries: list[Query], failed: dict[int, BaseException], stage: str, bad: list[dl.DeadLetter]) -> list[Query]:
    """The queries a stage did not fail on; the others are dead-lettered as internal_error."""
    for j, e in failed.items():
        bad.append(queries[j].dead_letter(dl.INTERNAL_ERROR, f"{stage} raised {describe(e)}"))
    return [q for j, q in enumerate(queries) if j not in failed]


def identify(queries: list[Query], identifier: Any, max_chars: int, bad: list[dl.DeadLetter], *,
             alone: bool) -> list[Query]:
    """Language ID where ``lang`` is absent (on the text cut to ``max_chars``)."""
    missing = [i for i, q in enumerate(queries) if q.lang is None]
    found, failed = isolate([queries[i].text[:max_chars] for i in missing],
                            lambda texts: list(identifier.identify_batch(list(texts))), "language ID",
                            alone_is_poison=alone)
    for j, e in failed.items():
        bad.append(queries[missing[j]].dead_letter(dl.INTERNAL_ERROR, f"language ID raised {describe(e)}"))
    by_index = {i: ident for i, ident in zip(missing, found, strict=True) if ident is not None}
    drop = {missing[j] for j in failed}
    return [replace(q, lang=by_index[i].lang, confidence=by_index[i].confidence) if i in by_index else q
            for i, q in enumerate(queries) if i not in drop]


def route(queries: list[Query], enabled: Collection[str], now_ms: int) -> list[Query]:
    """Mark the served queries, and give every query its traffic record for the unserved store."""
    out = []
    for q in queries:
        s = classify(Identification(q.lang, q.confidence), enabled)
        # the query's time picks its bucket: the event's ts, else Kafka's timestamp; never past our clock
        at = q.event.ts_ms if q.event.ts_ms is not None else q.record.timestamp
        at_ms = now_ms if at is None or at < 0 else min(int(at), now_ms)
        topic, partition, offset = q.position
        out.append(replace(q, served=s.served,
                           traffic=Traffic(q.id, s.language, s.served, topic, partition, offset, at_ms)))
    return out


def sample(queries: list[Query]) -> list[Query]:
    """Mark the queries outside their language's sample: ``keep(id, q.rate)`` says no (consumers/sampler.py set
    the rates; 1.0 keeps). The mark depends on the id and the rate only: applying this twice, or on another
    worker, or on a re-delivery that reads the same frozen rate, marks the same queries."""
    return [replace(q, sampled_out=True) if q.rate < 1.0 and not keep(q.id, q.rate) else q for q in queries]


def embed(queries: list[Query], embedder: Any, max_chars: int, bad: list[dl.DeadLetter], *,
          alone: bool) -> list[Query]:
    """Each query's embedding of its text cut to ``max_chars``, in one call."""
    def encode(batch: Any) -> list[np.ndarray]:
        X = np.asarray(embedder.encode(list(batch)), dtype=np.float32)
        if X.shape != (len(batch), embedder.dim):
            raise ValueError(f"the embedder returned shape {X.shape} for {len(batch)} texts")
        if not np.isfinite(X).all():  # one NaN row would poison the centroids (eq. 2)
            raise ValueError("the embedder returned a non-finite vector")
        return list(X)

    rows, failed = isolate([q.text[:max_chars] for q in queries], encode, "embedding", alone_is_poison=alone)
    done = [replace(q, vector=v) for q, v in zip(queries, rows, strict=True)]
    return _drop(done, failed, "embedding", bad)


def assign(queries: list[Query], codebook: Any, bad: list[dl.DeadLetter], *, alone: bool) -> list[Query]:
    """Each embedded query's cluster bucket in ``codebook``."""
    rows, failed = isolate([q.vector for q in queries], lambda rows: list(codebook.assign(np.stack(rows))),
                           "assignment", alone_is_poison=alone)
    done = [replace(q, bucket=None if b is None else int(b)) for q, b in zip(queries, rows, strict=True)]
    return _drop(done, failed, "assignment", bad)


def reassign(queries: list[Query], codebook: Any) -> list[Query]:
    """The buckets again, in a newer codebook (not isolated: these queries were assigned once already)."""
    if not queries:
        return []
    buckets = codebook.assign(np.stack([q.vector for q in queries]))
    return [replace(q, bucket=int(b)) for q, b in zip(queries, buckets, strict=True)]


def score_quality(queries: list[Query], key: str | None, bad: list[dl.DeadLetter]) -> list[Query]:
    """The events' quality scores (meta[key]). An unusable score is dead-lettered as bad_quality while its query
    still counts. ``key`` None: no scores."""
    if key is None:
        return queries
    out = []
    for q in queries:
        if key in q.event.meta:
            value = q.event.meta[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                q = replace(q, quality=float(value))
            else:
                bad.append(q.dead_letter(dl.BAD_QUALITY, (
                    f"meta field {key!r} (consumer.quality_meta_key) is {value!r}; send a finite number or leave "
                    "the field out; the query itself was counted, only its score was not used")))
        out.append(q)
    return out


def by_language(queries: list[Query], max_chars: int) -> dict[str, list[Assignment]]:
    """The window updates, per language, in poll order."""
    grouped: dict[str, list[Assignment]] = defaultdict(list)
    for q in queries:
        grouped[q.lang].append(q.assignment(max_chars))
    return grouped
