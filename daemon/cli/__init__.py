"""The ``compass`` command: ``main`` builds the Typer app; each group is a module of this package."""

from daemon.cli.main import app, main

__all__ = ["app", "main"]
