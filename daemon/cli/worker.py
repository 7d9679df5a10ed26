"""``compass worker``: the adapter worker (reselection + ECDA update + gate per job on kafka.jobs_topic).

SIGTERM or Ctrl-C: no new job is taken; a running job saves a checkpoint and stays pending, and the next start
resumes it from there.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")
ONCE = typer.Option(False, "--once", help="exit when the queue is drained")
MAX_JOBS = typer.Option(None, "--max-jobs", min=1, help="exit after this many jobs finished")


def worker(config: Path | None = CONFIG, languages: Path | None = LANGUAGES, once: bool = ONCE,
           max_jobs: int | None = MAX_JOBS, quiet: bool = verbosity.QUIET, verbose: bool = verbosity.VERBOSE) -> None:
    """Run adapter update jobs from compass.jobs: retrain, gate, promote, report on compass.events."""
    verbosity.apply(quiet, verbose)
    from compass.languages import load_languages
    from daemon.worker import Worker
    from infra.clients import ensure_topics
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    langs = load_languages(languages)
    ensure_topics(cfg.kafka, [cfg.kafka.jobs_topic, cfg.kafka.events_topic, cfg.kafka.dead_letter_topic])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    w = Worker(cfg, langs)
    w.metrics.serve(cfg.worker.metrics_port)
    try:
        done = w.run(stop, max_jobs=max_jobs, once=once)
    finally:
        w.close()
    typer.echo(f"compass worker stopped after {done} job(s)")
