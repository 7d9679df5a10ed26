"""The local stack: Kafka broker + KRaft controller and redis-server on 127.0.0.1, state in ``state_dir``.

``Stack(config).up() / down() / status()`` return one explicit result per service (``only`` picks one).
``up`` is idempotent; ``down`` signals only the processes named by its PID files that it recognises as
its own. A lock file keeps two ``up``/``down`` runs on the same state directory from interleaving.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from compass.errors import ConfigError
from deploy.local.kafka import KafkaService
from deploy.local.redis import RedisService
from deploy.local.service import (
    LocalService,
    Progress,
    ServiceStatus,
    StartResult,
    StopResult,
    no_progress,
)
from infra.settings import ServiceConfig

__all__ = ["SERVICE_NAMES", "ServiceName", "ServiceStatus", "Stack", "StartResult", "StopResult"]

ServiceName = Literal["kafka", "redis"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("redis", "kafka")  # start order; stop order is reversed


class Stack:
    """The local servers described by ``config``; ``progress`` shows long steps (e.g. a rich spinner)."""

    def __init__(self, config: ServiceConfig, progress: Progress = no_progress):
        self.config = config
        self.progress = progress
        self.services: dict[str, LocalService] = {
            "redis": RedisService(config),
            "kafka": KafkaService(config),
        }

    @classmethod
    def on_free_ports(cls, base: ServiceConfig, state_dir: Path, progress: Progress = no_progress) -> Stack:
        """A private stack for a benchmark or a replay: ``base`` with Kafka, its controller and Redis on free
        127.0.0.1 ports and its state in ``state_dir`` (``stack.config`` is the config that points at it)."""
        from deploy.local.process import free_ports

        kafka_port, controller_port, redis_port = free_ports(3)
        return cls(base.model_copy(update={
            "state_dir": Path(state_dir),
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": (f"127.0.0.1:{kafka_port}",)}),
            "redis": base.redis.model_copy(update={"host": "127.0.0.1", "port": redis_port}),
            "stack": base.stack.model_copy(update={"kafka_controller_port": controller_port}),
        }), progress)

    @property
    def state_dir(self) -> Path:
        return self.services["redis"].state_dir

    def up(self, only: ServiceName | None = None) -> dict[str, StartResult]:
        """Start what is not running yet and wait until it is ready. A port conflict starts nothing."""
        selected = self._select(only)
        self._check_distinct_ports(selected)
        with self._lock():
            for svc in selected:
                if svc.running() is None:
                    svc.check_ports()
            return {svc.name: svc.start(self.progress) for svc in selected}

    def down(self, only: ServiceName | None = None) -> dict[str, StopResult]:
        """Stop the servers this state directory started (SIGTERM, then SIGKILL after a timeout)."""
        with self._lock():
            return {svc.name: svc.stop() for svc in reversed(self._select(only))}

    def status(self, only: ServiceName | None = None) -> dict[str, ServiceStatus]:
        """Each service's PID, address and whether it answers a real request."""
        return {svc.name: svc.status() for svc in self._select(only)}

    # ------------------------------------------------------------------ helpers

    def _select(self, only: str | None) -> list[LocalService]:
        if only is None:
            return [self.services[n] for n in SERVICE_NAMES]
        if only not in self.services:
            raise ValueError(f"only must be one of {', '.join(SERVICE_NAMES)} or None; got {only!r}")
        return [self.services[only]]

    @staticmethod
    def _check_distinct_ports(selected: list[LocalService]) -> None:
        seen: dict[int, str] = {}
        problems = []
        for svc in selected:
            for port, key in svc.ports():
                if port in seen:
                    problems.append(f"{key} and {seen[port]} both use port {port}; give each its own port")
                seen[port] = key
        if problems:
            raise ConfigError("local stack", problems)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.state_dir / "run" / "stack.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
            yield
