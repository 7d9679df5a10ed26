"""A single-node Apache Kafka 4.x broker + KRaft controller on 127.0.0.1, run from Maven-resolved jars.

Files under ``<state_dir>``: ``kafka/server.properties`` (rendered each start), ``kafka/data`` (log.dirs,
formatted once), ``logs/kafka.log``, ``logs/kafka-format.log``, ``logs/maven.log``, ``run/kafka.pid``.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path
from string import Template

import psutil

from compass.errors import ConfigError
from deploy.local import maven, process
from deploy.local.service import LocalService, Progress
from infra.errors import ServiceUnavailable, StackError
from infra.settings import ServiceConfig

HERE = Path(__file__).resolve().parent
POM = HERE.parent / "kafka" / "pom.xml"
PROPERTIES_TEMPLATE = HERE / "server.properties.in"
LOG4J_CONFIG = HERE / "log4j2.properties"
READY_LINE = "Kafka Server started"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def broker_port(config: ServiceConfig) -> int:
    """The port of the local broker: ``kafka.bootstrap_servers`` must be exactly one loopback host:port."""
    servers = config.kafka.bootstrap_servers
    host, _, port = servers[0].rpartition(":") if len(servers) == 1 else ("", "", "")
    if host not in _LOOPBACK_NAMES:
        raise ConfigError(
            "local stack",
            [
                f"kafka.bootstrap_servers: got {','.join(servers)!r}; the local stack runs one broker on "
                "127.0.0.1, so give exactly one 127.0.0.1:PORT (in the config or COMPASS_KAFKA_BOOTSTRAP)"
            ],
        )
    return int(port)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as StorageTool random-uuid). Like
    Kafka's Uuid.randomUuid it never starts with '-': StorageTool's argument parser would read `-t -xyz` as a
    missing value and the format fails ("expected one argument"), once in 64 stack starts."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class KafkaService(LocalService):
    name = "kafka"
    start_step = "broker start"

    def __init__(self, config: ServiceConfig):
        super().__init__(config)
        self.properties = self.home / "server.properties"
        self.data_dir = self.home / "data"
        self._classpath: str | None = None

    @property
    def address(self) -> str:
        return f"{process.LOOPBACK}:{broker_port(self.config)}"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (broker_port(self.config), "kafka.bootstrap_servers (or COMPASS_KAFKA_BOOTSTRAP)"),
            (self.config.stack.kafka_controller_port, "stack.kafka_controller_port"),
        ]

    def cluster_id(self) -> str | None:
        """The cluster id written by the storage format, or None before the first format."""
        meta = self.data_dir / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    # ------------------------------------------------------------------ preparation

    def prepare(self, progress: Progress) -> list[str]:
        self._java()  # fail before the slow steps
        steps = []
        if maven.cached_classpath(POM, self._repo) is None:
            with progress(f"resolving the Kafka broker jars with Maven into {self._repo}"):
                self._classpath = maven.resolve_classpath(POM, self._repo, self.logs / "maven.log")
            steps.append("resolved the broker jars with Maven")
        self.write_properties()
        cid = self.format_storage(progress)
        if cid:
            steps.append(f"formatted KRaft storage (cluster id {cid})")
        return steps

    def write_properties(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        text = Template(PROPERTIES_TEMPLATE.read_text()).substitute(
            broker_port=broker_port(self.config),
            controller_port=self.config.stack.kafka_controller_port,
            data_dir=self.data_dir,
        )
        self.properties.write_text(text)

    def format_storage(self, progress: Progress) -> str | None:
        """Format ``kafka/data`` once; returns the new cluster id, or None when it was already formatted."""
        if self.cluster_id() is not None:
            return None
        cid = new_cluster_id()
        log = self.logs / "kafka-format.log"
        argv = self._java_cmd(
            "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
            "-t", cid, "-c", str(self.properties),
            jvm=("-Xmx256m",),  # a short CLI: the JVM default (1/4 of RAM) can fail to reserve on a loaded host
        )  # fmt: skip
        with progress("formatting the KRaft storage"):
            code = process.run_logged(argv, log)
        if code != 0 or self.cluster_id() != cid:
            raise StackError(
                "storage format",
                f"kafka.tools.StorageTool exited with code {code} formatting {self.data_dir}; "
                f"full log: {log}",
                process.log_tail(log),
            )
        return cid

    def classpath(self) -> str:
        """The broker classpath (Maven is run only when the remembered one is missing or stale)."""
        if self._classpath is None:
            self._classpath = maven.cached_classpath(POM, self._repo) or maven.resolve_classpath(
                POM, self._repo, self.logs / "maven.log"
            )
        return self._classpath

    # ------------------------------------------------------------------ the server process

    def argv(self) -> list[str]:
        heap = self.config.stack.kafka_heap_mb
        jvm = (f"-Xms{heap}m", f"-Xmx{heap}m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
        return self._java_cmd("kafka.Kafka", str(self.properties), jvm=jvm)

    def is_ours(self, proc: psutil.Process) -> bool:
        cmdline = proc.cmdline()
        return "kafka.Kafka" in cmdline and str(self.properties) in cmdline

    def ready(self) -> bool:
        try:
            logged = READY_LINE in self.log.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return logged and process.tcp_answers(broker_port(self.config))

    def probe(self) -> tuple[bool, str]:
        from infra.clients import kafka_admin  # imports kafka-python: only when probing

        try:
            admin = kafka_admin(self.config.kafka, bootstrap_timeout_ms=3000)
        except ServiceUnavailable as e:
            return False, str(e)
        try:
            return True, f"cluster id {admin.describe_cluster()['cluster_id']}"
        except Exception as e:  # any failed request means "not answering"; status shows why
            return False, f"{type(e).__name__}: {e}"
        finally:
            admin.close()

    # ------------------------------------------------------------------ helpers

    @property
    def _repo(self) -> Path:
        return self.config.stack.maven_repo.expanduser().resolve()

    def _java_cmd(self, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        """``java [jvm flags] <log4j config> -cp <broker jars> main args...``"""
        log4j = f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"
        return [self._java(), *jvm, log4j, "-cp", self.classpath(), main, *args]

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "broker start",
                "`java` is not on PATH; Kafka 4 needs Java 17+ (apt-get install -y openjdk-17-jre-headless)",
            )
        return java
