"""The demo's last step, report: everything the run saw lands in its run directory (``events.jsonl``, ``js.jsonl``,
the job reports, ``summary.json``), which ``compass report`` renders to HTML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from daemon.demo.bootstrap import Bootstrapped
from daemon.demo.prepare import Prepared
from daemon.demo.settings import PREFIX, DemoResult, DemoSettings, Say
from daemon.demo.timing import PhaseTimer


def record_run(p: Prepared, settings: DemoSettings, boot: Bootstrapped, events: list[dict[str, Any]], since: float,
               run_dir: Path, run_id: str, timer: PhaseTimer, say: Say) -> DemoResult:
    """Write the run directory, render its report (a failure is said, not raised) and return the result."""
    job_ids = {e["job_id"] for e in events if e.get("job_id")}
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    export_js(p.client, list(settings.languages), run_dir, since)
    updates = copy_reports(p.cfg.worker.work_dir, run_dir, job_ids)
    final = {lang: boot.registry.current(lang) for lang in settings.languages}
    timer.total()
    (run_dir / "summary.json").write_text(json.dumps({
        "phases": timer.phases, "languages": list(settings.languages), "run_id": run_id, "bootstrap": boot.versions,
        "final_versions": final, "shift_language": p.scenario.shift_language,
        "notes": [f"model {p.model_dir.name}/{p.gguf or ''} on {boot.device}", f"theta {settings.theta}"]}, indent=2))
    report = None
    try:
        from compass.report import render_report

        report = render_report(run_dir)
    except Exception as e:  # the run itself succeeded; a report failure must not hide it
        say(f"[red]report failed: {e}[/]")
    return DemoResult(run_dir, timer.phases, events, boot.versions, final, updates, report)


def copy_reports(work_dir: Path, run_dir: Path, job_ids: set[str]) -> list[dict[str, Any]]:
    out = []
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    for path in sorted((work_dir / "reports").glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("job_id") in job_ids:
            shutil.copy(path, run_dir / "jobs" / path.name)
            out.append(report)
    return out


def export_js(client: Any, languages: list[str], run_dir: Path, since: float) -> int:
    """The daemon's JS readings of this run (infra/history.py) as ``js.jsonl``."""
    from infra.history import js_history

    n = 0
    with (run_dir / "js.jsonl").open("w") as f:
        for lang in languages:
            for row in js_history(client, lang, PREFIX):
                if row.get("at", 0) >= since:
                    f.write(json.dumps({"language": lang, **row}) + "\n")
                    n += 1
    return n
