"""Prometheus metrics of `compass gateway`, on a registry of its own (GET /metrics of the gateway)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# the gateway's own cost is milliseconds; a generation behind it takes seconds
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("compass_gateway_requests", "requests answered, by endpoint (chat, completions, "
                                "models, other) and HTTP status (502/504: the upstream failed)",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("compass_gateway_request_seconds", "seconds from a request to the upstream's "
                                 "response headers (a stream's first byte), by endpoint and status",
                                 ["endpoint", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.routed = Counter("compass_gateway_routed", "chat/completion requests by detected language and the "
                              "model they got: adapter (the routing table's), base, pinned (the caller named a "
                              "model)", ["lang", "target"], registry=r)
        self.buffered = Gauge("compass_gateway_events_buffered", "query events waiting for Kafka in the gateway's "
                              "bounded buffer", registry=r)
        self.produced = Counter("compass_gateway_events_produced", "query events Kafka acknowledged", registry=r)
        self.dropped = Counter("compass_gateway_events_dropped", "query events lost: buffer_full (Kafka slow or "
                               "down), send_failed (Kafka refused them), shutdown (unsent at exit)", ["reason"],
                               registry=r)
        self.routes_version = Gauge("compass_gateway_routes_version", "version of the routing table in use",
                                    registry=r)
        self.kafka_up = Gauge("compass_gateway_kafka_connected", "1 while the event producer is connected to Kafka",
                              registry=r)
        for reason in ("buffer_full", "send_failed", "shutdown"):
            self.dropped.labels(reason)  # exported as 0 from the start: an alert can use rate() at once
