"""Prometheus metrics of the monitor consumer, on a registry of its own.

A private ``CollectorRegistry`` per ``ConsumerMetrics`` lets several monitors live in one process (tests)
without "duplicated timeseries" errors; ``serve(port)`` exposes it on 127.0.0.1 only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Stages of one batch, in order; each gets a latency histogram.
STAGES = ("poll", "decode", "enrich", "assign", "redis", "dead_letter", "commit")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "compass_consumer_messages",
            "messages handled, by outcome (applied, unserved, duplicate, sampled_out, dead_lettered)", ["outcome"],
            registry=r,
        )
        self.batches = Counter("compass_consumer_batches", "batches processed and committed", registry=r)
        self.dead_letters = Counter(
            "compass_consumer_dead_letters", "messages sent to the dead-letter topic, by reason", ["reason"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "compass_consumer_stage_seconds", "latency of each stage of a batch", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_seconds = Histogram(
            "compass_consumer_batch_seconds", "latency of a whole batch, poll to commit",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.lag = Gauge(
            "compass_consumer_lag", "messages behind the partition's high watermark", ["topic", "partition"],
            registry=r,
        )
        self.window_fill = Gauge(
            "compass_consumer_window_fill_ratio", "queries in the language's monitor window / window_size", ["lang"],
            registry=r,
        )
        self.unserved = Counter(
            "compass_consumer_unserved", "queries of a language no configured adapter serves (und: undetermined), "
            "by detected language; counted once, never put in a window", ["lang"], registry=r,
        )
        self.failed_batches = Counter(
            "compass_consumer_failed_batches", "batches rewound after a failure, by kind (outage: Kafka/Redis "
            "unreachable, retried without end; error: anything else, handled message by message after "
            "consumer.max_batch_failures in a row)", ["kind"], registry=r,
        )
        self.consecutive_failures = Gauge(
            "compass_consumer_consecutive_failures", "failed attempts of the current batch in a row (0: progressing)",
            registry=r,
        )
        self.truncated = Counter(
            "compass_consumer_truncated", "query texts cut to consumer.max_embed_chars before embedding, by language",
            ["lang"], registry=r,
        )
        self.sampled_out = Counter(
            "compass_consumer_sampled_out", "queries of a served language left out of its sample (languages.yaml "
            "sampling): committed, never embedded nor put in the window; by language", ["lang"], registry=r,
        )
        self.embed_cache = Counter(
            "compass_consumer_embed_cache", "texts looked up in the embedding cache (embedder.cache), by outcome: "
            "hit (answered from disk, no embedding) or miss (embedded)", ["outcome"], registry=r,
        )
        self.embed_cache_hit_ratio = Gauge(
            "compass_consumer_embed_cache_hit_ratio", "hits / lookups of the embedding cache since the start",
            registry=r,
        )
        self._cache_seen = self._cache_start = (0, 0)
        self.revisions = Counter(
            "compass_consumer_codebook_revisions", "centroid revisions published by this worker (eq. 2)", registry=r,
        )

    def observe_cache(self, embedder: object, *, baseline: bool = False) -> None:
        """Count the embedding cache's hits and misses since the last call (a ``CachedEmbedder`` keeps running
        totals, maybe from before this monitor: ``baseline`` only records them; an embedder without a cache
        counts nothing)."""
        hits, misses = getattr(embedder, "hits", None), getattr(embedder, "misses", None)
        if not isinstance(hits, int) or not isinstance(misses, int):
            return
        if baseline:
            self._cache_seen = self._cache_start = (hits, misses)
            return
        h0, m0 = self._cache_seen
        self.embed_cache.labels("hit").inc(max(0, hits - h0))
        self.embed_cache.labels("miss").inc(max(0, misses - m0))
        self._cache_seen = (hits, misses)
        looked = hits - self._cache_start[0] + misses - self._cache_start[1]
        if looked > 0:
            self.embed_cache_hit_ratio.set((hits - self._cache_start[0]) / looked)

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:``port``; 0 disables it."""
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
