"""Console output for people: `compass status` against a real daemon API (also live in a tmux pane), quiet
third-party loggers, structured fields in the plain log format, numbers at 3 significant digits."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from httpserve import serve
from typer.testing import CliRunner

from daemon.api.app import create_app
from daemon.cli import app as cli_app
from daemon.cli.demo import update_line
from daemon.cli.status import DaemonUnreachable, fetch, rows, unserved_rows
from infra.history import queue_event
from infra.logs import OWN, THIRD_PARTY, PlainFormatter, configure_logging, human, human_pct, verbosity_level
from infra.messages import Event
from infra.reference import set_reference
from infra.unserved import Traffic, UnservedStore
from infra.window import Assignment, WindowStore

ROOT = Path(__file__).resolve().parent.parent
LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, cooldown_s: 100}
languages:
  sw: {}
  yo: {enabled: false}
"""


# ------------------------------------------------------------------------------------------ compass status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` on uvicorn in a thread; yields its URL."""
    with serve(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def drifted(make_daemon, redis):
    """A daemon whose sw window drifted (JS 0.311 > 0.2, an update dispatched), one sw event, unserved traffic."""
    daemon = make_daemon(LANGS, "console")
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    items = [Assignment(f"q{i}", 0, "compass.queries", 0, i, f"t{i}") for i in range(4)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)
    assert daemon.check("sw").state == "drift"
    at = time.time()
    with redis.pipeline(transaction=True) as pipe:
        queue_event(pipe, Event("drift_detected", "sw", at, None, {"js": 0.311}), daemon.prefix)
        pipe.execute()
    now_ms = int(at * 1000)
    traffic = [Traffic(f"{lang}-{i}", lang, served, "compass.queries", 0, n * 10 + i, now_ms)
               for n, (lang, served, count) in enumerate((("sw", True, 8), ("ca", False, 3)))
               for i in range(count)]
    UnservedStore(redis).apply(traffic)
    return daemon, time.strftime("%H:%M:%S", time.localtime(at))


def expected_rows(clock: str) -> list[tuple[str, ...]]:
    return [("sw", "updating", "0.311", "0.200", "100% (4/4)", "a1", f"drift_detected at {clock}"),
            ("yo", "disabled", "n/a", "0.200", "0% (0/4)", "base model", "-")]


def test_status_rows_from_the_daemon_api(drifted):
    daemon, clock = drifted
    snapshot = fetch(TestClient(create_app(daemon)), "http://testserver")
    assert rows(snapshot) == expected_rows(clock)
    assert unserved_rows(snapshot) == [("ca", "3", "27.3%", "few")]


def test_status_command_prints_the_rows_and_names_a_dead_url(drifted):
    daemon, clock = drifted
    with served(create_app(daemon)) as url:
        r = CliRunner().invoke(cli_app, ["status", "--url", url], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = [" ".join(line.replace("│", " ").split()) for line in r.output.splitlines()]
    for row in expected_rows(clock):
        assert " ".join(row) in lines
    assert "ca 3 27.3% few" in lines
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(DaemonUnreachable) as info, httpx.Client(timeout=2) as client:
        fetch(client, dead)
    assert str(info.value).startswith(f"no compass daemon answers at {dead} (ConnectError: ")
    assert str(info.value).endswith("start it with `compass daemon` or point --url at its http.host:http.port")
    p = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--url", dead], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith(f"error: no compass daemon answers at {dead}"), p.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt package tmux)")
def test_status_watch_refreshes_in_a_tmux_pane(drifted, redis):
    daemon, clock = drifted
    sock = f"compass-test-{uuid.uuid4().hex[:8]}"  # a private tmux server: never the user's sessions
    tmux = ["tmux", "-L", sock]

    def pane() -> list[str]:
        out = subprocess.run([*tmux, "capture-pane", "-p", "-t", "status"], capture_output=True, text=True).stdout
        return [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]

    def wait_for(line: str) -> list[str]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if line in (shown := pane()):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{line!r} not shown in the pane:\n" + "\n".join(pane()))

    with served(create_app(daemon)) as url:
        cmd = f"{sys.executable} -m daemon.cli status --watch --interval 0.3 --url {url}"
        # without COLUMNS/LINES (pytest-xdist sets 80x24 in its workers): rich must size to the 200-column pane
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        subprocess.run([*tmux, "new-session", "-d", "-s", "status", "-x", "200", "-y", "40", "-c", str(ROOT), cmd],
                       check=True, env={**env, "TERM": "xterm-256color"})
        try:
            shown = wait_for(" ".join(expected_rows(clock)[0]))
            assert " ".join(expected_rows(clock)[1]) in shown and "ca 3 27.3% few" in shown
            at = time.time()  # a new event: the same pane shows it on a refresh
            with redis.pipeline(transaction=True) as pipe:
                queue_event(pipe, Event("update_finished", "sw", at, None, {"outcome": "promoted"}), daemon.prefix)
                pipe.execute()
            row = (*expected_rows(clock)[0][:-1], f"update_finished at {time.strftime('%H:%M:%S', time.localtime(at))}")
            shown = wait_for(" ".join(row))
            assert sum(line.startswith("sw ") for line in shown) == 1  # redrawn in place, not appended
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)


# ------------------------------------------------------------------------------------------ logging


def test_a_command_starts_without_faiss_info_lines(tmp_path):
    # codebook build imports faiss (compass.cluster) before it reads anything; it then fails: no such file
    p = subprocess.run([sys.executable, "-m", "daemon.cli", "codebook", "build", str(tmp_path / "none.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2 and p.stderr.startswith("error: "), p.stderr
    assert "faiss.loader" not in p.stdout + p.stderr


def test_plain_formatter_renders_extra_fields():
    log = logging.getLogger("consumers.monitor")
    rec = log.makeRecord("consumers.monitor", logging.INFO, __file__, 1, "progress", (), None, extra={
        "batches": 3, "messages": 192, "lag": 0, "codebook": "c0ffee", "rate": 123.456789, "note": "two words",
        "unserved": {"ca": 2}, "partitions": ["q:0", "q:1"], "error": None, "color_message": "\x1b[1mprogress"})
    fmt = PlainFormatter()
    assert fmt.format(rec) == (f"{fmt.formatTime(rec)} INFO consumers.monitor: progress batches=3 messages=192 lag=0 "
                               'codebook=c0ffee rate=123 note="two words" unserved={"ca":2} partitions=["q:0","q:1"] '
                               "error=None")
    plain = log.makeRecord("consumers.monitor", logging.WARNING, __file__, 1, "lag %d", (5,), None)
    assert fmt.format(plain) == f"{fmt.formatTime(plain)} WARNING consumers.monitor: lag 5"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = (*OWN, *THIRD_PARTY)
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_quiet_and_verbose_levels(restore_logging):
    def levels() -> tuple[int, ...]:
        return tuple(logging.getLogger(n).getEffectiveLevel()
                     for n in ("compass.drift", "daemon.scheduler.service", "faiss.loader", "kafka.conn", "uvicorn.access",
                               "some.library"))

    inf, W, D = logging.INFO, logging.WARNING, logging.DEBUG
    configure_logging(verbosity_level())
    assert levels() == (inf, inf, W, W, W, W)
    configure_logging(verbosity_level(quiet=True))
    assert levels() == (W, W, W, W, W, W)
    configure_logging(verbosity_level(verbose=True))
    assert levels() == (D, D, inf, inf, inf, inf)
    assert verbosity_level(default="error") == logging.ERROR
    with pytest.raises(ValueError, match="unknown log level 'LOUD'; use DEBUG, INFO, WARNING or ERROR"):
        verbosity_level(default="LOUD")
    with pytest.raises(ValueError, match="exclude each other"):
        verbosity_level(quiet=True, verbose=True)


# ------------------------------------------------------------------------------------------ numbers for people


def test_numbers_at_three_significant_digits():
    assert [human(x) for x in (3.141592653589793, 2.718281828459045, 0.0123456, 12345.678, 0.999999, 100.0, 0.0,
                               1.5e-7, 123456789.0, 7, None)] == [
        "3.14", "2.72", "0.0123", "12,300", "1.00", "100", "0", "1.5e-07", "1.23e+08", "7", "n/a"]
    assert [human_pct(x) for x in (-0.0423123, 0.12, 0.0, None)] == ["-4.23%", "+12.0%", "0%", "n/a"]


def test_demo_summary_rounds_the_nlls():
    report = {"job_id": "j1", "language": "it", "outcome": "promoted",
              "gate": {"adaptation_current": 3.4567891234567891, "adaptation_candidate": 2.9876543210987654,
                       "retention_current": 2.0123456789012345, "retention_candidate": 2.0234567890123456}}
    assert update_line(report) == "update j1 (it): promoted; adaptation NLL 3.46 -> 2.99, retention 2.01 -> 2.02"
    assert update_line({"job_id": "j2", "language": "es", "outcome": "failed", "gate": None}) == (
        "update j2 (es): failed; adaptation NLL n/a -> n/a, retention n/a -> n/a")


def test_demo_events_show_changes_at_three_significant_digits():
    from daemon.demo.events import describe_event

    at = 1_700_000_000.0
    ev = {"type": "adapter_promoted", "language": "it", "at": at,
          "data": {"adapter_version": "v2", "gate": {"adaptation_change": -0.0423123, "retention_change": 0.0012345}}}
    assert describe_event(ev) == (f"{time.strftime('%H:%M:%S', time.localtime(at))} [bold green]it: adapter v2 "
                                  "promoted[/] (adaptation -4.23%, retention +0.123%)")
