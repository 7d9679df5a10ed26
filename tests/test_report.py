"""compass report: a hand-built run directory renders to one HTML page with exact numbers and valid PNGs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from compass.report import load_run, render_html, render_report, write_report
from compass.report.render import fmt_rel
from daemon.cli import app
from infra.messages import Event

T = 1732270000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _job(job_id: str, lang: str, **over) -> dict:
    job = {
        "job_id": job_id, "language": lang, "kind": "update", "reason": "drift",
        "started_at": T + 100, "finished_at": T + 190, "version": "20261122T190000Z-ab12",
        "parent": "20261122T180000Z-cd34", "promoted": True, "outcome": "promoted", "error": None,
        "selection": {"method": "compass", "budget": 0.8, "n_target": 300, "n_recent": 400, "n_pool": 5000,
                      "n_selected": 240,
                      "clusters": [{"cluster": 0, "n_t": 10, "n_eval": 25, "n_aux": 300, "w_tilde": 0.12,
                                    "quota": 30, "selected": 30},
                                   {"cluster": 3, "n_t": 2, "n_eval": 40, "n_aux": 5, "w_tilde": 0.5,
                                    "quota": 60, "selected": 5}],
                      "source_languages": {"es": 120, "pt": 60}, "shortfall_clusters": [3]},
        "train": {"steps": 40, "epochs": 2, "train_loss": [3.1, 2.7], "val_loss": [2.9, 2.8],
                  "seconds_per_step": 1.4, "n_train": 900, "n_anchors": 45},
        "gate": {"adaptation_current": 3.2, "adaptation_candidate": 2.9, "retention_current": 2.5,
                 "retention_candidate": 2.55, "adaptation_change": -0.09375, "retention_change": 0.02,
                 "margin": 0.05, "passed": True, "reasons": ["adaptation NLL fell 9.4%"]},
        "p_ref": [0.1, 0.2, 0.7],
    }
    job.update(over)
    return job


def make_run(root: Path, *, bad_lines: bool = False, jobs: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    checks = [{"language": "it", "at": T + 60 * i, "js": 0.05 * i, "theta": 0.15, "n_samples": 400,
               "state": "ok"} for i in range(5)]
    checks.append({"language": "es", "at": T + 30, "js": None, "theta": 0.15, "n_samples": 10, "state": "filling"})
    lines = [json.dumps(c) for c in checks]
    if bad_lines:
        lines.insert(2, "{not json")
    (root / "js.jsonl").write_text("\n".join(lines) + "\n")
    events = [Event("drift_detected", "it", T + 240, None, {"js": 0.2, "theta": 0.15}),
              Event("update_enqueued", "it", T + 240.5, "it-1", {"js": 0.2}),
              Event("update_started", "it", T + 241, "it-1", {"attempt": 1}),
              Event("adapter_promoted", "it", T + 300, "it-1", {"adapter_version": "v2", "parent": "v1", "gate": {}}),
              Event("update_finished", "it", T + 301, "it-1", {"ok": True, "adapter_version": "v2",
                                                              "outcome": "promoted", "error": None})]
    ev_lines = [json.dumps(e.to_json()) for e in events]
    if bad_lines:
        ev_lines.append(json.dumps({"type": "drift_detected", "at": "yesterday"}))
    (root / "events.jsonl").write_text("\n".join(ev_lines) + "\n")
    if jobs:
        (root / "jobs").mkdir(exist_ok=True)
        (root / "jobs" / "it-1.json").write_text(json.dumps(_job("it-1", "it")))
        rejected = _job("es-2", "es", outcome="rejected", promoted=False, started_at=T + 400,
                        gate={**_job("x", "es")["gate"], "retention_change": 0.0812, "passed": False,
                              "reasons": ["retention NLL rose 8.12% > margin 5%"]})
        (root / "jobs" / "es-2.json").write_text(json.dumps(rejected))
        if bad_lines:
            (root / "jobs" / "broken.json").write_text('{"job_id": "broken",\n "language": }')
    (root / "summary.json").write_text(json.dumps({"phases": {"setup_s": 1.5, "train_s": 123.456},
                                                   "languages": ["it", "es"], "notes": ["seeded demo"],
                                                   "run_id": "r1", "shift_language": "it",
                                                   "final_versions": {"it": "v2", "es": None}}))
    return root


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_holds_exact_numbers_and_valid_pngs(tmp_path: Path) -> None:
    page = render_html(load_run(make_run(tmp_path / "run")))
    # gate: current vs candidate NLL and relative changes, formatted
    assert "<td>3.2000</td><td>2.9000</td><td>-9.38%</td>" in page
    assert "<td>2.5000</td><td>2.5500</td><td>+2.00%</td>" in page
    assert "+8.12%" in page and "retention NLL rose 8.12% &gt; margin 5%" in page
    assert "retention margin 5.00%</p>" in page
    assert 'Gate: <b class="ok">passed</b>' in page and 'Gate: <b class="bad">failed</b>' in page
    # cluster table row, shortfall, source languages
    assert "<tr><td>3</td><td>2</td><td>40</td><td>5</td><td>0.5000</td><td>60</td><td>5</td></tr>" in page
    assert "Shortfall clusters (quota not met from distinct candidates): 3</p>" in page
    assert '<tr><td class="l">es</td><td>120</td></tr><tr><td class="l">pt</td><td>60</td></tr>' in page
    # training: steps, epochs, s/step, per-epoch losses
    assert "<tr><td>40</td><td>2</td><td>900</td><td>45</td><td>1.400</td></tr>" in page
    assert "<tr><td>2</td><td>2.7000</td><td>2.8000</td></tr>" in page
    # phases, drift summary (it: 5 checks, max JS 0.2, 1 trigger, 1 update enqueued), events
    assert '<td class="l">train_s</td><td>123.46</td>' in page
    assert '<tr><td class="l">it</td><td>5</td><td>0.2000</td><td>0.2000</td><td>0.1500</td><td>1</td><td>1</td>' in page
    assert "adapter_promoted" in page and "seeded demo" in page
    assert '<td class="l">shift_language</td><td class="l">it</td>' in page
    assert '<td class="l">es</td><td class="l">— (none)</td>' in page
    assert "Malformed input" not in page
    pngs = _pngs(page)
    # JS timeline for it and es, the update timeline, per job: source-language bars + loss curves
    assert len(pngs) == 2 + 1 + 2 * 2
    assert all(p.startswith(PNG_MAGIC) and p.endswith(b"IEND\xaeB`\x82") for p in pngs)


def test_malformed_input_is_named_not_fatal(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "run", bad_lines=True))
    page = render_html(run)
    named = [str(p) for p in run.problems]
    assert any(s.startswith("js.jsonl line 3: not JSON") for s in named), named
    assert "events.jsonl line 6: field(s) [&#x27;language&#x27;, &#x27;at&#x27;]" in page
    assert any(s.startswith("jobs/broken.json line 2: not JSON") for s in named), named
    assert "Malformed input (3)" in page
    assert len(run.checks) == 6 and len(run.events) == 5 and len(run.jobs) == 2  # the good rest is kept


def test_job_with_wrong_types_is_named(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run")
    (root / "jobs" / "odd.json").write_text(json.dumps({"job_id": "odd", "language": "it",
                                                        "train": {"train_loss": 5}}))
    run = load_run(root)
    page = render_html(run)
    assert "jobs/odd.json: could not be rendered: TypeError" in page
    assert "Job it-1" in page


def test_empty_and_jobless_runs_render(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    page = render_html(load_run(empty))
    assert "No checks recorded." in page and "No job reports in this run." in page
    assert "Not in this run directory: summary.json, js.jsonl, events.jsonl, jobs/" in page
    page = render_html(load_run(make_run(tmp_path / "nojobs", jobs=False)))
    assert "No job reports in this run." in page and len(_pngs(page)) == 3


def test_fmt_rel() -> None:
    assert fmt_rel(-0.09375) == "-9.38%" and fmt_rel(0.02) == "+2.00%" and fmt_rel(None) == "—"


def test_cli_writes_report(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", bad_lines=True)
    out = tmp_path / "out" / "r.html"
    res = CliRunner().invoke(app, ["report", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out} (6 checks, 5 events, 2 jobs)" in res.output
    assert "malformed: js.jsonl line 3" in res.output
    assert out.read_text().startswith("<!doctype html>")
    path, _ = write_report(root)
    assert path == root / "report.html" and path.exists()
    assert render_report(root, tmp_path / "x.html") == tmp_path / "x.html"
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "RUN_DIR is not a directory" in str(res.exception)


def test_initial_job_without_current_adapter_and_failed_job(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", jobs=False)
    (root / "jobs").mkdir()
    gate = {"adaptation_current": None, "adaptation_candidate": 2.9, "retention_current": None,
            "retention_candidate": 2.55, "adaptation_change": None, "retention_change": None, "margin": 0.05,
            "passed": True, "reasons": ["no current adapter"]}
    (root / "jobs" / "it-0.json").write_text(json.dumps(_job("it-0", "it", kind="initial", parent=None, gate=gate)))
    (root / "jobs" / "it-9.json").write_text(json.dumps({"job_id": "it-9", "language": "it", "outcome": "failed",
                                                         "error": "CUDA out of memory", "started_at": T + 900}))
    page = render_html(load_run(root))
    assert "<td>—</td><td>2.9000</td><td>—</td>" in page
    assert '<td class="l">error</td><td class="l">CUDA out of memory</td>' in page
    assert "Malformed input" not in page
