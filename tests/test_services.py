"""Real Kafka and Redis through infra.clients: exact delivery, round trips, clear fast failures."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from deploy.local.process import free_ports
from infra.clients import kafka_admin, kafka_consumer, kafka_producer, redis_client
from infra.errors import ServiceUnavailable
from infra.settings import KafkaConfig, RedisConfig

N_MESSAGES = 60
PARTITIONS = 3
# kafka-python waits 45 s for a lost member by default; a short session makes group joins quick
GROUP_OPTS = {"auto_offset_reset": "earliest", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _drain(consumer, until, deadline_s: float = 60.0) -> Counter:
    """Poll until ``until(received)`` or the deadline, then once more to catch anything extra."""
    got: Counter = Counter()
    deadline = time.monotonic() + deadline_s
    while not until(got) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.update((r.key, r.value) for r in records)
    for records in consumer.poll(timeout_ms=500).values():
        got.update((r.key, r.value) for r in records)
    return got


@pytest.mark.services
def test_consumer_group_receives_exactly_what_was_produced(services, topic_factory):
    cfg = services.config.kafka
    topic = topic_factory(partitions=PARTITIONS)
    sent = Counter((f"key-{i % 7}".encode(), f"value-{i}".encode()) for i in range(N_MESSAGES))
    producer = kafka_producer(cfg)
    for key, value in sent.elements():
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = kafka_consumer(cfg, group, [topic], **GROUP_OPTS)
    got = _drain(consumer, until=lambda got: sum(got.values()) >= N_MESSAGES)
    consumer.commit()
    consumer.close()
    assert got == sent

    # a new member of the same group starts at the committed offsets: nothing is left for it
    again = kafka_consumer(cfg, group, [topic], **GROUP_OPTS)
    try:
        extra = _drain(again, until=lambda _: len(again.assignment()) == PARTITIONS)
        assignment = again.assignment()
        positions = {tp.partition: again.position(tp) for tp in assignment}
        ends = {tp.partition: end for tp, end in again.end_offsets(list(assignment)).items()}
    finally:
        again.close()
    assert extra == Counter()
    assert len(assignment) == PARTITIONS
    assert positions == ends
    assert sum(ends.values()) == N_MESSAGES


@pytest.mark.services
def test_redis_round_trip(redis):
    redis.set("greeting", "habari")
    assert redis.get("greeting") == b"habari"

    redis.hset("lang:sw", mapping={"theta": "0.12", "window": 2000})
    assert redis.hgetall("lang:sw") == {b"theta": b"0.12", b"window": b"2000"}

    bump = redis.register_script(
        """
        local total = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('HSET', KEYS[2], 'last', total)
        return {total, redis.call('HGET', KEYS[2], 'last'), #ARGV}
        """
    )
    assert bump(keys=["count", "lang:sw"], args=[5]) == [5, b"5", 1]
    assert bump(keys=["count", "lang:sw"], args=[2]) == [7, b"7", 1]
    assert redis.hget("lang:sw", "last") == b"7"


@pytest.fixture
def closed_port() -> int:
    return free_ports(1)[0]  # free a moment ago: nothing listens there


@pytest.mark.timeout(20)  # the point is a prompt failure, not kafka-python's 30 s default
@pytest.mark.parametrize(
    "connect",
    [
        pytest.param(lambda cfg: kafka_producer(cfg), id="producer-default-timeout"),
        pytest.param(lambda cfg: kafka_consumer(cfg, "g", ["t"], bootstrap_timeout_ms=1000), id="consumer"),
        pytest.param(lambda cfg: kafka_admin(cfg, bootstrap_timeout_ms=1000), id="admin"),
    ],
)
def test_unreachable_kafka_names_the_address_and_the_fix(closed_port, connect):
    with pytest.raises(ServiceUnavailable) as err:
        connect(KafkaConfig(bootstrap_servers=(f"127.0.0.1:{closed_port}",)))
    assert err.value.service == "Kafka"
    assert f"127.0.0.1:{closed_port}" in str(err.value)
    assert "compass stack up" in str(err.value)


@pytest.mark.timeout(20)
def test_unreachable_redis_names_the_address_and_the_fix(closed_port):
    with pytest.raises(ServiceUnavailable) as err:
        redis_client(RedisConfig(port=closed_port))
    assert err.value.service == "Redis"
    assert f"127.0.0.1:{closed_port}" in str(err.value)
    assert "compass stack up" in str(err.value)
