"""The ``compass`` command. Each group lives in ``daemon/cli/``; later issues add their own."""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from compass.errors import CompassError
from daemon.cli import config as config_cmd

app = typer.Typer(
    help="compass: keeps each language's adapter of a multilingual LLM fresh under drifting traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")


# The parts in `compass --help` order; a group's module (daemon/cli/<name>.py, "-" read as "_") exposes ``app``,
# a command's module a function of its own name.
_PARTS = (
    "stack", "data", "embed", "demo", "langid-demo", "codebook", "select", "simulate", "consume", "daemon", "route",
    "serve", "gateway", "sync", "worker", "adapt", "ref", "report", "calibrate", "adapters", "bench", "explain",
    "status", "expand",
)
_GROUPS = frozenset({"stack", "data", "codebook", "ref", "adapters", "bench"})


def _register_optional() -> None:
    """Command groups owned by other modules; registered here so `compass --help` lists them all."""
    for name in _PARTS:
        module_name = name.replace("-", "_")
        module = importlib.import_module(f"daemon.cli.{module_name}")
        if name in _GROUPS:
            app.add_typer(module.app, name=name)
        else:
            app.command(name)(getattr(module, module_name))


_register_optional()


def main() -> None:
    """Entry point: a CompassError prints its message (which names the fix) and exits 2, no traceback."""
    from infra.logs import configure_logging

    configure_logging(logging.INFO)  # third-party loggers at WARNING; --quiet/--verbose of a command change it
    try:
        app()
    except CompassError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)

