"""Process plumbing shared by the local services: PID files, port probes, log tails, launch and stop.

Processes are started in their own session so they outlive the CLI that launched them. A PID file alone
is not trusted: before signalling, the caller's ``is_ours`` check must recognise the process (PIDs get
reused after a crash or a reboot).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Maven 3.8 colours its output even in batch mode


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))  # a tail never needs more than the last 64 KiB
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could not bind ``host:port`` now (SO_REUSEADDR, as servers do: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def port_owner(port: int) -> str:
    """'pid N (name)' of the process listening on ``port``, or '' when it cannot be told (needs root)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return ""
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return f"pid {c.pid} ({psutil.Process(c.pid).name()})"
            except psutil.Error:
                return f"pid {c.pid}"
    return ""


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct ports the kernel reports free now (all bound at once, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp_answers(port: int, host: str = LOOPBACK, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class PidFile:
    """A PID file holding one decimal PID, as ``kill $(cat FILE)`` expects."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(self.path)  # atomic: a reader never sees a half-written PID

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def find_ours(pid_file: PidFile, is_ours: Callable[[psutil.Process], bool]) -> psutil.Process | None:
    """The live process named by ``pid_file`` if ``is_ours`` recognises it; otherwise None."""
    pid = pid_file.read()
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or not is_ours(proc):
            return None
    except psutil.Error:
        return None
    return proc


def launch(
    argv: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``argv`` detached (own session, stdin closed), stdout+stderr to ``log_path``.

    The previous log is kept as ``<name>.1`` so a failed restart does not erase the last good run.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def poll(proc: psutil.Process) -> tuple[bool, int | None]:
    """(exited, exit code) without blocking. Reaps a child, so it leaves no zombie; the code is None
    for a process this Python process did not start."""
    try:
        return True, proc.wait(timeout=0)
    except psutil.TimeoutExpired:
        return False, None


def stop(proc: psutil.Process, timeout_s: float) -> bool:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns True when SIGKILL was needed."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
    _, alive = psutil.wait_procs([proc], timeout=timeout_s)
    if not alive:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    psutil.wait_procs([proc], timeout=10)
    return True


def run_logged(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Run a short command to completion with its output appended to ``log_path``; returns its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
