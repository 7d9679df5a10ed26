"""The ``compass`` command. Each group lives in ``daemon/cli/``; later issues add their own."""

from __future__ import annotations

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


def _register_optional() -> None:
    """Command groups owned by other modules; registered here so `compass --help` lists them all."""
    from daemon.cli import adapt as adapt_cmd
    from daemon.cli import adapters as adapters_cmd
    from daemon.cli import bench as bench_cmd
    from daemon.cli import calibrate as calibrate_cmd
    from daemon.cli import codebook as codebook_cmd
    from daemon.cli import consume as consume_cmd
    from daemon.cli import daemon as daemon_cmd
    from daemon.cli import data as data_cmd
    from daemon.cli import demo as demo_cmd
    from daemon.cli import embed as embed_cmd
    from daemon.cli import explain as explain_cmd
    from daemon.cli import langid_demo as langid_demo_cmd
    from daemon.cli import ref as ref_cmd
    from daemon.cli import report as report_cmd
    from daemon.cli import route as route_cmd
    from daemon.cli import select as select_cmd
    from daemon.cli import serve as serve_cmd
    from daemon.cli import simulate as simulate_cmd
    from daemon.cli import stack as stack_cmd
    from daemon.cli import status as status_cmd
    from daemon.cli import worker as worker_cmd

    app.add_typer(stack_cmd.app, name="stack")
    app.add_typer(data_cmd.app, name="data")
    app.command("embed")(embed_cmd.embed)
    app.command("demo")(demo_cmd.demo)
    app.command("langid-demo")(langid_demo_cmd.langid_demo)
    app.add_typer(codebook_cmd.app, name="codebook")
    app.command("select")(select_cmd.select)
    app.command("simulate")(simulate_cmd.simulate)
    app.command("consume")(consume_cmd.consume)
    app.command("daemon")(daemon_cmd.daemon)
    app.command("route")(route_cmd.route)
    app.command("serve")(serve_cmd.serve)
    app.command("worker")(worker_cmd.worker)
    app.command("adapt")(adapt_cmd.adapt)
    app.add_typer(ref_cmd.app, name="ref")
    app.command("report")(report_cmd.report)
    app.command("calibrate")(calibrate_cmd.calibrate)
    app.add_typer(adapters_cmd.app, name="adapters")
    app.add_typer(bench_cmd.app, name="bench")
    app.command("explain")(explain_cmd.explain)
    app.command("status")(status_cmd.status)


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

