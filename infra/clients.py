"""Client factories for Kafka (kafka-python) and Redis (redis-py), configured from ``ServiceConfig``.

Every factory connects eagerly and fails fast: a server that cannot be reached raises
``ServiceUnavailable`` naming the service and the host:port tried (and the hint to run
``compass stack up``) within a few seconds, instead of a library error after a minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import kafka.errors
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from infra.errors import ServiceUnavailable
from infra.settings import KafkaConfig, RedisConfig

# How long a client waits for its first broker metadata (kafka-python's default is 30 s).
BOOTSTRAP_TIMEOUT_MS = 5000
# Errors that mean "no broker answered", as opposed to a bad request.
_UNREACHABLE = (
    kafka.errors.KafkaTimeoutError,
    kafka.errors.KafkaConnectionError,
    kafka.errors.NodeNotReadyError,
)
# redis-py retries a failed command 10 times with up to 10 s of backoff by default; a blip is still
# retried here, but a server that is down is reported in well under a second.
_REDIS_RETRY = Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 3)


_K = TypeVar("_K", KafkaProducer, KafkaConsumer, KafkaAdminClient)

# What a Redis call can raise: RedisCluster's own errors (slot not covered, cross-slot) are not RedisErrors.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


def _kafka_address(cfg: KafkaConfig) -> str:
    return ",".join(cfg.bootstrap_servers)


def _kafka_kwargs(cfg: KafkaConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    return {**cfg.client_kwargs(), "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, **overrides}


def redis_client(cfg: RedisConfig, **overrides: Any) -> redis.Redis | RedisCluster:
    """A client that has answered PING: ``redis.Redis``, or ``RedisCluster`` when ``cfg.cluster`` (host:port is
    then one seed node; the others are discovered). ``overrides`` go to the client (decode_responses...)."""
    kwargs = {**cfg.client_kwargs(), "retry": _REDIS_RETRY, **overrides}
    if cfg.cluster:
        kwargs.pop("db", None)  # a cluster has database 0 only; the config rule refuses any other
        try:  # RedisCluster asks the seed for the slot map in its constructor: it fails here when none answers
            client: redis.Redis | RedisCluster = RedisCluster(**kwargs)
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as e:
            raise ServiceUnavailable("Redis", cfg.address, f"cluster seed node: {e}") from e
    else:
        client = redis.Redis(**kwargs)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as e:
        client.close()
        raise ServiceUnavailable("Redis", cfg.address, str(e)) from e
    return client


def kafka_producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A connected ``KafkaProducer``; ``overrides`` are kafka-python producer settings."""
    return _kafka_connect(KafkaProducer, cfg, overrides)


def kafka_consumer(
    cfg: KafkaConfig, group_id: str | None, topics: Iterable[str], **overrides: Any
) -> KafkaConsumer:
    """A connected ``KafkaConsumer`` in ``group_id`` subscribed to ``topics``.

    Offsets are committed explicitly by default (``enable_auto_commit=False``): a consumer commits
    after its state write succeeded. kafka-python's own default ``auto_offset_reset='latest'`` applies.
    """
    consumer = _kafka_connect(KafkaConsumer, cfg, {"group_id": group_id, "enable_auto_commit": False, **overrides})
    topics = list(topics)
    if topics:
        consumer.subscribe(topics)
    return consumer


def kafka_admin(cfg: KafkaConfig, **overrides: Any) -> KafkaAdminClient:
    """A connected ``KafkaAdminClient``."""
    return _kafka_connect(KafkaAdminClient, cfg, overrides)


def _kafka_connect(client_class: type[_K], cfg: KafkaConfig, overrides: dict[str, Any]) -> _K:
    """``client_class`` built on ``cfg`` + ``overrides``; an unreachable cluster raises ServiceUnavailable."""
    try:
        return client_class(**_kafka_kwargs(cfg, overrides))
    except _UNREACHABLE as e:
        raise ServiceUnavailable("Kafka", _kafka_address(cfg), str(e)) from e


def ensure_topics(
    cfg: KafkaConfig, names: Iterable[str], partitions: int = 1, replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet and wait until every one has a leader per partition.

    Idempotent: existing topics are left as they are (their partition count is not changed).
    Returns the names that were created by this call.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return []
    spec = {n: {"num_partitions": partitions, "replication_factor": replication_factor} for n in names}
    admin = kafka_admin(cfg)
    try:
        response = admin.create_topics(spec, raise_errors=False)
        created, problems = [], []
        for topic in response["topics"]:
            err = kafka.errors.for_code(topic["error_code"])
            if err is kafka.errors.NoError:
                created.append(topic["name"])
            elif err is not kafka.errors.TopicAlreadyExistsError:
                problems.append(f"{topic['name']}: {err.__name__} {topic.get('error_message') or ''}".strip())
        if problems:
            raise kafka.errors.KafkaError("could not create topics: " + "; ".join(problems))
        admin.wait_for_topics(names, timeout_ms=cfg.request_timeout_ms)
    finally:
        admin.close()
    return created
