"""Debian's redis-server on 127.0.0.1 with AOF persistence (appendfsync everysec) in the state directory.

Files under ``<state_dir>``: ``redis/redis.conf`` (rendered each start, mode 0600 since it may hold the
password from COMPASS_REDIS_PASSWORD), ``redis/data`` (the AOF), ``logs/redis.log``, ``logs/apt.log``,
``run/redis.pid``. The config file path is put into the process title, which is how the stack
recognises its own server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
from redis.backoff import NoBackoff
from redis.retry import Retry

from compass.errors import ConfigError
from deploy.local import process
from deploy.local.service import LocalService, Progress
from infra.errors import ServiceUnavailable, StackError
from infra.settings import ServiceConfig

_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def install_redis_server(log: Path) -> str:
    """The path of ``redis-server``, installing Debian's package with apt-get when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(
            "apt install",
            "redis-server is not installed and installing it needs root: run "
            "`sudo apt-get install -y redis-server` (or scripts/setup.sh as root), then retry",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
        code = process.run_logged(argv, log, env=env)
        if code != 0:
            raise StackError(
                "apt install",
                f"`{' '.join(argv)}` exited with code {code}; full log: {log}",
                process.log_tail(log),
            )
    found = shutil.which("redis-server")
    if not found:
        raise StackError("apt install", f"redis-server is still not on PATH after apt-get install; see {log}")
    return found


class RedisService(LocalService):
    name = "redis"
    start_step = "redis start"

    def __init__(self, config: ServiceConfig):
        super().__init__(config)
        self.conf = self.home / "redis.conf"
        self.data_dir = self.home / "data"
        self._binary: str | None = None

    @property
    def address(self) -> str:
        return f"{process.LOOPBACK}:{self._port()}"

    def ports(self) -> list[tuple[int, str]]:
        return [(self._port(), "redis.port (or COMPASS_REDIS_URL)")]

    def prepare(self, progress: Progress) -> list[str]:
        steps = []
        if shutil.which("redis-server") is None:
            with progress("installing redis-server with apt-get"):
                self._binary = install_redis_server(self.logs / "apt.log")
            steps.append("installed redis-server with apt-get")
        self.write_conf()
        return steps

    def write_conf(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# written by deploy/local/redis.py on every `compass stack up`; edits are overwritten",
            f"port {self._port()}",
            f"bind {process.LOOPBACK}",
            "protected-mode yes",
            f'dir "{self.data_dir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',  # the AOF is the persistence; no RDB snapshots besides its base file
            "daemonize no",
            'logfile ""',  # stdout, which the stack sends to logs/redis.log
            'proc-title-template "{title} {listen-addr} {config-file}"',
        ]
        password = self.config.redis.password
        if password is not None:
            quoted = password.get_secret_value().replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'requirepass "{quoted}"')
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [self._binary or install_redis_server(self.logs / "apt.log"), str(self.conf)]

    def is_ours(self, proc: psutil.Process) -> bool:
        return str(self.conf) in " ".join(proc.cmdline())

    def ready(self) -> bool:
        return self.probe()[0]

    def probe(self) -> tuple[bool, str]:
        from infra.clients import redis_client  # imports redis-py: only when probing

        try:
            client = redis_client(
                self.config.redis, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
            )
        except ServiceUnavailable as e:  # also while it is still loading the AOF
            return False, str(e)
        try:
            info = client.info("server")
            return True, f"redis {info['redis_version']}, AOF in {self.data_dir}"
        finally:
            client.close()

    def _port(self) -> int:
        if self.config.redis.host not in _LOOPBACK_NAMES:
            raise ConfigError(
                "local stack",
                [
                    f"redis.host: got {self.config.redis.host!r}; the local stack runs redis-server on "
                    "127.0.0.1, so set redis.host to 127.0.0.1 (or COMPASS_REDIS_URL=redis://127.0.0.1:PORT)"
                ],
            )
        return self.config.redis.port
