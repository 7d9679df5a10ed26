"""Prometheus metrics of the model server, on a registry of its own (GET /metrics of ``compass serve``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("compass_serving_requests", "texts routed, by language and the routed adapter's kind "
                                "(compass, target_only; base: no adapter)", ["lang", "kind"], registry=r)
        self.batch_seconds = Histogram("compass_serving_batch_seconds", "duration of one batch on one adapter "
                                       "(generation or scoring)", ["lang"], buckets=_LATENCY_BUCKETS, registry=r)
        self.adapters_loaded = Gauge("compass_serving_adapters_loaded", "adapter versions now loaded in the model",
                                     registry=r)
        self.load_errors = Counter("compass_serving_adapter_load_errors", "adapters that failed to load", registry=r)
