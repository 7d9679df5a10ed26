"""`compass gateway` (daemon/gateway/) in front of a real `compass serve` (tiny model, uvicorn), driven by the
official ``openai`` client, on the real Kafka and Redis: the routing table decides what ``auto`` becomes, answers
and streams equal the upstream's own, errors pass through, events reach the topic and the monitor's windows, and a
Kafka (and Redis) outage never fails a request while the counters tell what was buffered and dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from httpserve import serve
from test_monitor import (
    corpus_events,  # noqa: F401 - fixtures used by the ones below
    embedder,  # noqa: F401
    embedder_cfg,  # noqa: F401
    fitted,  # noqa: F401
    identifier,  # noqa: F401
    languages,  # noqa: F401
    make_config,
    publish,
    window_counts,
)
from test_route import SENTENCES
from test_serving import config_for, make_server, register
from test_serving import lm as lm  # noqa: F401 - the module-scoped tiny model fixture

from compass.registry import AdapterRegistry
from daemon.api.serving import create_serving_app
from daemon.gateway import Gateway
from daemon.gateway.app import create_gateway_app
from infra.routes import RoutingTable

N = 6
DEADLINE_S = 60


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, lm):  # noqa: F811
    """A real `compass serve` with Italian and Spanish adapters; yields (port, direct openai client)."""
    root = tmp_path_factory.mktemp("up")
    reg = AdapterRegistry(root / "adapters")
    register(reg, lm, "it", "it-v1", seed=1)
    register(reg, lm, "es", "es-v1", seed=2)
    with serve(create_serving_app(make_server(config_for(root), lm))) as port:
        yield port, client_for(port)


def client_for(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gateway(cfg, languages, upstream_port: int, **settings: Any) -> Iterator[tuple[Gateway, int]]:  # noqa: F811
    cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={
        "upstream": f"http://127.0.0.1:{upstream_port}/v1", "routes_refresh_s": 0.05, "linger_ms": 0, **settings})})
    gw = Gateway(cfg, languages)
    gw.start()
    try:
        with serve(create_gateway_app(gw)) as port:
            yield gw, port
    finally:
        gw.close()


def read_events(cfg, topic: str, n: int) -> list[dict[str, Any]]:
    from kafka import TopicPartition

    from infra.clients import kafka_consumer

    reader = kafka_consumer(cfg.kafka, None, [], auto_offset_reset="earliest")
    reader.assign([TopicPartition(topic, 0)])
    got, deadline = [], time.monotonic() + DEADLINE_S
    while len(got) < n and time.monotonic() < deadline:
        for recs in reader.poll(timeout_ms=200).values():
            got.extend(recs)
    time.sleep(0.3)
    got.extend(r for recs in reader.poll(timeout_ms=200).values() for r in recs)  # nothing more than expected
    reader.close()
    assert all(dict(r.headers)["compass-schema"] == b"1" for r in got)
    return [json.loads(r.value) for r in got]


def wait_for(pred, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def metric(gw: Gateway, name: str, **labels: str) -> float:
    value = gw.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_routing_streaming_and_events_through_the_gateway(services, redis, topic_factory, tmp_path, upstream, lm,  # noqa: F811
                                                          languages, embedder, embedder_cfg, fitted, identifier):  # noqa: F811
    from consumers.monitor import Monitor

    up_port, direct = upstream
    topic, dlq = topic_factory(1), topic_factory(1)
    cfg = make_config(services, tmp_path, topic, dlq, embedder_cfg)
    table = RoutingTable(redis, cfg.redis.key_prefix)
    it_msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": SENTENCES["it"]}]
    with gateway(cfg, languages, up_port) as (gw, port):
        client = client_for(port)
        assert gw.base_model == lm.name  # read from the upstream's /v1/models
        # the listing is the upstream's (which has auto already: not added twice)
        assert [m.id for m in client.models.list().data] == [m.id for m in direct.models.list().data]
        assert client.models.retrieve("auto").id == "auto"

        # an empty table: auto gets the base model, whatever the upstream itself would route to
        base = client.chat.completions.create(model="auto", messages=it_msgs, temperature=0, max_tokens=N)
        assert (base.model, base.model_extra["compass"]["routed"]) == (lm.name, False)
        # the adapter sync switches Italian to its adapter: the gateway's next read routes auto there
        version = table.switch("it", "it@it-v1")
        wait_for(lambda: gw.routes.routes.version == version, "the routing table refresh")
        routed = client.chat.completions.create(model="auto", messages=it_msgs, temperature=0, max_tokens=N)
        want = direct.chat.completions.create(model="it@it-v1", messages=it_msgs, temperature=0, max_tokens=N)
        assert routed.model == "it@it-v1" and routed.model_extra["compass"]["adapter"] == "it@it-v1"
        assert routed.choices[0].message.content == want.choices[0].message.content
        assert metric(gw, "compass_gateway_routes_version") == version

        # a pinned model passes untouched (Italian text on the Spanish adapter); a completion without a model
        # is auto; German (configured, nothing in the table) gets the base model
        pinned = client.completions.create(model="es@es-v1", prompt=SENTENCES["it"], temperature=0, max_tokens=N)
        assert pinned.model == "es@es-v1"
        assert pinned.choices[0].text == direct.completions.create(model="es@es-v1", prompt=SENTENCES["it"],
                                                                   temperature=0, max_tokens=N).choices[0].text
        de = client.completions.create(model="auto", prompt=SENTENCES["de"], temperature=0, max_tokens=N)
        assert de.model == lm.name

        # streaming: chunk by chunk, the same text as the answer in one piece
        stream = client.chat.completions.create(model="auto", messages=it_msgs, temperature=0, max_tokens=N,
                                                stream=True)
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(pieces) >= 2 and "".join(pieces) == want.choices[0].message.content
        assert {c.model for c in chunks} == {"it@it-v1"}
        body = {"model": "auto", "prompt": SENTENCES["es"], "temperature": 0, "max_tokens": N, "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["model"] == lm.name  # es not in the table

        events = read_events(cfg, topic, 6)
        assert metric(gw, "compass_gateway_events_produced_total") == 6
        assert metric(gw, "compass_gateway_requests_total", endpoint="chat", status="200") == 3
        assert metric(gw, "compass_gateway_routed_total", lang="it", target="adapter") == 2
    routes = [e["meta"]["route"] for e in events]
    assert [(r["endpoint"], r["model"], r["target"], r["stream"]) for r in routes] == [
        ("chat", lm.name, "base", False), ("chat", "it@it-v1", "adapter", False),
        ("completions", "es@es-v1", "pinned", False), ("completions", lm.name, "base", False),
        ("chat", "it@it-v1", "adapter", True), ("completions", lm.name, "base", True)]
    assert [e["lang"] for e in events] == ["it", "it", "it", "de", "it", "es"]  # the text's language, pinned or not
    assert [e["text"] for e in events[:2]] == [SENTENCES["it"]] * 2  # the user's message, not the system prompt
    assert routes[1]["routes_version"] == version and routes[0]["routes_version"] == 0
    assert {r["upstream_status"] for r in routes} == {200} and len({e["id"] for e in events}) == 6

    # the monitor applies them to the languages' windows like any producer's events
    publish(cfg, redis, fitted[0], embedder)
    with Monitor(cfg, languages, embedder=embedder, identifier=identifier) as m:
        stats = m.run(burst=True)
    assert (stats.polled, stats.applied, stats.dead_lettered) == (6, 6, 0)
    assert {lang: int(c.sum()) for lang, c in window_counts(cfg, redis).items()} == {"it": 4, "de": 1, "es": 1}


def test_errors_pass_through_and_failures_have_openais_shape(services, redis, topic_factory, tmp_path, upstream,
                                                             languages, embedder_cfg):  # noqa: F811
    up_port, _ = upstream
    cfg = make_config(services, tmp_path, topic_factory(1), topic_factory(1), embedder_cfg)
    with gateway(cfg, languages, up_port) as (gw, port):
        client = client_for(port)
        with pytest.raises(openai.NotFoundError) as e:  # the upstream's own error, unchanged
            client.chat.completions.create(model="xx@v9", messages=[{"role": "user", "content": "hola"}])
        assert e.value.response.json()["error"]["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="auto", prompt=SENTENCES["it"], temperature=5)
        assert e.value.response.json()["error"]["param"] == "temperature"
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{not json",
                         headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models/it@it-v1").json()["id"] == "it@it-v1"  # passthrough
        time.sleep(0.3)
        assert metric(gw, "compass_gateway_events_produced_total") == 0  # failed requests produce no event
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["ready"] is True

    # the upstream gone: 502 in OpenAI's shape, named as the gateway's
    gone = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={"base_model": "tiny"})})
    with gateway(gone, languages, free_port()) as (gw, port):
        with pytest.raises(openai.APIStatusError) as e:
            client_for(port).chat.completions.create(model="auto", messages=[{"role": "user", "content": "ciao"}])
        err = e.value.response.json()["error"]
        assert e.value.status_code == 502 and set(err) == {"message", "type", "param", "code"}
        assert (err["type"], err["code"]) == ("server_error", "upstream_unreachable")
        assert "gateway.upstream" in err["message"]
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503
        assert metric(gw, "compass_gateway_requests_total", endpoint="chat", status="502") == 1


def test_kafka_and_redis_down_never_fail_a_request(services, tmp_path, upstream, lm, languages):  # noqa: F811
    up_port, _ = upstream
    base = services.config
    down = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"bootstrap_servers": (f"127.0.0.1:{free_port()}",)}),
        "redis": base.redis.model_copy(update={"port": free_port(), "socket_timeout_s": 0.5})})
    with gateway(down, languages, up_port, buffer_size=3, shutdown_flush_s=0.5) as (gw, port):
        client = client_for(port)
        t0 = time.monotonic()
        answers = [client.completions.create(model="auto", prompt=SENTENCES["it"], temperature=0, max_tokens=2)
                   for _ in range(5)]
        assert time.monotonic() - t0 < 10  # nothing waited for Kafka's 5 s bootstrap or Redis
        assert {a.model for a in answers} == {lm.name}  # no routing table: the base model
        assert metric(gw, "compass_gateway_events_buffered") == 3
        assert metric(gw, "compass_gateway_events_dropped_total", reason="buffer_full") == 2
        assert metric(gw, "compass_gateway_events_produced_total") == 0
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'compass_gateway_events_dropped_total{reason="buffer_full"} 2.0' in text
        assert "compass_gateway_events_buffered 3.0" in text
        assert metric(gw, "compass_gateway_kafka_connected") == 0
    assert metric(gw, "compass_gateway_events_dropped_total", reason="shutdown") == 3  # counted, and logged


def vllm_like_app():
    """A stand-in upstream with what differs from `compass serve` (vLLM's /v1/models has no ``auto``; adapters name
    their base as parent) and that shows what reached it: the model asked for and the Authorization header; its
    completions are slow, for the gateway's timeout."""
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "Qwen", "object": "model", "parent": None},
                                           {"id": "it@v1", "object": "model", "parent": "Qwen"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
            "seen": {"authorization": request.headers.get("authorization"),
                     "connection": request.headers.get("connection"), "x-trace": request.headers.get("x-trace")}}

    @app.post("/v1/completions")
    async def slow(request: Request) -> dict[str, Any]:
        await asyncio.sleep(3)
        return {}

    return app


def test_a_vllm_like_upstream_gets_the_table_name_the_key_and_a_timeout(services, redis, topic_factory, tmp_path,
                                                                        languages, embedder_cfg, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TEST_GATEWAY_UPSTREAM_KEY", "s3cret")
    cfg = make_config(services, tmp_path, topic_factory(1), topic_factory(1), embedder_cfg)
    RoutingTable(redis, cfg.redis.key_prefix).switch("it", "it@v1")
    with serve(vllm_like_app()) as up_port, gateway(cfg, languages, up_port, read_timeout_s=0.5,
                                                    upstream_token_env="TEST_GATEWAY_UPSTREAM_KEY") as (gw, port):
        assert gw.base_model == "Qwen"  # the first model without a parent
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="the-apps-key", max_retries=0,
                               default_headers={"X-Trace": "t1"})
        assert [m.id for m in client.models.list().data] == ["auto", "Qwen", "it@v1"]  # auto added
        it = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SENTENCES["it"]}])
        de = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SENTENCES["de"]}])
        assert (it.model, de.model) == ("it@v1", "Qwen")
        seen = it.model_extra["seen"]
        assert seen == {"authorization": "Bearer s3cret", "connection": "keep-alive", "x-trace": "t1"}
        with pytest.raises(openai.APIStatusError) as e:
            client.completions.create(model="auto", prompt=SENTENCES["it"])
        assert e.value.status_code == 504 and e.value.response.json()["error"]["code"] == "upstream_timeout"
        assert metric(gw, "compass_gateway_requests_total", endpoint="completions", status="504") == 1
