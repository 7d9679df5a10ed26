"""The HTML page: tables and base64-embedded PNGs in one file that opens anywhere, offline."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compass.report import plots
from compass.report.load import JOBS_DIR, Problem, RunData, load_run

CLUSTER_COLUMNS = ("cluster", "n_t", "n_eval", "n_aux", "w_tilde", "quota", "selected")
GATE_ROWS = (("adaptation", "adaptation_current", "adaptation_candidate", "adaptation_change"),
             ("retention", "retention_current", "retention_candidate", "retention_change"))
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00}.ok{color:#070}.problems li{color:#b00}
section.job{border-top:2px solid #888;margin-top:2em}img{max-width:100%}"""


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any, digits: int = 4) -> str:
    """Numbers as shown in every table: ints as is, floats with ``digits`` decimals, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)


def fmt_rel(v: Any) -> str:
    """A relative change (candidate - current) / current as a signed percentage, e.g. -9.40%."""
    return f"{v:+.2%}" if _is_num(v) else "—"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (labels), values are escaped."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{_esc(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _t0(run: RunData) -> float:
    times = [c["at"] for c in run.checks] + [e["at"] for e in run.events]
    times += [j["started_at"] for _, j in run.jobs if _is_num(j.get("started_at"))]
    return min(times) if times else 0.0


def _stamp(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z" if _is_num(t) else "—"


# ------------------------------------------------------------------------------------------- sections


def _problems(run: RunData) -> str:
    parts = []
    if run.problems:
        items = "".join(f"<li>{_esc(p)}</li>" for p in run.problems)
        parts.append(f'<h2 class="bad">Malformed input ({len(run.problems)})</h2><ul class="problems">{items}</ul>')
    if run.missing:
        parts.append(f"<p>Not in this run directory: {_esc(', '.join(run.missing))}</p>")
    return "".join(parts)


def _summary(run: RunData) -> str:
    s = run.summary or {}
    out = []
    phases = s.get("phases")
    if isinstance(phases, Mapping) and phases:
        rows = [(k, fmt(v, 2) if _is_num(v) else v) for k, v in phases.items()]
        out.append("<h2>Phase timings</h2>" + _table(("phase", "seconds"), rows))
    scalars = [(k, v) for k, v in s.items() if isinstance(v, str | int | float | bool) and v is not None]
    if scalars:
        out.append("<h2>Run</h2>" + _table(("key", "value"), [(k, fmt(v, 2)) for k, v in scalars], left=2))
    versions = s.get("final_versions")
    if isinstance(versions, Mapping) and versions:
        rows = [(lang, v if v is not None else "— (none)") for lang, v in sorted(versions.items())]
        out.append("<h3>Current adapter per language at the end</h3>" + _table(("language", "version"), rows, left=2))
    notes = s.get("notes")
    if isinstance(notes, list) and notes:
        out.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(out)


def _drift(run: RunData, t0: float) -> str:
    if not run.checks and not run.events:
        return "<h2>Drift checks</h2><p>No checks recorded.</p>"
    out = ["<h2>Drift checks (JS, eq. 5, vs theta, eq. 6)</h2>"]
    rows = []
    for lang in run.languages:
        checks = [c for c in run.checks if c["language"] == lang]
        events = [e for e in run.events if e["language"] == lang]
        js = [c["js"] for c in checks if c.get("js") is not None]
        triggers = sum(e["type"] == "drift_detected" for e in events)
        enqueued = sum(e["type"] == "update_enqueued" for e in events)
        rows.append((lang, len(checks), fmt(max(js)) if js else "—", fmt(js[-1]) if js else "—",
                     fmt(checks[-1].get("theta")) if checks else "—", triggers, enqueued))
    out.append(_table(("language", "checks", "max JS", "last JS", "theta", "triggers", "updates enqueued"), rows))
    for lang in run.languages:
        checks = [c for c in run.checks if c["language"] == lang]
        if checks:
            events = [e for e in run.events if e["language"] == lang]
            out.append(f"<h3>{_esc(lang)}</h3>" + _img(plots.js_timeline(lang, checks, events, t0), f"JS {lang}"))
    return "".join(out)


def _timeline(run: RunData, t0: float) -> str:
    if not run.events:
        return "<h2>Update timeline</h2><p>No events recorded.</p>"
    langs = sorted({e["language"] for e in run.events})
    rows = []
    for e in run.events:
        d = e.get("data", {})
        detail = ", ".join(f"{k}={d[k]}" for k in ("js", "theta", "adapter_version", "outcome", "ok", "attempt",
                                                   "reasons", "error") if d.get(k) is not None)
        rows.append((fmt(e["at"] - t0, 1), e["language"], e["type"], e.get("job_id") or "—", detail))
    return ("<h2>Update timeline</h2>" + _img(plots.update_timeline(run.events, langs, t0), "update timeline")
            + _table(("t (s)", "language", "event", "job", "details"), rows, left=5))


def _selection(sel: Mapping[str, Any], job_id: str) -> str:
    out = ["<h3>Selection</h3>"]
    keys = ("method", "budget", "n_target", "n_recent", "n_pool", "n_selected")
    out.append(_table(keys, [[fmt(sel.get(k), 2) if isinstance(sel.get(k), float) else fmt(sel.get(k))
                              for k in keys]], left=0))
    clusters = sel.get("clusters")
    if isinstance(clusters, list) and clusters:
        rows = [[fmt(c.get(k)) if isinstance(c, Mapping) else "?" for k in CLUSTER_COLUMNS] for c in clusters]
        out.append(_table(CLUSTER_COLUMNS, rows, left=0))
    shortfall = sel.get("shortfall_clusters")
    if isinstance(shortfall, list):
        out.append(f"<p>Shortfall clusters (quota not met from distinct candidates): "
                   f"{_esc(', '.join(str(c) for c in shortfall) if shortfall else 'none')}</p>")
    src = sel.get("source_languages")
    if isinstance(src, Mapping) and src:
        counts = {str(k): v for k, v in src.items() if _is_num(v)}
        out.append(_table(("source language", "selected"), sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
        out.append(_img(plots.bar_chart(counts, f"{job_id}: selected per source language"), "source languages"))
    return "".join(out)


def _train(tr: Mapping[str, Any], job_id: str) -> str:
    keys = ("steps", "epochs", "n_train", "n_anchors", "seconds_per_step")
    out = ["<h3>Training</h3>", _table(keys, [[fmt(tr.get(k), 3) for k in keys]], left=0)]
    train = [v for v in tr.get("train_loss") or [] if _is_num(v)]
    val = [v for v in tr.get("val_loss") or [] if _is_num(v)]
    if train or val:
        n = max(len(train), len(val))
        rows = [(i + 1, fmt(train[i]) if i < len(train) else "—", fmt(val[i]) if i < len(val) else "—")
                for i in range(n)]
        out.append(_table(("epoch", "train loss", "validation loss"), rows, left=0))
        out.append(_img(plots.loss_curves(train, val, f"{job_id}: loss"), "loss curves"))
    return "".join(out)


def _gate(g: Mapping[str, Any]) -> str:
    out = ["<h3>Learning vs forgetting (promotion gate)</h3>"]
    rows = [(name, fmt(g.get(cur)), fmt(g.get(cand)), fmt_rel(g.get(ch))) for name, cur, cand, ch in GATE_ROWS]
    out.append(_table(("NLL", "current", "candidate", "relative change"), rows))
    passed = g.get("passed")
    verdict = "passed" if passed is True else "failed" if passed is False else "—"
    cls = "ok" if passed is True else "bad"
    margin = g.get("margin")
    shown = f"{margin:.2%}" if _is_num(margin) else "—"
    out.append(f'<p>Gate: <b class="{cls}">{verdict}</b>, retention margin {shown}</p>')
    reasons = g.get("reasons")
    if isinstance(reasons, list) and reasons:
        out.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    return "".join(out)


def _job(name: str, job: Mapping[str, Any]) -> str:
    job_id = str(job.get("job_id") or name.removesuffix(".json"))
    start, end = job.get("started_at"), job.get("finished_at")
    took = fmt(end - start, 1) if _is_num(start) and _is_num(end) else "—"
    head = (("job", job_id), ("language", job.get("language")), ("kind", job.get("kind")),
            ("reason", job.get("reason")), ("outcome", job.get("outcome")), ("version", job.get("version")),
            ("parent", job.get("parent")), ("promoted", fmt(job.get("promoted"))), ("started", _stamp(start)),
            ("seconds", took), ("error", job.get("error")))
    out = [f'<section class="job" id="{_esc(job_id)}"><h2>Job {_esc(job_id)}</h2>',
           _table(("field", "value"), [(k, "—" if v is None else v) for k, v in head], left=2)]
    for key, section in (("selection", _selection), ("train", _train)):
        part = job.get(key)
        if isinstance(part, Mapping):
            out.append(section(part, job_id))
    if isinstance(job.get("gate"), Mapping):
        out.append(_gate(job["gate"]))
    p_ref = job.get("p_ref")
    if isinstance(p_ref, list) and p_ref:
        out.append(f"<p>P_ref (eq. 3): [{_esc(', '.join(fmt(p) for p in p_ref))}]</p>")
    return "".join(out) + "</section>"


def _jobs(run: RunData) -> str:
    if not run.jobs:
        return "<h2>Jobs</h2><p>No job reports in this run.</p>"
    rows, sections = [], []
    for name, job in run.jobs:
        try:
            sections.append(_job(name, job))
        except Exception as e:  # noqa: BLE001 -- a report with odd types is named on the page, never a crash
            run.problems.append(Problem(f"{JOBS_DIR}/{name}", None, f"could not be rendered: {type(e).__name__}: {e}"))
            continue
        g = job.get("gate") if isinstance(job.get("gate"), Mapping) else {}
        rows.append((job.get("job_id") or name, job.get("language"), job.get("outcome"), job.get("version") or "—",
                     fmt_rel(g.get("adaptation_change")), fmt_rel(g.get("retention_change"))))
    table = _table(("job", "language", "outcome", "version", "adaptation Δ", "retention Δ"), rows, left=4)
    return "<h2>Jobs</h2>" + table + "".join(sections)


def render_html(run: RunData) -> str:
    """The whole page for ``run``; never raises on the run's contents."""
    t0 = _t0(run)
    body = [_summary(run), _drift(run, t0), _timeline(run, t0), _jobs(run)]
    langs = ", ".join(run.languages) or "none"
    head = (f"<h1>compass run report</h1><p>Run directory: <code>{_esc(run.root)}</code><br>"
            f"Languages: {_esc(langs)}; started {_stamp(t0) if t0 else '—'}; {len(run.checks)} checks, "
            f"{len(run.events)} events, {len(run.jobs)} jobs.</p>")
    # problems last-computed (rendering may add some) but shown first
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>compass report: {_esc(run.root.name)}</title>'
            f"<style>{_CSS}</style></head><body>{head}{_problems(run)}{''.join(body)}</body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, RunData]:
    """Render ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); returns the path and what was read."""
    run = load_run(run_dir)
    page = render_html(run)
    path = Path(out) if out else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path, run


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``write_report`` for callers that only want the page's path (e.g. the demo)."""
    return write_report(run_dir, out)[0]
