"""Shared fixtures.

Services: real Kafka and Redis. With COMPASS_KAFKA_BOOTSTRAP and COMPASS_REDIS_URL both set, tests use
those servers (point them at scratch servers: the ``redis`` fixture flushes its db); otherwise the
session starts its own stack once (deploy.local.stack, free ports, a tmp state dir) and stops it at the
end. Tests that use ``services`` are marked ``services`` automatically (``-m 'not services'`` skips them).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from redis import Redis

from compass.config import ServiceConfig, load_service_config
from deploy.local.process import free_ports
from deploy.local.stack import Stack

ENV_KAFKA, ENV_REDIS = "COMPASS_KAFKA_BOOTSTRAP", "COMPASS_REDIS_URL"


@dataclass(frozen=True)
class Services:
    config: ServiceConfig  # points at the running servers
    kafka_bootstrap: str  # "host:port[,host:port...]"
    redis_url: str  # "redis://host:port/db"
    stack: Stack | None  # the session's own stack; None when the servers came from the environment


def session_stack_config(state_dir) -> ServiceConfig:
    """The shipped configuration moved to ``state_dir`` and to free ports."""
    base = load_service_config(env={})
    kafka_port, controller_port, redis_port = free_ports(3)
    return base.model_copy(
        update={
            "state_dir": state_dir,
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": (f"127.0.0.1:{kafka_port}",)}),
            "redis": base.redis.model_copy(update={"port": redis_port}),
            "stack": base.stack.model_copy(update={"kafka_controller_port": controller_port}),
        }
    )


def _services(config: ServiceConfig, stack: Stack | None) -> Services:
    r = config.redis
    return Services(config, ",".join(config.kafka.bootstrap_servers), f"redis://{r.address}/{r.db}", stack)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    given = [name for name in (ENV_KAFKA, ENV_REDIS) if os.environ.get(name)]
    if len(given) == 1:  # half a pair would silently start a private stack next to the servers meant to be used
        raise pytest.UsageError(f"{given[0]} is set but not {({ENV_KAFKA, ENV_REDIS} - set(given)).pop()}; set both "
                                "to test against running servers, or neither to start a private stack")
    if len(given) == 2:
        yield _services(load_service_config(), None)
        return
    stack = Stack(session_stack_config(tmp_path_factory.mktemp("stack")))
    try:
        stack.up()
        yield _services(stack.config, stack)
    finally:
        stack.down()


@pytest.fixture
def redis(services: Services) -> Iterator[Redis]:
    """A bytes-returning client on the db of ``services.config.redis``, flushed before and after the test."""
    from infra.clients import redis_client

    client = redis_client(services.config.redis)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def topic_factory(services: Services, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make(partitions=1) -> name``: a new, uniquely named topic, deleted after the test."""
    from infra.clients import ensure_topics, kafka_admin

    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:120]

    def make(partitions: int = 1) -> str:
        name = f"test.{stem}.{uuid.uuid4().hex[:8]}"
        ensure_topics(services.config.kafka, [name], partitions=partitions)
        created.append(name)
        return name

    yield make
    if created:
        admin = kafka_admin(services.config.kafka)
        try:
            admin.delete_topics(created, raise_errors=False)
        finally:
            admin.close()


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas with deprecated importlib.resources calls, 100+ times
    # when first imported; conftest imports it lazily so that this filter is already in place
    for message in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)



@pytest.fixture
def make_daemon(services: Services, topic_factory: Callable[..., str], redis: Redis):
    """make(languages_yaml, name, **section_updates): a Daemon on fresh job/event topics with a 1 s check interval,
    stopped at teardown, checking the languages of ``languages_yaml`` (a ``LanguagesConfig``, held as given).
    ``section_updates`` replace whole ServiceConfig sections (e.g. ``adapters=...``)."""
    import yaml

    from compass.config import LanguagesConfig
    from daemon.scheduler.service import Daemon

    made = []

    def make(languages_yaml: str, name: str, **section_updates):
        base = services.config
        cfg = base.model_copy(update={
            "kafka": base.kafka.model_copy(update={"jobs_topic": topic_factory(), "events_topic": topic_factory()}),
            "daemon": base.daemon.model_copy(update={"check_interval_s": 1.0, "lease_ttl_ms": 5000,
                                                     "events_group_id": f"test-{name}-{uuid.uuid4().hex[:8]}"}),
            **section_updates,
        })
        languages = LanguagesConfig.model_validate(yaml.safe_load(languages_yaml))
        made.append(Daemon(cfg, languages, owner=f"{name}-test"))
        return made[-1]

    yield make
    for d in made:
        d.stop()
        d.client.close()
