"""The drift daemon's Prometheus metrics, in a registry of their own (two daemons in one process do not clash)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DaemonMetrics:
    """Prometheus metrics of one daemon, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.checks = Counter("compass_daemon_checks", "checks by language and outcome state",
                              ["lang", "state"], registry=r)
        self.jobs = Counter("compass_daemon_jobs", "jobs enqueued", ["lang", "kind"], registry=r)
        self.errors = Counter("compass_daemon_errors", "errors kept from crashing the daemon",
                              ["lang", "kind"], registry=r)
        self.js = Gauge("compass_daemon_js_bits", "last JS(P_ref || P_mon) in bits (eq. 5)", ["lang"], registry=r)
        self.fill = Gauge("compass_daemon_window_fill_ratio", "window size / window_size", ["lang"], registry=r)
        self.noise = Gauge("compass_daemon_noise_ratio", "noise-bucket share of the window", ["lang"], registry=r)
        self.updating = Gauge("compass_daemon_updating", "1 while a job is out", ["lang"], registry=r)
        self.stuck = Gauge("compass_daemon_stuck", "1 while the language is stuck (no automatic update until ops "
                           "resume it)", ["lang"], registry=r)
        self.threshold = Gauge("compass_daemon_threshold", "effective threshold of the language's detector (JS bits; "
                               "nats for the sequential detector)", ["lang"], registry=r)
        self.failures = Gauge("compass_daemon_failures", "updates in a row that did not promote", ["lang"],
                              registry=r)
        self.seconds = Histogram("compass_daemon_check_seconds", "duration of one language check", registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
        self.ready = Gauge("compass_daemon_ready", "1 while the service answered the last readiness probe (/readyz), "
                           "by service (redis, kafka)", ["service"], registry=r)
        self.unserved_share = Gauge("compass_daemon_unserved_ratio", "share of all queries over "
                                    "daemon.emerging_horizon_s of a language no configured adapter serves (und: "
                                    "undetermined)", ["lang"], registry=r)
        self.unserved_queries = Gauge("compass_daemon_unserved_queries", "queries over daemon.emerging_horizon_s of "
                                      "an unserved language", ["lang"], registry=r)
        self.emerging = Gauge("compass_daemon_language_emerging", "1 while an unserved language is in an emerging "
                              "episode (language_emerging published, not re-armed)", ["lang"], registry=r)

    def of(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: a round sets ~10 per language (200 languages every 2 s), and a lookup
        by labels costs more than the update itself."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
