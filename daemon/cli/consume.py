"""``compass consume``: the streaming monitor (consumers/monitor.py) as a process, or N of them in one group.

SIGTERM / SIGINT: the batch in flight finishes, its offsets are committed, the consumer leaves the group and
the process exits 0. With ``--workers N`` the parent starts N worker processes (worker i serves /metrics on
consumer.metrics_port + i), forwards SIGTERM/SIGINT to them and exits with the worst of their exit codes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from enum import StrEnum
from pathlib import Path

import typer

from daemon.cli import verbosity

log = logging.getLogger("daemon.consume")


class OffsetReset(StrEnum):
    earliest = "earliest"
    latest = "latest"


def consume(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="service config YAML (default: configs/default.yaml)"
    ),
    languages: Path | None = typer.Option(
        None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)"
    ),
    topic: str | None = typer.Option(None, "--topic", help="topic to read (default: kafka.queries_topic)"),
    group: str | None = typer.Option(None, "--group", help="consumer group id (default: consumer.group_id)"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, help="worker processes in the one group"),
    burst: bool = typer.Option(False, "--burst", help="exit once every assigned partition is caught up"),
    max_messages: int | None = typer.Option(None, "--max-messages", min=1, help="exit after this many messages"),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="reset the Redis windows and rebuild them by re-reading the topic, then exit"
    ),
    offset_reset: OffsetReset = typer.Option(
        OffsetReset.earliest, "--offset-reset", help="where a group without committed offsets starts"
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG logs every batch"),
    worker_index: int = typer.Option(0, "--worker-index", hidden=True, min=0),
    embedder_threads: int | None = typer.Option(None, "--embedder-threads", hidden=True, min=1),
    quiet: bool = verbosity.QUIET,
    verbose: bool = verbosity.VERBOSE,
) -> None:
    """Consume query events: language ID, embed, assign to clusters, update the Redis windows, commit."""
    verbosity.apply(quiet, verbose, default=log_level.upper(), json_lines=True)
    if workers > 1:
        if rebuild:
            raise typer.BadParameter("--rebuild runs in one process; drop --workers", param_hint="--workers")
        raise typer.Exit(_supervise(workers))
    raise typer.Exit(_run_worker(config, languages, topic, group, burst, max_messages, rebuild,
                                 offset_reset.value, worker_index, embedder_threads))


def _run_worker(config: Path | None, languages: Path | None, topic: str | None, group: str | None, burst: bool,
                max_messages: int | None, rebuild: bool, offset_reset: str, worker_index: int,
                embedder_threads: int | None = None) -> int:
    from compass.languages import load_languages
    from consumers.metrics import ConsumerMetrics
    from consumers.monitor import Monitor
    from consumers.rebuild import Rebuild
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    if embedder_threads and not cfg.embedder.threads:
        cfg = cfg.model_copy(update={"embedder": cfg.embedder.model_copy(update={"threads": embedder_threads})})
    langs = load_languages(languages)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received: finishing the current batch", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics = ConsumerMetrics()
    port = cfg.consumer.metrics_port
    metrics.serve(port + worker_index if port else 0)
    path = Rebuild if rebuild else Monitor  # a rebuild is its own path (consumers/rebuild.py)
    monitor = path(cfg, langs, topic=topic, group_id=group, auto_offset_reset=offset_reset, metrics=metrics,
                   worker_index=worker_index)
    try:
        stats = monitor.run(stop, burst=burst, max_messages=max_messages)
    finally:
        monitor.close()
    log.info("exit", extra={"worker": worker_index, "messages": stats.polled, "applied": stats.applied,
                            "dead_lettered": stats.dead_lettered})
    return 0


def _supervise(workers: int) -> int:
    """Start ``workers`` copies of this command as worker processes; forward SIGTERM/SIGINT; wait for all."""
    args = sys.argv[1:]
    # the worker's own arguments: this command's, minus --workers/-w N, plus its index
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--workers", "-w"):
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        out.append(a)
    # N processes each running an OpenMP embedder on every core oversubscribe the CPU (spin-waiting threads
    # slowed 2 workers on 2 cores ~5x in benchmarks/consume.py): unless embedder.threads is set, split the cores.
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [subprocess.Popen([sys.executable, "-m", "daemon.cli", *out, "--worker-index", str(i),
                               "--embedder-threads", str(threads)]) for i in range(workers)]
    log.info("workers started", extra={"pids": [p.pid for p in procs]})

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    log.info("workers exited", extra={"exit_codes": codes})
    return max(codes, key=lambda c: (c != 0, abs(c)))
