"""The streaming monitor: Kafka query events -> per-language cluster windows in Redis (paper §3.3.1, eq. 2 and 4).

``Monitor.run`` polls batches (bounded count and bytes) and hands each to the ``Pipeline`` (consumers/pipeline.py:
decode, language ID, routing, embedding, assignment, the Redis writes, dead letters, the ``Checkpoint`` commit);
the codebook is kept by ``CodebookSync`` (consumers/codebook_sync.py, eq. 2); a rebuild is its own path
(consumers/rebuild.py).

Failures: an exception that belongs to one message is dead-lettered by the stages (consumers/stages.py). Any
other failure rewinds the batch (``run_once``); the loop (consumers/loop.py) retries it, handles the messages one
at a time after ``consumer.max_batch_failures`` failures in a row, and waits out outages with the project's
retry policy (infra/retry.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import TopicPartition

from compass.languages import LanguagesConfig
from consumers import loop
from consumers.checkpoint import Checkpoint, CommitOnRevoke
from consumers.codebook_sync import CodebookSync, NoCodebook, open_codebooks
from consumers.gauges import Gauges
from consumers.metrics import ConsumerMetrics
from consumers.pipeline import Pipeline
from consumers.sampler import Sampler
from consumers.stats import BatchStats, RunStats
from infra import deadletter as dl
from infra.clients import kafka_consumer, kafka_producer, redis_client
from infra.codebook import Codebook
from infra.isolate import OUTAGE, describe
from infra.sampling import SamplingRates
from infra.settings import ServiceConfig
from infra.unserved import UnservedStore
from infra.window import WindowStore

__all__ = ["BatchStats", "Monitor", "NoCodebook", "RunStats"]

log = logging.getLogger(__name__)


class Monitor:
    """The consumer loop of the live group. ``embedder``/``identifier`` default to the configured ones."""

    fixed_codebook = False  # a rebuild neither moves nor publishes centroids
    restores_codebook = False  # only a rebuild may restore a lost codebook pointer

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
        metrics: ConsumerMetrics | None = None,
        poll_timeout_ms: int = 500,
        worker_index: int = 0,
    ):
        self.config, self.languages = config, languages
        self.cc = cc = config.consumer
        self.topic = topic or config.kafka.queries_topic
        self.poll_timeout_ms = poll_timeout_ms
        self.worker_index = worker_index
        self.metrics = metrics or ConsumerMetrics()
        if identifier is None:
            from compass.langid import make_identifier

            identifier = make_identifier(config.langid, sorted(languages.enabled))
        if embedder is None:
            from infra.embedders import make_embedder

            embedder = make_embedder(config.embedder)
        self.identifier, self.embedder = identifier, embedder

        prefix = config.redis.key_prefix
        self.redis = redis_client(config.redis)
        self.windows = WindowStore(self.redis, prefix, store_texts=cc.store_texts, recent_max=cc.recent_max,
                                   recent_ttl_s=cc.recent_ttl_s, dedup_horizon_s=cc.dedup_horizon_s)
        self.unserved = UnservedStore(self.redis, prefix, bucket_s=cc.unserved_bucket_s,
                                      retention_s=config.daemon.emerging_horizon_s,
                                      samples_max=cc.unserved_samples_max, samples_ttl_s=cc.recent_ttl_s)
        self.sampler = Sampler(languages, SamplingRates(self.redis, prefix, bucket_s=cc.sampling_bucket_s,
                                                        lookback_s=cc.sampling_lookback_s, ttl_s=cc.sampling_ttl_s))
        self.codebooks = open_codebooks(cc, self.redis, prefix, restore=self.restores_codebook)
        self.codebook_sync = CodebookSync(self.codebooks, self.redis, prefix, self.embedder.model_id, eta=cc.eta,
                                          revision_interval_s=cc.revision_interval_s, metrics=self.metrics,
                                          fixed=self.fixed_codebook)
        self.one_by_one = 0  # messages still to handle alone after max_batch_failures failed batches in a row
        kafka_kw = dict(
            auto_offset_reset=auto_offset_reset,
            max_poll_records=cc.max_poll_records,
            max_partition_fetch_bytes=cc.max_poll_bytes,
            fetch_max_bytes=cc.max_poll_bytes,
            session_timeout_ms=cc.session_timeout_ms,
            heartbeat_interval_ms=min(3000, cc.session_timeout_ms // 3),
        )
        self.consumer, self.checkpoint, self.dead_letters = self._connect(group_id or cc.group_id, kafka_kw)
        self.gauges = Gauges(self.consumer, self.windows, languages, self.metrics)
        self.pipeline = Pipeline(cc, languages, identifier=identifier, embedder=embedder, codebook=self.codebook_sync,
                                 windows=self.windows, unserved=self.unserved, checkpoint=self.checkpoint,
                                 dead_letters=self.dead_letters, metrics=self.metrics,
                                 quality_key=self.quality_key, sampler=self.sampler)

    def _connect(self, group_id: str, kafka_kw: dict[str, Any],
                 ) -> tuple[Any, Checkpoint, dl.DeadLetterWriter | dl.NullDeadLetters]:
        """The live group: subscribe (commit on revoke), and a producer for the dead letters."""
        self.group_id = group_id
        consumer = kafka_consumer(self.config.kafka, group_id, [], **kafka_kw)
        checkpoint = Checkpoint(consumer)
        consumer.subscribe([self.topic], listener=CommitOnRevoke(checkpoint))
        producer = kafka_producer(self.config.kafka, acks="all", linger_ms=5,
                                  max_request_size=max(1 << 20, self.cc.max_dead_letter_bytes + (64 << 10)))
        return consumer, checkpoint, dl.DeadLetterWriter(producer, self.config.kafka.dead_letter_topic,
                                                         max_bytes=self.cc.max_dead_letter_bytes)

    @property
    def quality_key(self) -> str | None:
        return self.cc.quality_meta_key

    @property
    def codebook(self) -> Codebook:
        return self.codebook_sync.codebook

    @property
    def codebook_version(self) -> str:
        return self.codebook_sync.version

    @property
    def updates_centroids(self) -> bool:
        return self.codebook_sync.updates_centroids

    # ------------------------------------------------------------------ Kafka

    def _end_offsets(self, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.consumer.end_offsets(assigned)

    def caught_up(self) -> bool:
        """Every assigned partition's position has reached its end offset."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        ends = self._end_offsets(list(assigned))
        return all(self.consumer.position(tp) >= ends.get(tp, 0) for tp in assigned)

    # ------------------------------------------------------------------ one batch

    def run_once(self, max_records: int | None = None) -> BatchStats:
        """Poll one batch and carry it through to the commit. An empty poll returns ``polled == 0``."""
        t0 = time.perf_counter()  # the batch's seconds are kept in its stats, not only observed
        with self.metrics.stage_seconds.labels("poll").time():
            self.checkpoint.commit(reason="retry")  # a commit that failed after its batch: retry before a rebalance
            alone = self.one_by_one > 0
            limit = 1 if alone else min(max_records or self.cc.max_poll_records, self.cc.max_poll_records)
            polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=limit)
            records = [r for tp in sorted(polled, key=lambda t: (t.topic, t.partition)) for r in polled[tp]]
        stats = BatchStats(polled=len(records), codebook_version=self.codebook_version)
        if not records:
            return stats
        first = {TopicPartition(r.topic, r.partition): r.offset for r in reversed(records)}
        try:
            try:
                self.gauges.fill(self.pipeline.process(records, stats, alone=alone))
            except (*OUTAGE, dl.DeadLetterError):
                raise
            except Exception as e:
                if not alone:
                    raise
                # the batch failed max_batch_failures times in a row and fails again with this one message
                stats.reasons.clear()
                self.pipeline.dead_letter_all(records, stats, f"handling it failed {self.cc.max_batch_failures}+ "
                                              f"times in a row; last: {describe(e)}")
        except Exception:
            # Not bad input (that is dead-lettered) but a failing dependency: rewind so nothing is skipped.
            for tp, offset in first.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, offset)
            raise
        if alone:
            self.one_by_one -= 1
        stats.seconds = time.perf_counter() - t0
        self.metrics.batch_seconds.observe(stats.seconds)
        self.metrics.batches.inc()
        return stats

    # ------------------------------------------------------------------ the loop

    def run(self, stop_event: threading.Event | None = None, *, burst: bool = False,
            max_messages: int | None = None, retry_backoff_s: float = 1.0) -> RunStats:
        """Batches until ``stop_event`` is set (a signal), ``max_messages`` were polled, or, with ``burst``, every
        partition is caught up. The batch in flight always finishes and commits."""
        return loop.run(self, stop_event or threading.Event(), burst=burst, max_messages=max_messages,
                        retry_backoff_s=retry_backoff_s)

    def close(self) -> None:
        """Commit what is pending (the final commit on stop), leave the group, flush and close the clients."""
        try:
            self.checkpoint.commit(reason="close")
        finally:
            self.consumer.close(autocommit=False)
            self.dead_letters.close()
            self.codebook_sync.close()
            self.redis.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
