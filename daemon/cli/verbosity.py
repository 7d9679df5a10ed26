"""``--quiet/--verbose`` of the long-running commands: quiet logs WARNING and up, verbose DEBUG for compass loggers
(and INFO for the third-party ones, WARNING otherwise); see infra/logs.py."""

from __future__ import annotations

import logging

import typer

QUIET = typer.Option(False, "--quiet", "-q", help="log warnings and errors only")
VERBOSE = typer.Option(False, "--verbose", "-v", help="log DEBUG lines of compass (and INFO of libraries)")


def apply(quiet: bool, verbose: bool, *, default: int | str = logging.INFO, json_lines: bool = False) -> None:
    """Reconfigure logging for a command; ``default`` is its level with neither flag."""
    from infra.logs import configure_logging, verbosity_level

    try:
        level = verbosity_level(quiet, verbose, default)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    configure_logging(level, json_lines=json_lines)
