"""Prometheus metrics of the adapter worker, on a registry of its own (served on ``worker.metrics_port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# A job trains for minutes to hours.
_JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter("compass_worker_jobs", "jobs finished, by language, kind and outcome (the report's "
                            "outcome, or failed after worker.max_attempts)", ["lang", "kind", "outcome"], registry=r)
        self.attempt_failures = Counter("compass_worker_attempt_failures", "job attempts that raised (retried until "
                                        "worker.max_attempts)", ["lang", "kind"], registry=r)
        self.job_seconds = Histogram("compass_worker_job_seconds", "duration of one job attempt, start to report",
                                     ["kind"], buckets=_JOB_BUCKETS, registry=r)
        self.dead_letters = Counter("compass_worker_dead_letters", "job messages sent to the dead-letter topic, by "
                                    "reason (bad_job, internal_error, max_attempts, recluster_manual)", ["reason"],
                                    registry=r)
        self.intake_errors = Counter("compass_worker_intake_errors", "intake polls that failed on Kafka or Redis "
                                     "(retried)", registry=r)

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:``port``; 0 disables it."""
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
