"""The local stack (deploy/local/): idempotent up, exact down, status, port conflicts, failures with logs.

The session stack (conftest ``services``) is only read or asked to start again; anything that stops or
breaks a server uses its own Redis-only stack in a tmp directory (Redis starts in milliseconds).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from compass.errors import ConfigError
from daemon.cli.stack import app as stack_cli
from deploy.local import maven
from deploy.local.process import PidFile, free_ports
from deploy.local.service import no_progress
from deploy.local.stack import Stack
from infra.clients import kafka_admin, redis_client
from infra.errors import StackError
from infra.settings import KafkaConfig, RedisConfig, ServiceConfig, StackConfig


@pytest.fixture
def session_stack(services) -> Stack:
    if services.stack is None:
        pytest.skip(
            "services come from COMPASS_KAFKA_BOOTSTRAP/COMPASS_REDIS_URL, not a stack of this session"
        )
    return services.stack


def redis_only_config(state_dir, port: int | None = None) -> ServiceConfig:
    return ServiceConfig(state_dir=state_dir, redis=RedisConfig(port=port or free_ports(1)[0]))


def kafka_config(state_dir) -> ServiceConfig:
    broker, controller = free_ports(2)
    return ServiceConfig(
        state_dir=state_dir,
        kafka=KafkaConfig(bootstrap_servers=(f"127.0.0.1:{broker}",)),
        stack=StackConfig(kafka_controller_port=controller),
    )


@pytest.fixture
def redis_stack(tmp_path):
    """A Redis-only stack of its own; stopped at the end whatever the test did."""
    stack = Stack(redis_only_config(tmp_path / "state"))
    yield stack
    stack.down()


def pids_of(service) -> list[int]:
    """PIDs of every live process the service recognises as its own (PID file or not)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if service.is_ours(proc):
                found.append(proc.pid)
    return found


def write_config(path, config: ServiceConfig):
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


# ---------------------------------------------------------------------------------------- session stack


def test_second_up_starts_nothing_and_says_so(session_stack, tmp_path, monkeypatch):
    before = session_stack.status()
    again = session_stack.up()
    assert {n: (r.started, r.pid, r.steps) for n, r in again.items()} == {
        "redis": (False, before["redis"].pid, ()),
        "kafka": (False, before["kafka"].pid, ()),
    }
    monkeypatch.delenv("COMPASS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("COMPASS_REDIS_URL", raising=False)
    cfg = write_config(tmp_path / "compass.yaml", session_stack.config)
    out = CliRunner().invoke(stack_cli, ["up", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    for name in ("redis", "kafka"):
        r = again[name]
        assert f"{name}: already running on {r.address} (pid {r.pid}); nothing started" in out.output
    assert {n: s.pid for n, s in session_stack.status().items()} == {n: s.pid for n, s in before.items()}


def test_status_reports_each_service_its_pid_and_address(session_stack, tmp_path, monkeypatch):
    cfg = session_stack.config
    status = session_stack.status()
    kafka = session_stack.services["kafka"]
    assert list(status) == ["redis", "kafka"]
    assert status["redis"].address == f"127.0.0.1:{cfg.redis.port}"
    assert status["kafka"].address == cfg.kafka.bootstrap_servers[0]
    for name, s in status.items():
        assert (s.running, s.answering) == (True, True)
        assert s.pid == PidFile(session_stack.state_dir / "run" / f"{name}.pid").read()
    assert status["kafka"].detail == f"cluster id {kafka.cluster_id()}"

    monkeypatch.delenv("COMPASS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("COMPASS_REDIS_URL", raising=False)
    out = CliRunner().invoke(stack_cli, ["status", "--config", str(write_config(tmp_path / "c.yaml", cfg))])
    assert out.exit_code == 0, out.output
    for s in status.values():
        assert s.address in out.output and str(s.pid) in out.output


def test_kafka_storage_is_formatted_only_once(session_stack):
    kafka = session_stack.services["kafka"]
    cluster_id = kafka.cluster_id()
    assert cluster_id is not None
    assert kafka.format_storage(no_progress) is None  # already formatted: nothing run
    assert kafka.cluster_id() == cluster_id
    admin = kafka_admin(session_stack.config.kafka)
    try:
        assert admin.describe_cluster()["cluster_id"] == cluster_id
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------- own stacks


def test_down_stops_exactly_its_own_pid(redis_stack, session_stack):
    session_before = {n: s.pid for n, s in session_stack.status().items()}
    started = redis_stack.up(only="redis")["redis"]
    assert started.started
    assert redis_stack.status(only="redis")["redis"].answering

    stopped = redis_stack.down(only="redis")["redis"]
    assert (stopped.pid, stopped.stopped, stopped.killed) == (started.pid, True, False)
    assert not psutil.pid_exists(started.pid)
    assert not redis_stack.services["redis"].pid_file.path.exists()
    assert redis_stack.down(only="redis")["redis"].detail == "not running"

    after = session_stack.status()
    assert {n: s.pid for n, s in after.items()} == session_before
    assert all(s.answering for s in after.values())


def test_down_never_signals_a_process_that_is_not_ours(redis_stack):
    # a PID file left behind whose PID now belongs to another process (PID reuse after a crash)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = redis_stack.services["redis"].pid_file
        pid_file.write(stranger.pid)
        result = redis_stack.down(only="redis")["redis"]
        assert (result.stopped, result.pid) == (False, None)
        assert result.detail == f"stale PID file (pid {stranger.pid} is not ours)"
        assert stranger.poll() is None  # still running
        assert not pid_file.path.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_redis_data_survives_a_restart(redis_stack):
    redis_stack.up(only="redis")
    client = redis_client(redis_stack.config.redis)
    client.set("persisted", "yes")
    client.close()
    redis_stack.down(only="redis")
    redis_stack.up(only="redis")
    client = redis_client(redis_stack.config.redis)
    assert client.get("persisted") == b"yes"
    client.close()


def _listening_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


@pytest.mark.parametrize("service", ["redis", "kafka"])
def test_port_in_use_names_the_address_and_the_config_key(tmp_path, service):
    cfg = kafka_config(tmp_path / "state").model_copy(update={"redis": RedisConfig(port=free_ports(1)[0])})
    stack = Stack(cfg)
    port, key = stack.services[service].ports()[0]
    with _listening_socket(port), pytest.raises(StackError) as err:
        stack.up()  # both services: the conflict is found before either starts
    assert err.value.step == "port in use"
    assert f"127.0.0.1:{port}" in str(err.value) and key in str(err.value)
    assert not (tmp_path / "state" / "run" / "redis.pid").exists()
    assert not (tmp_path / "state" / "run" / "kafka.pid").exists()


def test_failing_redis_start_shows_the_log_tail_at_once(redis_stack):
    manifest = redis_stack.services["redis"].data_dir / "appendonlydir" / "appendonly.aof.manifest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("not a manifest\n")
    with pytest.raises(StackError) as err:
        redis_stack.up(only="redis")
    assert err.value.step == "redis start"
    assert "redis exited with code 1 during startup" in str(err.value)
    assert "Invalid AOF manifest file format" in err.value.log_tail
    assert not redis_stack.services["redis"].pid_file.path.exists()


def test_failing_broker_start_shows_the_log_tail(tmp_path):
    stack = Stack(kafka_config(tmp_path / "state"))
    kafka = stack.services["kafka"]
    kafka.data_dir.mkdir(parents=True)  # data of another node: the broker refuses it and exits
    (kafka.data_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=2\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    try:
        with pytest.raises(StackError) as err:
            stack.up(only="kafka")
    finally:
        stack.down()
    assert err.value.step == "broker start"
    assert "kafka exited with code 1 during startup" in str(err.value)
    assert "Stored node id 2 doesn't match previous node id 1" in err.value.log_tail


def test_broker_not_ready_in_time_is_stopped_again(tmp_path):
    cfg = kafka_config(tmp_path / "state")
    cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"start_timeout_s": 1.0})})
    stack = Stack(cfg)  # a JVM broker needs several seconds: 1 s is never enough
    try:
        with pytest.raises(StackError) as err:
            stack.up(only="kafka")
    finally:
        stack.down()
    assert err.value.step == "broker start", str(err.value)
    assert f"kafka was not ready on {cfg.kafka.bootstrap_servers[0]} within 1 s, so it was stopped" in str(
        err.value
    )
    assert not stack.services["kafka"].pid_file.path.exists()
    assert pids_of(stack.services["kafka"]) == []


@pytest.mark.parametrize(
    "servers", [("127.0.0.1:9092", "127.0.0.1:9093"), ("kafka.example.com:9092",)], ids=["two", "remote"]
)
def test_local_broker_needs_exactly_one_loopback_address(tmp_path, servers):
    cfg = ServiceConfig(state_dir=tmp_path, kafka=KafkaConfig(bootstrap_servers=servers))
    with pytest.raises(ConfigError) as err:
        Stack(cfg).up(only="kafka")
    assert "kafka.bootstrap_servers" in str(err.value) and "exactly one 127.0.0.1:PORT" in str(err.value)


def test_maven_failure_names_the_step_and_shows_its_output(tmp_path):
    pom = tmp_path / "broken" / "pom.xml"
    pom.parent.mkdir()
    pom.write_text("<project><modelVersion>4.0.0</modelVersion>")  # unterminated: Maven cannot parse it
    with pytest.raises(StackError) as err:
        maven.resolve_classpath(pom, tmp_path / "m2", tmp_path / "maven.log")
    assert err.value.step == "maven resolution"
    assert f"while resolving {pom}" in str(err.value)
    assert f"Non-readable POM {pom}" in err.value.log_tail


def test_new_cluster_ids_never_start_with_a_dash(monkeypatch):
    """StorageTool reads `-t -abc` as a missing value; Kafka's own random ids skip a leading '-', and so do ours."""
    import uuid

    from deploy.local import kafka as kafka_mod

    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0xf8... starts with '-'
    plain = uuid.UUID(bytes=bytes(16))
    draws = iter([dash, dash, plain])
    monkeypatch.setattr(kafka_mod.uuid, "uuid4", lambda: next(draws))
    assert kafka_mod.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
