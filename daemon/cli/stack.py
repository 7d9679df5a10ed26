"""``compass stack up|down|status``: the local Kafka broker and redis-server (deploy/local/)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="The local stack: a Kafka broker (KRaft) and redis-server on 127.0.0.1, state in state_dir.",
    no_args_is_help=True,
)


class Only(StrEnum):
    kafka = "kafka"
    redis = "redis"


ONLY = typer.Option(None, "--only", help="act on one service only")
CONFIG = typer.Option(None, "--config", help="service config YAML (default: configs/default.yaml)")


def _stack(config: Path | None, console: Console):
    from deploy.local.stack import Stack
    from infra.settings import load_service_config

    return Stack(load_service_config(config), progress=console.status)


@app.command()
def up(only: Only | None = ONLY, config: Path | None = CONFIG) -> None:
    """Start the servers that are not running yet and wait until they answer."""
    console = Console(soft_wrap=True)  # paths stay on one line
    results = _stack(config, console).up(only.value if only else None)
    for r in results.values():
        if not r.started:
            console.print(f"{r.name}: already running on {r.address} (pid {r.pid}); nothing started")
            continue
        for step in r.steps:
            console.print(f"{r.name}: {step}")
        ready = f"pid {r.pid}, ready in {r.seconds:.1f} s, log {r.log}"
        console.print(f"{r.name}: [green]started[/] on {r.address} ({ready})")


@app.command()
def down(only: Only | None = ONLY, config: Path | None = CONFIG) -> None:
    """Stop the servers this state directory started (SIGTERM, SIGKILL after stack.stop_timeout_s)."""
    console = Console(soft_wrap=True)
    results = _stack(config, console).down(only.value if only else None)
    for r in results.values():
        if r.stopped:
            how = " with SIGKILL after SIGTERM timed out" if r.killed else ""
            console.print(f"{r.name}: stopped pid {r.pid}{how}")
        else:
            console.print(f"{r.name}: {r.detail}; nothing to stop")


@app.command()
def status(only: Only | None = ONLY, config: Path | None = CONFIG) -> None:
    """Each service's PID, address and whether it answers. Exit code 1 if any does not answer."""
    console = Console()
    results = _stack(config, console).status(only.value if only else None)
    table = Table("service", "address", "pid", "answers", "detail")
    for s in results.values():
        answers = "[green]yes[/]" if s.answering else "[red]no[/]"
        table.add_row(s.name, s.address, str(s.pid or "-"), answers, s.detail)
    console.print(table)
    raise typer.Exit(0 if all(s.answering for s in results.values()) else 1)
