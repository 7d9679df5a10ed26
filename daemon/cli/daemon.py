"""``compass daemon``: the drift daemon (scheduled checks per language) and its HTTP API on ``http.host:port``.

SIGTERM or Ctrl-C stops it cleanly: uvicorn stops serving, the scheduler waits for running checks, the
leases are released so another replica takes the languages over at once. SIGHUP reloads languages.yaml.
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")
INTERVAL = typer.Option(None, "--interval", min=0.1, help="seconds between checks of a language "
                        "(default: daemon.check_interval_s)")


def daemon(config: Path | None = CONFIG, languages: Path | None = LANGUAGES, interval: float | None = INTERVAL,
           quiet: bool = verbosity.QUIET, verbose: bool = verbosity.VERBOSE) -> None:
    """Watch every enabled language for drift (JS > theta) and enqueue adapter updates on compass.jobs."""
    verbosity.apply(quiet, verbose)
    import uvicorn

    from compass.languages import DEFAULT_LANGUAGES
    from daemon.api import create_app
    from daemon.scheduler.reload import ReloadingLanguages
    from daemon.scheduler.service import Daemon
    from infra.clients import ensure_topics
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    if interval is not None and cfg.daemon.lease_ttl_ms <= interval * 1000:
        raise typer.BadParameter(f"--interval {interval} s is not below daemon.lease_ttl_ms "
                                 f"({cfg.daemon.lease_ttl_ms} ms); lower it or raise lease_ttl_ms")
    ensure_topics(cfg.kafka, [cfg.kafka.jobs_topic, cfg.kafka.events_topic])
    reloading = ReloadingLanguages(languages or DEFAULT_LANGUAGES)  # hot reload: a changed file, or SIGHUP
    reloading.install_sighup()
    d = Daemon(cfg, reloading)
    d.start(interval)
    server = uvicorn.Server(uvicorn.Config(create_app(d), host=cfg.http.host, port=cfg.http.port,
                                           log_config=None, log_level=None, lifespan="off"))  # our logging
    # uvicorn handles SIGTERM itself, then re-raises it to the handler in place before it started: with the
    # default one the process would die before the leases are released. A no-op handler lets run() return.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        d.stop()
    typer.echo("compass daemon stopped; leases released")
