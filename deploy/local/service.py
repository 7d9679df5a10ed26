"""The base of a locally run server (Kafka broker, redis-server): start, stop and status as verbs.

A subclass says how to prepare (install, resolve, format), what to run, how to recognise its own process
and when it is ready; the start/stop/status logic, PID files and errors live here once.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import psutil

from deploy.local import process
from infra.errors import StackError
from infra.settings import ServiceConfig

# Shows a long step to the user (the CLI passes a rich spinner); the default shows nothing.
Progress = Callable[[str], AbstractContextManager[object]]


def no_progress(_message: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class StartResult:
    name: str
    address: str
    pid: int
    started: bool  # False: it was already running and nothing new was started
    seconds: float  # from launch to ready (0 when already running)
    log: Path
    steps: tuple[str, ...] = ()  # what preparation did, e.g. "formatted storage (cluster id ...)"


@dataclass(frozen=True)
class StopResult:
    name: str
    address: str
    pid: int | None  # None: nothing of ours was running
    stopped: bool
    killed: bool = False  # SIGTERM was not enough within stack.stop_timeout_s
    detail: str = ""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None  # our running process, None when not running
    running: bool
    answering: bool  # answers a protocol request (PING, cluster metadata)
    detail: str = ""
    log: Path | None = None


class LocalService(ABC):
    """One server of the local stack, with its files under ``state_dir``."""

    name: str  # "kafka", "redis"
    start_step: str  # the StackError step of a failed launch

    def __init__(self, config: ServiceConfig):
        self.config = config
        # absolute: the server runs in another cwd and ownership checks compare paths
        self.state_dir = config.state_dir.expanduser().resolve()
        self.home = self.state_dir / self.name
        self.logs = self.state_dir / "logs"
        self.log = self.logs / f"{self.name}.log"
        self.pid_file = process.PidFile(self.state_dir / "run" / f"{self.name}.pid")

    # ------------------------------------------------------------------ what a subclass tells

    @property
    @abstractmethod
    def address(self) -> str:
        """host:port clients use."""

    @abstractmethod
    def ports(self) -> list[tuple[int, str]]:
        """Each port the server binds on 127.0.0.1, with the config key that sets it."""

    @abstractmethod
    def prepare(self, progress: Progress) -> list[str]:
        """Everything before launch (install, resolve, write configs, format); returns what was done."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The server command line (after ``prepare``)."""

    @abstractmethod
    def is_ours(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` is this service's server for this state directory."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether the freshly launched server is ready for clients."""

    @abstractmethod
    def probe(self) -> tuple[bool, str]:
        """(answers, detail) from a real protocol request to the running server."""

    # ------------------------------------------------------------------ verbs

    def running(self) -> psutil.Process | None:
        """Our live server process, or None (a stale PID file is ignored)."""
        return process.find_ours(self.pid_file, self.is_ours)

    def check_ports(self) -> None:
        """Raise StackError('port in use') if a port this service needs is held by another process."""
        for port, key in self.ports():
            if process.port_in_use(port):
                owner = process.port_owner(port)
                by = f" by {owner}" if owner else ""
                raise StackError(
                    "port in use",
                    f"{self.name} needs {process.LOOPBACK}:{port}, which is in use{by} and is not the "
                    f"compass stack of {self.state_dir}. Stop that process or pick a free port with "
                    f"the config key {key}.",
                )

    def start(self, progress: Progress = no_progress) -> StartResult:
        """Start the server unless ours already runs; either way return once it is ready."""
        proc = self.running()
        if proc is not None:  # e.g. launched by an `up` that was interrupted while waiting
            with progress(f"waiting for the running {self.name} on {self.address}"):
                self._await_ready(proc, launched=False)
            return StartResult(self.name, self.address, proc.pid, started=False, seconds=0.0, log=self.log)
        self.pid_file.remove()  # stale: its process is gone or is not ours
        self.check_ports()
        steps = self.prepare(progress)
        proc = psutil.Process(process.launch(self.argv(), self.log, cwd=self.home).pid)
        self.pid_file.write(proc.pid)
        t0 = time.monotonic()
        with progress(f"waiting for {self.name} on {self.address}"):
            self._await_ready(proc, launched=True)
        return StartResult(
            self.name,
            self.address,
            proc.pid,
            started=True,
            seconds=time.monotonic() - t0,
            log=self.log,
            steps=tuple(steps),
        )

    def stop(self) -> StopResult:
        """Stop our server (SIGTERM, then SIGKILL after stack.stop_timeout_s); never signals a stranger."""
        pid = self.pid_file.read()
        proc = self.running()
        self.pid_file.remove()
        if proc is None:
            detail = f"stale PID file (pid {pid} is not ours)" if pid is not None else "not running"
            return StopResult(self.name, self.address, None, stopped=False, detail=detail)
        killed = process.stop(proc, self.config.stack.stop_timeout_s)
        return StopResult(self.name, self.address, proc.pid, stopped=True, killed=killed)

    def status(self) -> ServiceStatus:
        proc = self.running()
        answering, detail = self.probe() if proc is not None else (False, "not running")
        pid = proc.pid if proc is not None else None
        return ServiceStatus(self.name, self.address, pid, proc is not None, answering, detail, self.log)

    # ------------------------------------------------------------------ helpers

    def _await_ready(self, proc: psutil.Process, launched: bool) -> None:
        """Poll ``ready()``; a process that exits is reported at once with its log tail. On timeout a
        server this call launched is stopped again; one found running is left alone."""
        timeout = self.config.stack.start_timeout_s
        deadline = time.monotonic() + timeout
        while not self.ready():
            exited, code = process.poll(proc)
            if exited:
                self.pid_file.remove()
                how = f" with code {code}" if code is not None else ""
                raise StackError(
                    self.start_step,
                    f"{self.name} exited{how} during startup; full log: {self.log}",
                    process.log_tail(self.log),
                )
            if time.monotonic() > deadline:
                action = "so it was stopped" if launched else f"(pid {proc.pid}, left running)"
                if launched:
                    process.stop(proc, self.config.stack.stop_timeout_s)
                    self.pid_file.remove()
                raise StackError(
                    self.start_step,
                    f"{self.name} was not ready on {self.address} within {timeout:g} s, {action}; "
                    f"raise stack.start_timeout_s on a slow machine. Full log: {self.log}",
                    process.log_tail(self.log),
                )
            time.sleep(0.1)
