"""``compass sync``: keep the serving targets (``serving.targets``) and the gateway's routing table in line with the
registry: each promoted or rolled-back version is loaded on every target under ``LANG-VERSION`` (vLLM's
/v1/load_lora_adapter), confirmed, switched to in one atomic step, and the previous one unloaded after
``serving.drain_s`` (daemon/sync/). ``--once``: one round, exit 1 when a target is out of sync.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
ONCE = typer.Option(False, "--once", help="run one round, print each target's state, exit 1 if one is out of sync "
                    "(the old version is unloaded by a later round, after serving.drain_s)")


def sync(config: Path | None = CONFIG, once: bool = ONCE, quiet: bool = verbosity.QUIET,
         verbose: bool = verbosity.VERBOSE) -> None:
    """Load promoted adapters on the serving targets and switch the gateway's routing table to them."""
    verbosity.apply(quiet, verbose)
    from daemon.sync import AdapterSync
    from daemon.sync.state import targets_status
    from infra.clients import redis_client
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    client = redis_client(cfg.redis)
    s = AdapterSync(cfg, client)
    try:
        if once:
            s.step()
            rows = targets_status(client, cfg.redis.key_prefix, cfg.serving.targets)
            for r in rows:
                mark = "in sync" if r["in_sync"] else "OUT OF SYNC"
                typer.echo(f"{r['target']} ({r['kind']} {r['url']}): {mark}; loaded {', '.join(r['loaded']) or '-'}"
                           + (f"; {r['error']}" if r["error"] else ""))
            typer.echo(f"routes: {s.table.read().names}")
            raise typer.Exit(0 if all(r["in_sync"] for r in rows) else 1)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"compass sync: {len(cfg.serving.targets)} target(s), every {cfg.serving.sync_poll_s} s")
        s.run(stop)
    finally:
        s.close()
        client.close()
