"""Issue 17: Kafka stopped in the middle of the load behind `compass gateway` (a real `compass serve` upstream,
the official ``openai`` client, a private broker that the test stops): every request still succeeds, and the
events' counters tell the truth, buffered + produced + dropped == answered, before and after the gateway closes.

One outage (``outage``, run once for the module) and three tests reading what it observed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from kafka.errors import KafkaError
from test_gateway import client_for, gateway, languages, metric, read_events, upstream, wait_for  # noqa: F401
from test_route import SENTENCES
from test_serving import lm as lm  # noqa: F401 - the module-scoped tiny model fixture

from deploy.local.stack import Stack
from infra.errors import StackError

BUFFER = 20
PHASE1, PHASE2 = 10, 3 * BUFFER  # phase 2 sends more than the gateway can hold (2 x BUFFER, events.py)
ANSWERED = PHASE1 + PHASE2
N = 2


@dataclass
class Outage:
    want: str  # the upstream's own answer
    phase1: list[str]
    phase1_events: list[dict]
    phase1_produced: int
    answers: list[str]  # phase 2, Kafka stopped
    failures: list[str]
    phase2_s: float
    before: dict[str, int]  # the counters once phase 2 settled, the gateway still open
    connected: float  # compass_gateway_kafka_connected a few seconds into the outage
    close_error: BaseException | None
    after: dict[str, int]  # the counters once the gateway closed


@pytest.fixture(scope="module")
def private_kafka(services, tmp_path_factory):
    """A broker of this module's own (the session's `services` stack serves the other tests: never stopped here)."""
    for attempt in range(3):
        stack = Stack.on_free_ports(services.config, tmp_path_factory.mktemp("outage"))
        try:
            stack.up(only="kafka")
            break
        except StackError:  # a free port taken in between: retry on new ones, like conftest's session stack
            stack.down()
            if attempt == 2:
                raise
    try:
        yield stack
    finally:
        stack.down()


def counters(gw) -> dict[str, int]:
    name = "compass_gateway_events_dropped_total"
    return {"buffered": int(metric(gw, "compass_gateway_events_buffered")),
            "produced": int(metric(gw, "compass_gateway_events_produced_total")),
            **{r: int(metric(gw, name, reason=r)) for r in ("buffer_full", "send_failed", "shutdown")}}


def balanced(gw) -> bool:
    c = counters(gw)
    return c["buffered"] + c["produced"] + c["buffer_full"] + c["send_failed"] == ANSWERED


@pytest.fixture(scope="module")
def outage(services, private_kafka, upstream, languages) -> Outage:  # noqa: F811
    from infra.clients import ensure_topics

    up_port, direct = upstream
    topic = "test.gateway-outage"
    ensure_topics(private_kafka.config.kafka, [topic], partitions=1)
    # Kafka is the private broker's; Redis (the routing table, empty here) stays the session's
    cfg = services.config.model_copy(update={"kafka": private_kafka.config.kafka.model_copy(
        update={"queries_topic": topic})})
    want = direct.completions.create(model="auto", prompt=SENTENCES["it"], temperature=0, max_tokens=N).choices[0].text

    def ask(client) -> str:
        return client.completions.create(model="auto", prompt=SENTENCES["it"], temperature=0,
                                         max_tokens=N).choices[0].text

    t0, close_error = time.monotonic(), None
    try:
        with gateway(cfg, languages, up_port, buffer_size=BUFFER, shutdown_flush_s=1.0) as (gw, port):
            client = client_for(port).with_options(timeout=10)  # a request stuck on Kafka fails, not hangs
            # phase 1, Kafka up: every event reaches the topic
            phase1 = [ask(client) for _ in range(PHASE1)]
            wait_for(lambda: counters(gw)["produced"] == PHASE1, "phase 1's events produced")
            phase1_events = read_events(cfg, topic, PHASE1)
            phase1_produced = counters(gw)["produced"]

            # phase 2: the broker stopped (SIGTERM; down() returns once the process is gone), the load goes on
            assert private_kafka.down(only="kafka")["kafka"].stopped
            t1 = time.monotonic()
            answers, failures = [], []
            for _ in range(PHASE2):
                try:
                    answers.append(ask(client))
                except Exception as e:  # noqa: BLE001 - any failure is the finding: kept and asserted on
                    failures.append(repr(e))
            phase2_s = time.monotonic() - t1
            # the producer thread settles (an event moves queue -> producer outside the sink's lock)
            wait_for(lambda: balanced(gw), "buffered + produced + dropped == answered")
            before = counters(gw)
            # a truthful gauge drops to 0 once the producer loses the broker: give it 3 s
            end = time.monotonic() + 3
            while metric(gw, "compass_gateway_kafka_connected") != 0 and time.monotonic() < end:
                time.sleep(0.05)
            connected = metric(gw, "compass_gateway_kafka_connected")
    except KafkaError as e:  # raised by Gateway.close (the bug test_closing_... documents): kept, not fatal here
        close_error = e
        # the producer's sender thread outlives the failed close, retrying the dead port: stopped (private API,
        # cleanup only) after the counters are read
        after = counters(gw)
        sender = gw.events._producer._sender
        sender.force_close()
        sender.join(5)
    else:
        after = counters(gw)
    out = Outage(want, phase1, phase1_events, phase1_produced, answers, failures, phase2_s, before, connected,
                 close_error, after)
    print(f"\nphase 1: {PHASE1} requests; phase 2: {PHASE2} requests in {phase2_s:.1f} s, {len(failures)} failed;"
          f"\nbefore close: {before}; kafka_connected {connected}\nafter close: {after}; close raised "
          f"{close_error!r}; {time.monotonic() - t0:.1f} s in all")
    return out


def test_kafka_stopped_mid_load_requests_succeed_and_counters_tell_the_truth(outage):
    assert outage.phase1 == [outage.want] * PHASE1
    # phase 1: what the counter says was produced is what the topic holds
    assert len(outage.phase1_events) == outage.phase1_produced == PHASE1
    assert {e["text"] for e in outage.phase1_events} == {SENTENCES["it"]}
    assert len({e["id"] for e in outage.phase1_events}) == PHASE1
    # phase 2: Kafka gone, not one request failed or waited for it
    assert outage.failures == [] and outage.answers == [outage.want] * PHASE2
    assert outage.phase2_s < 20
    # nothing produced after the stop; the gateway holds its bound (BUFFER in the queue + BUFFER unacknowledged
    # in the producer, events.py) and drops the rest as buffer_full; no send reached the 120 s delivery timeout
    b = outage.before
    assert b["buffered"] + b["produced"] + b["buffer_full"] + b["send_failed"] == ANSWERED
    assert 0 < b["buffered"] <= 2 * BUFFER and b["buffer_full"] > 0
    assert b == {"buffered": 2 * BUFFER, "produced": PHASE1, "buffer_full": PHASE2 - 2 * BUFFER, "send_failed": 0,
                 "shutdown": 0}


def test_closing_counts_what_was_still_buffered_as_shutdown(outage):
    a = outage.after
    assert outage.close_error is None
    # every answered request accounted for exactly once: produced, or dropped for one reason
    assert a["produced"] + a["buffer_full"] + a["send_failed"] + a["shutdown"] == ANSWERED
    assert a == {"buffered": 0, "produced": PHASE1, "buffer_full": PHASE2 - 2 * BUFFER, "send_failed": 0,
                 "shutdown": outage.before["buffered"]}


def test_the_connected_gauge_drops_when_the_broker_stops(outage):
    assert outage.connected == 0
