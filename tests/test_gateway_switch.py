"""Issue 17 end to end under load: a promotion in the registry reaches a running `compass serve
--allow-lora-updates` through the load protocol (`compass sync`), the routing table in the real Redis switches, and
`compass gateway` (events to the real Kafka) moves ``model: "auto"`` Italian traffic from it-v1 to it-v2 while
client threads keep sending: no request fails, none is answered by a name already unloaded, and it-v1 is gone
from the server after the drain."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import openai
from httpserve import serve_at
from test_gateway import client_for, gateway, read_events
from test_monitor import languages  # noqa: F401 - the session-scoped languages fixture (it enabled)
from test_route import SENTENCES
from test_serving import lm as lm  # noqa: F401 - the module-scoped tiny model fixture
from test_sync import compass_serve, free_port, models, publish, running, sync_config, target, wait_for

from compass.registry import AdapterRegistry
from daemon.sync import AdapterSync
from infra.routes import RoutingTable

CLIENTS = 4
DRAIN_S = 0.5
MESSAGES = [{"role": "user", "content": SENTENCES["it"]}]


@dataclass(frozen=True)
class Answer:
    client: int
    sent: float  # time.perf_counter() when the request left
    done: float  # ... and when its answer came back
    model: str  # the answer's model: the name the server generated with
    adapter: str | None  # the server's own account of it (the ``compass`` extension field)


class Load:
    """``CLIENTS`` threads sending auto Italian chat completions through the gateway in a loop, each with its own
    openai client; every answer and every failure (any exception: an error status or a broken connection) is kept."""

    def __init__(self, port: int):
        self.port, self.stop = port, threading.Event()
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _loop(self, i: int) -> None:
        client = client_for(self.port)
        while not self.stop.is_set():
            sent = time.perf_counter()
            try:
                r = client.chat.completions.create(model="auto", messages=MESSAGES, temperature=0, max_tokens=2)
                a = Answer(i, sent, time.perf_counter(), r.model, (r.model_extra or {}).get("compass", {}).get("adapter"))
            except openai.OpenAIError as e:  # any failure (status or transport) is the test's finding
                with self.lock:
                    self.failures.append(f"client {i}: {type(e).__name__}: {e}")
                continue
            with self.lock:
                self.answers.append(a)

    def count(self, model: str) -> int:
        with self.lock:
            return sum(a.model == model for a in self.answers)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_promotion_switches_gateway_traffic_without_a_failed_request(tmp_path, services, redis, topic_factory,
                                                                     lm, languages):  # noqa: F811
    reg = AdapterRegistry(tmp_path / "reg")
    publish(reg, lm, "it", "v1", seed=1)
    prefix = services.config.redis.key_prefix
    table = RoutingTable(redis, prefix)
    with serve_at(compass_serve(tmp_path, lm, "a"), free_port()) as port:
        cfg = sync_config(services, reg, tmp_path, [target("a", "compass", port)], drain_s=DRAIN_S)
        topic = topic_factory(1)
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"queries_topic": topic})})
        s = AdapterSync(cfg, redis)
        assert s.step().switch == {"it": "it-v1"}  # the first round: it-v1 loaded, confirmed, routed
        with gateway(cfg, languages, port, routes_refresh_s=0.1) as (gw, gport):
            wait_for(lambda: gw.routes.routes.names == {"it": "it-v1"})
            with Load(gport) as load, running(s):
                wait_for(lambda: load.count("it-v1") >= 2 * CLIENTS)  # traffic on v1 before the promotion
                publish(reg, lm, "it", "v2", seed=2)
                promoted = time.perf_counter()
                switched = wait_for(lambda: table.read().names == {"it": "it-v2"})
                gone = wait_for(lambda: "it-v1" not in models(port))  # unloaded after the drain
                wait_for(lambda: load.count("it-v2") >= 2 * CLIENTS)  # and traffic keeps flowing on v2
            assert "it-v2" in models(port) and "it-v1" not in models(port)
            listed = [m.id for m in client_for(gport).models.list().data]
            assert "it-v2" in listed and "it-v1" not in listed  # also through the gateway

    assert load.failures == []
    answers = sorted(load.answers, key=lambda a: a.done)
    assert {(a.model, a.adapter) for a in answers} == {("it-v1", "it-v1"), ("it-v2", "it-v2")}
    # each client sends one request at a time: its answers go v1..v1 then v2..v2, never back
    for i in range(CLIENTS):
        names = [a.model for a in answers if a.client == i]
        assert names == sorted(names) and names, f"client {i}: {names}"
    # a request answered by it-v1 was sent before it-v1 was seen unloaded (the unload waits for requests in flight)
    assert max(a.sent for a in answers if a.model == "it-v1") < gone
    # the gateway's own account (its query events on Kafka): each answer's name came from the table version that
    # named it (1: the first sync's switch to it-v1, 2: the promotion's to it-v2)
    routes = [e["meta"]["route"] for e in read_events(cfg, topic, len(answers))]
    assert sorted((r["model"], r["routes_version"], r["target"]) for r in routes) == sorted(
        (a.model, {"it-v1": 1, "it-v2": 2}[a.model], "adapter") for a in answers)
    first_v2 = min(a.done for a in answers if a.model == "it-v2")
    assert promoted < first_v2 and gone - switched >= DRAIN_S - 0.1
    # measured on CPU: 210-380 ms (table switch 95-190 ms: sync poll 0.02 s, export, load, 1-token confirm; then
    # the gateway's 0.1 s table refresh and one request)
    print(f"\npromotion -> first answer by it-v2 through the gateway: {1000 * (first_v2 - promoted):.0f} ms "
          f"(table switch {1000 * (switched - promoted):.0f} ms; {len(answers)} requests, "
          f"{sum(a.model == 'it-v1' for a in answers)} on it-v1, {sum(a.model == 'it-v2' for a in answers)} on "
          "it-v2, 0 failed)")
