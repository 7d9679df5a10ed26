"""The streaming monitor: Kafka query events -> per-language cluster windows in Redis (paper §3.3.1, eq. 2 and 4).

One batch (``Monitor.run_once``):

    poll (bounded count and bytes) -> decode and validate (bounded JSON, strict types) -> language ID where
    ``lang`` is absent -> served or not (compass/route/decision.py ``classify``) -> embed the served only, each
    text cut to ``consumer.max_embed_chars`` (one call) -> assign them to the codebook's buckets -> one atomic
    Redis update of the windows (``WindowStore.apply_batch``; ids de-duplicated within
    ``consumer.dedup_horizon_s``) -> one of the unserved counts (``UnservedStore.apply``) -> wait for dead-letter
    acks -> commit offset+1 per partition -> eq. 2 centroid update -> maybe publish a codebook revision

Isolation (infra/isolate.py): an exception while handling one message (decode, language ID, embedding,
assignment) dead-letters that message as ``internal_error`` with the exception in the detail, and the rest of
the batch proceeds; a batched stage that fails is retried message by message to find the poison one. A batch
that fails otherwise ``consumer.max_batch_failures`` times in a row is handled one message at a time and a
message that still fails is dead-lettered. Only outages (Kafka, Redis unreachable) rewind and retry without end;
a dead letter the broker refuses stops the consumer (``DeadLetterError``).

Served and unserved: a query of a language enabled in languages.yaml goes to that language's window; a query
of any other language, or of none (``und``: language ID could not tell), never does: it is counted as
*unserved* under its detected language (infra/unserved.py: totals, time buckets with the served count for
the share, sample ids) so that the daemon can announce an emerging language. It is not dead-lettered: the
dead-letter topic is for malformed input only.

Delivery: offsets are committed only after the Redis writes and the dead-letter acks succeeded. A crash
between a write and the commit re-delivers the batch; the window store and the unserved store each skip items
at or below the last offset they applied per (topic, partition), so counts are exact (no loss, no double count).
Dead letters are at-least-once (a re-delivered bad message is dead-lettered again).

Bad input never stops the loop and is never dropped silently: every message is either applied to a
window, counted as unserved, or sent to the dead-letter topic with a reason (see infra/deadletter.py).

Incremental k-means (eq. 2): each worker keeps its own copy of the current codebook's centroids and
updates it after every batch it applied, mu_k <- (1 - eta) mu_k + eta * mean(X_k_new). Only one worker
publishes revisions: the holder of the Redis lock ``<prefix>:codebook:publisher`` (SET NX PX, renewed every
``revision_interval_s``, expiring after three intervals so a dead holder is replaced). Every
``revision_interval_s`` the holder persists its centroids as a new codebook revision (parent = the version
they descend from); the other workers pick the revision up through the ``CodebookWatcher`` and continue from
it (their own updates since the previous revision are superseded). HDBSCAN codebooks are fixed:
``approximate_predict`` assigns, noise counts in its own bucket, nothing is updated or published.

Rebuild (``rebuild=True``): the window keys are reset, the topic is read from the beginning under a
temporary group id and applied, and the run ends once every partition reached the end offset captured at
start. Nothing is dead-lettered again, no centroid moves and no offset of the live group is touched. The
unserved counts are not reset: their own offsets skip what they hold (after a loss of Redis they are re-counted).
Stop the live consumers first: their newer offsets would make the store skip the re-read items.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from compass.config import LanguagesConfig, ServiceConfig
from compass.errors import CompassError
from compass.langid import Identification
from compass.route.decision import classify
from consumers.events import SCHEMA_HEADER, SCHEMA_VERSION, BadEvent, QueryEvent, decode_event
from consumers.metrics import ConsumerMetrics
from infra import deadletter as dl
from infra.clients import kafka_consumer, kafka_producer, redis_client
from infra.codebook import Codebook, CodebookStore, CodebookWatcher
from infra.isolate import OUTAGE, describe, isolate
from infra.lease import Lease
from infra.safejson import JsonLimits
from infra.unserved import Traffic, UnservedStore
from infra.window import ApplyResult, Assignment, StaleCodebookError, WindowStore

log = logging.getLogger(__name__)


class NoCodebook(CompassError, RuntimeError):
    """No codebook has been published, so queries cannot be assigned to clusters."""


@dataclass
class BatchStats:
    """What one ``run_once`` did. ``committed``: next offset committed per (topic, partition)."""

    polled: int = 0
    applied: int = 0
    duplicates: int = 0  # served messages a window had applied already (re-delivered, or resent: see below)
    resent: int = 0  # of the duplicates: a new offset but an id counted within consumer.dedup_horizon_s
    truncated: int = 0  # texts cut to consumer.max_embed_chars before embedding
    unserved: int = 0  # messages of unserved languages counted (first deliveries)
    unserved_duplicates: int = 0  # unserved messages counted already (re-delivered)
    dead_lettered: int = 0
    reasons: Counter = field(default_factory=Counter)  # dead letters by reason
    langs: Counter = field(default_factory=Counter)  # applied per language
    unserved_langs: Counter = field(default_factory=Counter)  # unserved counted per detected language
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    seconds: float = 0.0
    codebook_version: str | None = None
    published: str | None = None  # the revision this batch published, if any


@dataclass
class RunStats:
    batches: int = 0
    polled: int = 0
    applied: int = 0
    duplicates: int = 0
    resent: int = 0
    truncated: int = 0
    failed_batches: int = 0  # batches rewound after a failure (outage or error), counted in run()
    worst_message_s: float = 0.0  # the slowest batch's seconds per message: bounds what one message can cost
    unserved: int = 0
    unserved_duplicates: int = 0
    dead_lettered: int = 0
    reasons: Counter = field(default_factory=Counter)
    unserved_langs: Counter = field(default_factory=Counter)
    batch_seconds: list[float] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    first_batch: tuple[float, int] | None = None  # (wall time its commit ended, its size): for throughput
    last_batch_end: float | None = None

    def add(self, b: BatchStats) -> None:
        if b.polled == 0:
            return
        now = time.time()
        if self.first_batch is None:
            self.first_batch = (now, b.polled)
        self.last_batch_end = now
        self.batches += 1
        self.polled += b.polled
        self.applied += b.applied
        self.duplicates += b.duplicates
        self.resent += b.resent
        self.truncated += b.truncated
        self.worst_message_s = max(self.worst_message_s, b.seconds / b.polled)
        self.unserved += b.unserved
        self.unserved_duplicates += b.unserved_duplicates
        self.dead_lettered += b.dead_lettered
        self.reasons.update(b.reasons)
        self.unserved_langs.update(b.unserved_langs)
        self.batch_seconds.append(b.seconds)
        if b.published:
            self.published.append(b.published)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Written-but-uncommitted offsets are committed while the partitions are still ours. kafka-python 3
        # runs listeners on its IO thread, where a blocking commit is refused: the async commit is sent ahead
        # of the JoinGroup request on the same coordinator connection. (Normally nothing is pending here: each
        # batch commits before the next poll, and close() commits before leaving the group.)
        self.monitor._commit_pending(reason="revoke", blocking=False)

    def on_partitions_lost(self, lost: Sequence[TopicPartition]) -> None:
        # Another member may own them already: never commit on loss. The window store's offsets make a
        # re-delivery harmless.
        for tp in lost:
            self.monitor._pending.pop(tp, None)
        log.warning("partitions lost", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in lost]})

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)})


class Monitor:
    """The consumer loop with explicit state. ``embedder``/``identifier`` default to the configured ones."""

    def __init__(
        self,
        config: ServiceConfig,
        languages: LanguagesConfig,
        *,
        embedder: Any = None,
        identifier: Any = None,
        topic: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: str = "earliest",
        rebuild: bool = False,
        metrics: ConsumerMetrics | None = None,
        poll_timeout_ms: int = 500,
        worker_index: int = 0,
    ):
        self.config = config
        self.languages = languages
        self.enabled = frozenset(languages.enabled)
        self.cc = config.consumer
        self.topic = topic or config.kafka.queries_topic
        self.rebuild = rebuild
        self.poll_timeout_ms = poll_timeout_ms
        self.worker_index = worker_index
        self.metrics = metrics or ConsumerMetrics()
        if identifier is None:
            from compass.langid import make_identifier

            identifier = make_identifier(config.langid, sorted(self.enabled))
        if embedder is None:
            from compass.embed import make_embedder

            embedder = make_embedder(config.embedder)
        self.identifier, self.embedder = identifier, embedder

        prefix = config.redis.key_prefix
        self.redis = redis_client(config.redis)
        self.windows = WindowStore(self.redis, prefix, store_texts=self.cc.store_texts,
                                   recent_max=self.cc.recent_max, recent_ttl_s=self.cc.recent_ttl_s,
                                   dedup_horizon_s=self.cc.dedup_horizon_s)
        self.unserved = UnservedStore(self.redis, prefix, bucket_s=self.cc.unserved_bucket_s,
                                      retention_s=config.daemon.emerging_horizon_s,
                                      samples_max=self.cc.unserved_samples_max, samples_ttl_s=self.cc.recent_ttl_s)
        self.codebooks = CodebookStore(self.cc.codebook_dir, self.redis, prefix)
        if self.codebooks.current_version() is None:
            stored = self.codebooks.versions()
            if not (rebuild and stored):
                raise NoCodebook(
                    f"no codebook is published in Redis under prefix {prefix!r} (codebook_dir "
                    f"{self.cc.codebook_dir}); fit and publish one first (compass codebook build), or, after a "
                    "Redis loss, run `compass consume --rebuild` to restore the newest stored codebook"
                )
            # Redis lost its state: the pointer only ever moves forward, so the newest stored version is where the
            # consumers were; the rebuild below re-counts the windows against it.
            self.codebooks.restore(stored[-1])
            log.warning("codebook pointer missing (Redis state lost); restored the newest stored codebook",
                        extra={"version": stored[-1]})
        self.watcher = CodebookWatcher(self.codebooks, model_id=self.embedder.model_id)
        self._published: set[str] = set()  # revisions this worker published
        self.codebook: Codebook = self._use_codebook(self.watcher.current())
        self._watched = self.codebook_version  # the version the watcher reported last
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._publisher = Lease(self.redis, f"{prefix}:codebook:publisher", owner,
                                ttl_ms=max(1000, int(3000 * self.cc.revision_interval_s)))
        self._next_revision = time.monotonic() + self.cc.revision_interval_s

        self._pending: dict[TopicPartition, int] = {}  # written to Redis, not yet committed
        self._limits = JsonLimits(max_depth=self.cc.max_json_depth, max_digits=self.cc.max_number_digits)
        self._one_by_one = 0  # messages still to handle alone after max_batch_failures failed batches in a row
        self._last_error: str = ""  # the last batch failure, for the dead letter of a message that keeps failing
        self._end_offsets: dict[TopicPartition, int] | None = None  # rebuild: where to stop
        self._last_fill = 0.0
        kafka_kw = dict(
            auto_offset_reset=auto_offset_reset,
            max_poll_records=self.cc.max_poll_records,
            max_partition_fetch_bytes=self.cc.max_poll_bytes,
            fetch_max_bytes=self.cc.max_poll_bytes,
            session_timeout_ms=self.cc.session_timeout_ms,
            heartbeat_interval_ms=min(3000, self.cc.session_timeout_ms // 3),
        )
        if rebuild:
            self.group_id = f"{group_id or self.cc.group_id}-rebuild-{uuid.uuid4().hex[:8]}"
            self.consumer = kafka_consumer(config.kafka, self.group_id, [], **kafka_kw)
            self._start_rebuild()
            self.dead_letters = None  # a rebuild re-reads history: its bad messages were dead-lettered already
        else:
            self.group_id = group_id or self.cc.group_id
            self.consumer = kafka_consumer(config.kafka, self.group_id, [], **kafka_kw)
            self.consumer.subscribe([self.topic], listener=_Rebalance(self))
            producer = kafka_producer(config.kafka, acks="all", linger_ms=5,
                                      max_request_size=max(1 << 20, self.cc.max_dead_letter_bytes + (64 << 10)))
            self.dead_letters = dl.DeadLetterWriter(producer, config.kafka.dead_letter_topic,
                                                    max_bytes=self.cc.max_dead_letter_bytes)

    # ------------------------------------------------------------------ codebook

    def _use_codebook(self, cb: Codebook) -> Codebook:
        # The watcher's object is this monitor's own (store.load reads the files afresh): eq. 2 moves its
        # centroids in place.
        cb.check_model(self.embedder.model_id)
        self.codebook_version = cb.version
        log.info("codebook loaded", extra={"version": cb.version, "n_buckets": cb.n_buckets})
        return cb

    @property
    def updates_centroids(self) -> bool:
        return self.cc.eta > 0 and not self.rebuild and callable(getattr(self.codebook.clusterer, "update", None))

    def _sync_codebook(self) -> None:
        cb = self.watcher.current()
        # The watcher lags (it checks every few seconds) and also reports the revisions this worker published
        # itself: adopt a version only when the watcher moved to one that someone else published (another
        # worker's revision, or a new fit).
        if cb.version != self._watched:
            self._watched = cb.version
            if cb.version != self.codebook_version and cb.version not in self._published:
                self.codebook = self._use_codebook(cb)

    def _maybe_publish(self) -> str | None:
        if not self.updates_centroids or time.monotonic() < self._next_revision:
            return None
        self._next_revision = time.monotonic() + self.cc.revision_interval_s
        if self._publisher.hold() is None:
            return None
        cb = self.codebooks.publish(self.codebook.clusterer, self.embedder.model_id,
                                    languages=self.codebook.languages, parent=self.codebook_version)
        self.codebook_version = cb.version  # our centroids are that revision: no need to adopt the watcher's copy
        self._published.add(cb.version)
        self.metrics.revisions.inc()
        log.info("codebook revision published", extra={"version": cb.version, "parent": cb.parent})
        return cb.version

    # ------------------------------------------------------------------ Kafka

    def _start_rebuild(self) -> None:
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            raise CompassError(f"rebuild: topic {self.topic!r} does not exist or has no partitions; check "
                               "kafka.queries_topic")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self._end_offsets = self.consumer.end_offsets(tps)
        self.windows.reset()
        log.info("rebuild started", extra={"topic": self.topic,
                                           "end_offsets": {tp.partition: o for tp, o in self._end_offsets.items()}})

    def caught_up(self) -> bool:
        """Every assigned partition's position has reached its end offset (captured at start on a rebuild)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        ends = self._end_offsets if self._end_offsets is not None else self.consumer.end_offsets(list(assigned))
        return all(self.consumer.position(tp) >= ends.get(tp, 0) for tp in assigned)

    def _commit_pending(self, reason: str = "batch", blocking: bool = True) -> dict[tuple[str, int], int]:
        if not self._pending or self.rebuild:
            self._pending.clear()
            return {}
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._pending.items()}
        if not blocking:
            def done(_offsets: Any, response: Any) -> None:
                if isinstance(response, Exception):
                    log.warning("offset commit on revoke failed; the batch will be re-delivered and skipped as "
                                "duplicates", extra={"error": repr(response)})

            self.consumer.commit_async(offsets, callback=done)
            self._pending.clear()
            return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # The window already holds this batch with its offsets; a re-delivery is skipped as duplicates.
            log.warning("offset commit failed; the batch will be re-delivered and skipped as duplicates",
                        extra={"reason": reason, "error": repr(e)})
            return {}
        done = {(tp.topic, tp.partition): o for tp, o in self._pending.items()}
        self._pending.clear()
        return done

    def _refresh_lag(self) -> None:
        try:
            self._update_lag()
        except Exception as e:  # noqa: BLE001 - a gauge must not turn one failure into another
            log.warning("could not update the lag gauge", extra={"error": describe(e)})

    def _update_lag(self) -> int:
        total = 0
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            lag = max(0, hw - self.consumer.position(tp))
            total += lag
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        return total

    # ------------------------------------------------------------------ one batch

    def _decode(self, records: list[Any]) -> tuple[list[tuple[Any, QueryEvent]], list[dl.DeadLetter]]:
        good, bad = [], []
        limit = self.cc.max_message_bytes
        for r in records:
            try:
                reason, detail = self._check_record(r, limit)
                if reason is None:
                    good.append((r, decode_event(r.value or b"", self._limits)))
                    continue
            except BadEvent as e:
                reason, detail = e.reason, str(e)
            except Exception as e:  # noqa: BLE001 - decoding is pure: whatever it raises is this message's fault
                reason, detail = dl.INTERNAL_ERROR, f"decoding raised {describe(e)}"
            bad.append(dl.dead_letter_of(r, reason, detail))
        return good, bad

    @staticmethod
    def _check_record(r: Any, limit: int) -> tuple[str | None, str]:
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

    def _route(self, good: list[tuple[Any, QueryEvent]], langs: list[str], confidences: list[float],
               now_ms: int) -> tuple[list[int], list[Traffic]]:
        """The indexes (into ``good``) of served queries, and every query's traffic record for the unserved store."""
        keep: list[int] = []
        traffic: list[Traffic] = []
        for i, (record, event) in enumerate(good):
            s = classify(Identification(langs[i], confidences[i]), self.enabled)
            if s.served:
                keep.append(i)
            # the query's time picks its bucket: the event's ts, else Kafka's timestamp; never past our clock
            at = event.ts_ms if event.ts_ms is not None else record.timestamp
            at_ms = now_ms if at is None or at < 0 else min(int(at), now_ms)
            traffic.append(Traffic(event.id, s.language, s.served, record.topic, record.partition, record.offset,
                                   at_ms))
        return keep, traffic

    def run_once(self, max_records: int | None = None) -> BatchStats:
        """Poll one batch and carry it through to the commit. An empty poll returns ``polled == 0``."""
        m = self.metrics
        t0 = time.perf_counter()
        self._commit_pending(reason="retry")  # a commit that failed after its batch: retry before a rebalance can come
        alone = self._one_by_one > 0
        limit = 1 if alone else min(max_records or self.cc.max_poll_records, self.cc.max_poll_records)
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=limit)
        records = [r for tp in sorted(polled, key=lambda t: (t.topic, t.partition)) for r in polled[tp]]
        m.stage_seconds.labels("poll").observe(time.perf_counter() - t0)
        stats = BatchStats(polled=len(records), codebook_version=self.codebook_version)
        if not records:
            return stats
        first = {TopicPartition(r.topic, r.partition): r.offset for r in reversed(records)}
        try:
            try:
                self._process(records, stats, alone=alone)
            except (*OUTAGE, dl.DeadLetterError):
                raise
            except Exception as e:
                if not alone:
                    raise
                # the batch failed max_batch_failures times in a row and fails again with this one message
                stats.reasons.clear()
                self._dead_letter_now(records, stats, f"handling it failed {self.cc.max_batch_failures}+ times in a "
                                      f"row; last: {describe(e)}")
        except Exception:
            # Not bad input (that is dead-lettered) but a failing dependency: rewind so nothing is skipped.
            for tp, offset in first.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, offset)
            raise
        if alone:
            self._one_by_one -= 1
        stats.seconds = time.perf_counter() - t0
        m.batch_seconds.observe(stats.seconds)
        m.batches.inc()
        return stats

    def _dead_letter_now(self, records: list[Any], stats: BatchStats, detail: str) -> None:
        """Dead-letter ``records`` as internal_error and commit past them."""
        if self.dead_letters is not None:
            for r in records:
                self.dead_letters.send(dl.dead_letter_of(r, dl.INTERNAL_ERROR, detail))
            self.dead_letters.flush()
        stats.applied = stats.duplicates = stats.unserved = stats.unserved_duplicates = 0
        stats.dead_lettered = len(records)
        stats.reasons = Counter({dl.INTERNAL_ERROR: len(records)})
        self.metrics.dead_letters.labels(dl.INTERNAL_ERROR).inc(len(records))
        self.metrics.messages.labels("dead_lettered").inc(len(records))
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self._pending[tp] = max(self._pending.get(tp, 0), r.offset + 1)
        stats.committed = self._commit_pending()

    def _identify(self, good: list[tuple[Any, QueryEvent]], bad: list[dl.DeadLetter],
                  alone: bool) -> tuple[list[tuple[Any, QueryEvent]], list[str], list[float]]:
        """Language ID where ``lang`` is absent; the messages it fails on are dead-lettered (removed from good)."""
        missing = [i for i, (_, e) in enumerate(good) if e.lang is None]
        found, failed = isolate([good[i][1].text[: self.cc.max_embed_chars] for i in missing],
                                lambda texts: list(self.identifier.identify_batch(list(texts))), "language ID",
                                alone_is_poison=alone)
        by_index = dict(zip(missing, found, strict=True))
        drop = {missing[j] for j in failed}
        for j, e in failed.items():
            bad.append(dl.dead_letter_of(good[missing[j]][0], dl.INTERNAL_ERROR, f"language ID raised {describe(e)}"))
        kept, langs, confs = [], [], []
        for i, (record, event) in enumerate(good):
            if i in drop:
                continue
            kept.append((record, event))
            ident = by_index.get(i)
            langs.append(event.lang if ident is None else ident.lang)
            confs.append(1.0 if ident is None else ident.confidence)
        return kept, langs, confs

    def _embed(self, texts: list[str], alone: bool) -> tuple[np.ndarray | None, dict[int, BaseException]]:
        """Embeddings of ``texts`` (rows of failed texts are NaN) and the failures by index."""
        def encode(batch: Any) -> list[np.ndarray]:
            X = np.asarray(self.embedder.encode(list(batch)), dtype=np.float32)
            if X.shape != (len(batch), self.embedder.dim):
                raise ValueError(f"the embedder returned shape {X.shape} for {len(batch)} texts")
            if not np.isfinite(X).all():  # one NaN row would poison the centroids (eq. 2)
                raise ValueError("the embedder returned a non-finite vector")
            return list(X)

        rows, failed = isolate(texts, encode, "embedding", alone_is_poison=alone)
        if not rows:
            return None, failed
        nan = np.full(self.embedder.dim, np.nan, dtype=np.float32)
        return np.stack([nan if r is None else r for r in rows]), failed

    def _process(self, records: list[Any], stats: BatchStats, *, alone: bool = False) -> None:
        m = self.metrics
        t = time.perf_counter()
        good, bad = self._decode(records)
        m.stage_seconds.labels("decode").observe(time.perf_counter() - t)

        # Language first: only served queries are embedded (unserved and undetermined ones are only counted).
        t = time.perf_counter()
        good, langs, confs = self._identify(good, bad, alone)
        self._sync_codebook()
        keep, traffic = self._route(good, langs, confs, int(time.time() * 1000))
        cap = self.cc.max_embed_chars
        texts = [good[i][1].text[:cap] for i in keep]
        for i in keep:
            if len(good[i][1].text) > cap:
                stats.truncated += 1
                m.truncated.labels(langs[i]).inc()
        X, failed = self._embed(texts, alone)
        m.stage_seconds.labels("enrich").observe(time.perf_counter() - t)

        t = time.perf_counter()
        keep, X, traffic = self._drop(failed, "embedding", keep, X, traffic, good, bad)
        buckets = None
        if keep:
            rows, failed = isolate(list(X), lambda rows: list(self.codebook.assign(np.stack(rows))), "assignment",
                                   alone_is_poison=alone)
            keep, X, traffic = self._drop(failed, "assignment", keep, X, traffic, good, bad)
            buckets = [b for b in rows if b is not None]
        scores = self._quality_scores(keep, good, bad)
        by_lang = self._assign(keep, X, good, langs, scores, buckets=buckets) if keep else {}
        m.stage_seconds.labels("assign").observe(time.perf_counter() - t)

        t = time.perf_counter()
        if self.dead_letters is not None:
            for letter in bad:
                self.dead_letters.send(letter)  # async; acknowledged below, before the commit
        for lang, res in self._apply(by_lang, keep, X, good, langs, scores).items():
            stats.applied += res.applied
            stats.duplicates += res.duplicates
            stats.resent += res.resent
            stats.langs[lang] += res.applied
        counted = self.unserved.apply(traffic)  # after the windows: each store skips what it already holds
        stats.unserved, stats.unserved_langs = counted.unserved.total(), counted.unserved
        stats.unserved_duplicates = counted.duplicates_unserved
        m.stage_seconds.labels("redis").observe(time.perf_counter() - t)

        t = time.perf_counter()
        if self.dead_letters is not None:
            self.dead_letters.flush()
        m.stage_seconds.labels("dead_letter").observe(time.perf_counter() - t)
        for letter in bad:
            stats.reasons[letter.reason] += 1
            m.dead_letters.labels(letter.reason).inc()
        stats.dead_lettered = len(bad)

        t = time.perf_counter()
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self._pending[tp] = max(self._pending.get(tp, 0), r.offset + 1)
        stats.committed = self._commit_pending()
        m.stage_seconds.labels("commit").observe(time.perf_counter() - t)

        m.messages.labels("applied").inc(stats.applied)
        m.messages.labels("duplicate").inc(stats.duplicates + stats.unserved_duplicates)
        m.messages.labels("unserved").inc(stats.unserved)
        m.messages.labels("dead_lettered").inc(stats.dead_lettered)
        for lang, n in stats.unserved_langs.items():
            m.unserved.labels(lang).inc(n)
        if keep and self.updates_centroids:
            self.codebook.clusterer.update(X, self.cc.eta)  # eq. 2, after the write it describes succeeded
        stats.published = self._maybe_publish()
        stats.codebook_version = self.codebook_version
        self._update_fill(by_lang.keys())

    @staticmethod
    def _drop(failed: dict[int, BaseException], stage: str, keep: list[int], X: np.ndarray | None,
              traffic: list[Traffic], good: list, bad: list[dl.DeadLetter],
              ) -> tuple[list[int], np.ndarray | None, list[Traffic]]:
        """Dead-letter the served messages a stage failed on (indexes into ``keep``) and leave them out of the
        window, the centroid update and the traffic counts."""
        if not failed:
            return keep, X, traffic
        for j, e in failed.items():
            bad.append(dl.dead_letter_of(good[keep[j]][0], dl.INTERNAL_ERROR, f"{stage} raised {describe(e)}"))
        gone = {(r.topic, r.partition, r.offset) for r in (good[keep[j]][0] for j in failed)}
        rows = [j for j in range(len(keep)) if j not in failed]
        X = X[rows] if X is not None and rows else None
        return [keep[j] for j in rows], X, [tr for tr in traffic if (tr.topic, tr.partition, tr.offset) not in gone]

    def _quality_scores(self, keep: list[int], good: list, bad: list[dl.DeadLetter]) -> dict[int, float]:
        """The events' quality scores (meta[consumer.quality_meta_key]) by index into ``good``. An unusable score
        is dead-lettered as bad_quality while its query still counts. A rebuild re-reads history the daemon's
        detector has already seen: it carries no scores."""
        key = self.cc.quality_meta_key
        scores: dict[int, float] = {}
        if key is None or self.rebuild:
            return scores
        for i in keep:
            record, event = good[i]
            if key not in event.meta:
                continue
            value = event.meta[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                scores[i] = float(value)
            else:
                bad.append(dl.dead_letter_of(record, dl.BAD_QUALITY, (
                    f"meta field {key!r} (consumer.quality_meta_key) is {value!r}; send a finite number or leave "
                    "the field out; the query itself was counted, only its score was not used")))
        return scores

    def _assign(self, keep: list[int], X: np.ndarray, good: list, langs: list[str], scores: dict[int, float],
                only: set[str] | None = None, buckets: Sequence[int] | None = None) -> dict[str, list[Assignment]]:
        if buckets is None:
            buckets = self.codebook.assign(X)
        by_lang: dict[str, list[Assignment]] = defaultdict(list)
        cap = self.cc.max_embed_chars  # the stored text is the embedded one: bounded in Redis too
        for i, bucket in zip(keep, buckets, strict=True):
            if only is None or langs[i] in only:
                record, event = good[i]
                by_lang[langs[i]].append(Assignment(event.id, int(bucket), record.topic, record.partition,
                                                    record.offset, event.text[:cap], scores.get(i)))
        return by_lang

    def _apply(self, by_lang: dict[str, list[Assignment]], keep: list[int], X: np.ndarray | None, good: list,
               langs: list[str], scores: dict[int, float]) -> dict[str, ApplyResult]:
        """One atomic window update; if another worker already moved a window to a newer codebook, reload it,
        re-assign the refused languages and apply them again (the store wrote nothing for them)."""
        results: dict[str, ApplyResult] = {}
        for attempt in range(3):
            if not by_lang:
                break
            request = {lang: (self.languages.get(lang).window_size, items) for lang, items in by_lang.items()}
            try:
                results.update(self.windows.apply_batch(request, self.codebook_version, self.codebook.n_buckets))
                break
            except StaleCodebookError as e:
                if attempt == 2:
                    raise
                results.update(e.results)
                log.warning("a window has a newer codebook; reloading", extra={"stale": e.stale})
                self.watcher.refresh()
                self._sync_codebook()
                by_lang = self._assign(keep, X, good, langs, scores, only=set(e.stale))
        return results

    def _update_fill(self, langs: Any) -> None:
        now = time.monotonic()
        if now - self._last_fill < 2.0:  # a gauge, not a ledger: refreshing it every batch costs Redis reads
            return
        self._last_fill = now
        for lang in langs:
            size = self.windows.snapshot(lang).size
            self.metrics.window_fill.labels(lang).set(size / self.languages.get(lang).window_size)

    # ------------------------------------------------------------------ the loop

    def run(self, stop_event: threading.Event | None = None, *, burst: bool = False,
            max_messages: int | None = None, retry_backoff_s: float = 1.0) -> RunStats:
        """Batches until ``stop_event`` is set (a signal), ``max_messages`` were polled, or, with ``burst`` (and
        always on a rebuild), every partition is caught up. The batch in flight always finishes and commits."""
        stop_event = stop_event or threading.Event()
        total = RunStats()
        last_log, failures = time.monotonic(), 0
        burst = burst or self.rebuild
        while not stop_event.is_set():
            remaining = None if max_messages is None else max_messages - total.polled
            if remaining is not None and remaining <= 0:
                break
            try:
                b = self.run_once(max_records=remaining)
            except dl.DeadLetterError:
                log.critical("a dead letter cannot be written; stopping (the batch is not committed)")
                raise
            except Exception as e:  # noqa: BLE001 - rewound; see the module docstring for what is retried how
                failures += 1
                total.failed_batches += 1
                outage = isinstance(e, OUTAGE)
                self.metrics.failed_batches.labels("outage" if outage else "error").inc()
                self.metrics.consecutive_failures.set(failures)
                self._refresh_lag()  # the gauge must show a stalled partition
                if not outage and failures >= self.cc.max_batch_failures and self._one_by_one == 0:
                    # Something in this batch fails every time: handle the next messages alone, so only the
                    # one that keeps failing is dead-lettered.
                    self._one_by_one = self.cc.max_poll_records
                    log.error("batch failed %d times in a row; handling its messages one at a time", failures,
                              extra={"error": describe(e)})
                    continue
                delay = min(30.0, retry_backoff_s * 2 ** min(failures - 1, 5))
                log.error("batch failed; it is rewound and retried",
                          extra={"error": describe(e), "outage": outage, "retry_in_s": delay, "failures": failures},
                          exc_info=not outage and not isinstance(e, (KafkaError, CompassError)))
                stop_event.wait(delay)
                continue
            if failures:
                self.metrics.consecutive_failures.set(0)
            failures = 0
            total.add(b)
            if b.polled == 0 and burst and self.caught_up():
                break
            if time.monotonic() - last_log >= 5.0 or (b.polled and log.isEnabledFor(logging.DEBUG)):
                last_log = time.monotonic()
                log.info("progress", extra={"batches": total.batches, "messages": total.polled,
                                            "applied": total.applied, "unserved": total.unserved,
                                            "dead_lettered": total.dead_lettered,
                                            "batch_size": b.polled, "lag": self._update_lag(),
                                            "codebook": self.codebook_version})
        self._update_lag()
        self._last_fill = 0.0
        self._update_fill(self.windows.languages())
        log.info("stopped", extra={"batches": total.batches, "messages": total.polled, "applied": total.applied,
                                   "duplicates": total.duplicates, "unserved": dict(total.unserved_langs),
                                   "unserved_duplicates": total.unserved_duplicates,
                                   "dead_lettered": total.dead_lettered, "reasons": dict(total.reasons)})
        return total

    def close(self) -> None:
        """Commit what is pending, leave the group, flush and close the clients."""
        try:
            self._commit_pending(reason="close")
        finally:
            self.consumer.close(autocommit=False)
            if self.dead_letters is not None:
                self.dead_letters.close()
            if self.updates_centroids:
                self._publisher.release()
            self.redis.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
