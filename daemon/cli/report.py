"""``compass report RUN_DIR [--out FILE]``: one self-contained HTML page about a run directory.

RUN_DIR holds events.jsonl, js.jsonl, jobs/<job_id>.json and optionally summary.json (see compass/report).
Malformed lines are listed at the top of the page with their file and line number; the command still succeeds.
"""

from __future__ import annotations

from pathlib import Path

import typer

OUT = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html)")


def report(run_dir: Path = typer.Argument(..., help="a run directory (e.g. written by `compass demo`)"),
           out: Path | None = OUT) -> None:
    """Render a run directory (drift checks, events, job reports) as one HTML file with embedded plots."""
    from compass.errors import DataError
    from compass.report import write_report

    if not run_dir.is_dir():
        raise DataError(str(run_dir), ["RUN_DIR is not a directory; pass the folder holding events.jsonl, "
                                       "js.jsonl and jobs/"])
    path, run = write_report(run_dir, out)
    typer.echo(f"wrote {path} ({len(run.checks)} checks, {len(run.events)} events, {len(run.jobs)} jobs)")
    for p in run.problems:
        typer.secho(f"malformed: {p}", fg=typer.colors.YELLOW, err=True)
