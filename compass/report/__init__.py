"""``compass report RUN_DIR``: one self-contained HTML page (embedded PNGs, tables) about a run directory.

A run directory holds ``events.jsonl`` (compass.events messages), ``js.jsonl`` (one daemon check per line),
``jobs/<job_id>.json`` (worker job reports) and an optional ``summary.json``. Every part may be missing or
partly malformed: the page still renders and names each bad file and line.
"""

from compass.report.load import Problem, RunData, load_run
from compass.report.render import render_html, render_report, write_report

__all__ = ["Problem", "RunData", "load_run", "render_html", "render_report", "write_report"]
