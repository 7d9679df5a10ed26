"""Reading a run directory without ever raising on its contents: bad lines become ``Problem`` entries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FILE, JS_FILE, JOBS_DIR, SUMMARY_FILE = "events.jsonl", "js.jsonl", "jobs", "summary.json"


@dataclass(frozen=True)
class Problem:
    """One malformed piece of input: the file (relative to RUN_DIR), its line (None for a whole file), why."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass
class RunData:
    root: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, report), by start time
    summary: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # optional parts that are absent (not errors)

    @property
    def languages(self) -> list[str]:
        langs = {c["language"] for c in self.checks} | {e["language"] for e in self.events}
        langs |= {j["language"] for _, j in self.jobs if isinstance(j.get("language"), str)}
        return sorted(langs)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _read_jsonl(path: Path, name: str, problems: list[Problem]) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        problems.append(Problem(name, None, f"cannot be read ({e})"))
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(name, n, f"not JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(name, n, f"must be a JSON object; got {type(obj).__name__}"))
            continue
        rows.append((n, obj))
    return rows


def _events(run: RunData) -> None:
    path = run.root / EVENTS_FILE
    if not path.exists():
        run.missing.append(EVENTS_FILE)
        return
    for n, obj in _read_jsonl(path, EVENTS_FILE, run.problems):
        bad = [k for k in ("type", "language") if not isinstance(obj.get(k), str) or not obj.get(k)]
        if bad or not _number(obj.get("at")):
            fields = bad + ([] if _number(obj.get("at")) else ["at"])
            run.problems.append(Problem(EVENTS_FILE, n, f"field(s) {fields} missing or of the wrong type"))
            continue
        if not isinstance(obj.get("data"), dict):
            obj = {**obj, "data": {}}
        run.events.append(obj)
    run.events.sort(key=lambda e: e["at"])


def _checks(run: RunData) -> None:
    path = run.root / JS_FILE
    if not path.exists():
        run.missing.append(JS_FILE)
        return
    for n, obj in _read_jsonl(path, JS_FILE, run.problems):
        problems = []
        if not isinstance(obj.get("language"), str) or not obj.get("language"):
            problems.append(f"language: got {obj.get('language')!r}; must be a language code")
        if not _number(obj.get("at")):
            problems.append(f"at: got {obj.get('at')!r}; must be a unix time")
        if obj.get("js") is not None and not _number(obj.get("js")):
            problems.append(f"js: got {obj.get('js')!r}; must be a number or null")
        if obj.get("theta") is not None and not _number(obj.get("theta")):
            problems.append(f"theta: got {obj.get('theta')!r}; must be a number")
        if problems:
            run.problems.append(Problem(JS_FILE, n, "; ".join(problems)))
            continue
        run.checks.append(obj)
    run.checks.sort(key=lambda c: c["at"])


def _jobs(run: RunData) -> None:
    folder = run.root / JOBS_DIR
    if not folder.is_dir():
        run.missing.append(f"{JOBS_DIR}/")
        return
    for path in sorted(folder.glob("*.json")):
        name = f"{JOBS_DIR}/{path.name}"
        try:
            obj = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            run.problems.append(Problem(name, e.lineno, f"not JSON ({e.msg} at column {e.colno})"))
            continue
        except OSError as e:
            run.problems.append(Problem(name, None, f"cannot be read ({e})"))
            continue
        if not isinstance(obj, dict):
            run.problems.append(Problem(name, None, f"must be a JSON object; got {type(obj).__name__}"))
            continue
        run.jobs.append((path.name, obj))
    run.jobs.sort(key=lambda nj: (nj[1].get("started_at") if _number(nj[1].get("started_at")) else math.inf, nj[0]))


def _summary(run: RunData) -> None:
    path = run.root / SUMMARY_FILE
    if not path.exists():
        run.missing.append(SUMMARY_FILE)
        return
    try:
        obj = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        run.problems.append(Problem(SUMMARY_FILE, e.lineno, f"not JSON ({e.msg} at column {e.colno})"))
        return
    if not isinstance(obj, dict):
        run.problems.append(Problem(SUMMARY_FILE, None, f"must be a JSON object; got {type(obj).__name__}"))
        return
    run.summary = obj


def load_run(root: str | Path) -> RunData:
    """Everything readable in ``root``; the caller checks that ``root`` is a directory."""
    run = RunData(root=Path(root))
    _summary(run)
    _checks(run)
    _events(run)
    _jobs(run)
    return run
