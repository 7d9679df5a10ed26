"""Shared fixtures.

Services: real Kafka and Redis. With COMPASS_KAFKA_BOOTSTRAP and COMPASS_REDIS_URL both set, tests use
those servers (point them at scratch servers: the ``redis`` fixture flushes its db); otherwise the
session starts its own stack once (deploy.local.stack, free ports, a tmp state dir) and stops it at the
end. Tests that use ``services`` are marked ``services`` automatically (``-m 'not services'`` skips them).

Parallel runs (``pytest -n 2``, pytest-xdist): every worker is a session of its own, so each starts its own
stack (own ports, own state dir) and flushes only its own Redis. On servers from the environment, worker gwN
uses Redis db ``db + N`` instead; topics are unique per test either way (``topic_factory``).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from redis import Redis

from deploy.local.stack import Stack
from infra.errors import StackError
from infra.settings import ServiceConfig, load_service_config

ENV_KAFKA, ENV_REDIS = "COMPASS_KAFKA_BOOTSTRAP", "COMPASS_REDIS_URL"


@dataclass(frozen=True)
class Services:
    config: ServiceConfig  # points at the running servers
    kafka_bootstrap: str  # "host:port[,host:port...]"
    redis_url: str  # "redis://host:port/db"
    stack: Stack | None  # the session's own stack; None when the servers came from the environment


def _services(config: ServiceConfig, stack: Stack | None) -> Services:
    r = config.redis
    return Services(config, ",".join(config.kafka.bootstrap_servers), f"redis://{r.address}/{r.db}", stack)


def xdist_worker_index() -> int:
    """N for the pytest-xdist worker gwN; 0 in a run without workers."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def worker_config(config: ServiceConfig, index: int) -> ServiceConfig:
    """``config`` for worker ``index`` on shared servers: Redis db ``db + index``, so that one worker's flushdb
    never empties another's keys (a Redis Cluster has db 0 only: it cannot be shared this way)."""
    if index == 0:
        return config
    r = config.redis
    if r.cluster or r.db + index > 15:
        raise pytest.UsageError(f"parallel worker gw{index} needs a Redis db of its own but redis.db is {r.db}"
                                f"{' on a Redis Cluster' if r.cluster else ''}; run without -n against these "
                                "servers, or leave COMPASS_REDIS_URL unset to give each worker a private stack")
    return config.model_copy(update={"redis": r.model_copy(update={"db": r.db + index})})


def start_session_stack(tmp_path_factory: pytest.TempPathFactory, tries: int = 3) -> Stack:
    """A running private stack; a port that another process (e.g. the other xdist worker's stack) took between
    ``free_ports`` and the server's bind fails the start, so it is retried on new ports."""
    for attempt in range(1, tries + 1):
        stack = Stack.on_free_ports(load_service_config(env={}), tmp_path_factory.mktemp("stack"))
        try:
            stack.up()
            return stack
        except StackError:
            stack.down()
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    given = [name for name in (ENV_KAFKA, ENV_REDIS) if os.environ.get(name)]
    if len(given) == 1:  # half a pair would silently start a private stack next to the servers meant to be used
        raise pytest.UsageError(f"{given[0]} is set but not {({ENV_KAFKA, ENV_REDIS} - set(given)).pop()}; set both "
                                "to test against running servers, or neither to start a private stack")
    if len(given) == 2:
        yield _services(worker_config(load_service_config(), xdist_worker_index()), None)
        return
    stack = start_session_stack(tmp_path_factory)
    try:
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

    from compass.languages import LanguagesConfig
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
