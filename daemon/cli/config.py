"""``compass config check FILE``: every problem with its key path, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Keeps `check` a sub-command (typer collapses a one-command app into its root)."""


@app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="YAML files: a service config or languages.yaml"),
) -> None:
    """Validate each FILE; exit 1 if any has problems."""
    from infra.settings import check_file

    failed = False
    for path in files:
        kind, problems = check_file(path)
        if problems:
            failed = True
            typer.echo(f"{path} ({kind} config): {len(problems)} problem(s)")
            for p in problems:
                typer.echo(f"  - {p}")
        else:
            typer.echo(f"{path} ({kind} config): ok")
    raise typer.Exit(1 if failed else 0)
