"""The gateway's pure parts (daemon/gateway/): the text that routes a request, the model it gets, the query event
it produces, the headers it forwards, its settings."""

from __future__ import annotations

import pytest

from compass.errors import ConfigError
from compass.route.decision import Served
from consumers.events import decode_event, encode_event
from daemon.gateway.events import _Every, query_event
from daemon.gateway.proxy import forward_headers
from daemon.gateway.routing import CHAT, COMPLETIONS, Choice, choose, request_text
from daemon.gateway.service import GatewayError, _settings, base_model_of
from infra.routes import Routes
from infra.settings import GatewayConfig, load_service_config
from infra.settings.gateway import upstream_root

USER = {"role": "user", "content": "ciao"}


@pytest.mark.parametrize("kind, body, want", [
    (CHAT, {"messages": [{"role": "system", "content": "Be brief."}, USER]}, "ciao"),
    (CHAT, {"messages": [USER, {"role": "assistant", "content": "hello"}]}, "ciao"),  # the last *user* message
    (CHAT, {"messages": [{"role": "user", "content": "uno"}, {"role": "user", "content": "due"}]}, "due"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "ci"}, {"type": "image_url"},
                                                       {"type": "text", "text": "ao"}]}]}, "ciao"),
    (CHAT, {"messages": [{"role": "user", "content": "  "}, {"role": "system", "content": "Sé breve."}]},
     "Sé breve."),  # no user text: the last message with text
    (CHAT, {"messages": [{"role": "user", "content": ""}]}, None),
    (CHAT, {"messages": "ciao"}, None),
    (CHAT, {"messages": [None, 3, USER]}, "ciao"),
    (CHAT, {}, None),
    (COMPLETIONS, {"prompt": "hola"}, "hola"),
    (COMPLETIONS, {"prompt": ["hola"]}, "hola"),
    (COMPLETIONS, {"prompt": ["a", "b"]}, None),  # several prompts: the upstream answers (or refuses) them
    (COMPLETIONS, {"prompt": [1, 2]}, None),
    (COMPLETIONS, {"prompt": " "}, None),
])
def test_request_text(kind, body, want):
    assert request_text(kind, body) == want


IT = Served("it", 0.97, True, "served")
CA = Served("ca", 0.9, False, "not_configured")
UND = Served("und", 0.2, False, "undetermined")
TABLE = Routes(3, {"it": "it@v2", "es": "es@v1"})


@pytest.mark.parametrize("requested, served, want", [
    ("auto", IT, Choice("it@v2", True, "adapter")),
    (None, IT, Choice("it@v2", True, "adapter")),  # no model: auto
    ("auto", Served("fr", 0.9, True, "served"), Choice("base", True, "base")),  # served but nothing in the table
    ("auto", CA, Choice("base", True, "base")),  # unconfigured language: the base model
    ("auto", UND, Choice("base", True, "base")),
    ("auto", None, Choice("base", True, "base")),  # no text: the upstream reports what is wrong
    ("es@v1", IT, Choice("es@v1", False, "pinned")),  # a name is the caller's pin
    ("base", IT, Choice("base", False, "pinned")),
    ("gpt-4o", None, Choice("gpt-4o", False, "pinned")),
])
def test_choose(requested, served, want):
    assert choose(requested, served, TABLE, "base") == want


def test_choose_never_routes_an_unserved_language_in_the_table():
    assert choose("auto", Served("ca", 0.9, False, "not_configured"), Routes(1, {"ca": "ca@v1"}), "b").model == "b"


def test_query_event_is_schema_v1_with_the_route_in_meta():
    ev = query_event("ciao", IT, Choice("it@v2", True, "adapter"), requested="auto", endpoint=CHAT, stream=True,
                     upstream_status=200, routes_version=3, ts_ms=1_700_000_000_000, event_id="gw-1")
    assert decode_event(encode_event(ev)) == ev
    assert (ev.id, ev.text, ev.lang, ev.ts_ms) == ("gw-1", "ciao", "it", 1_700_000_000_000)
    assert ev.meta == {"route": {"language": "it", "confidence": 0.97, "served": True, "reason": "served",
                                 "model": "it@v2", "target": "adapter", "routed": True, "requested": "auto",
                                 "routes_version": 3, "endpoint": "chat", "stream": True, "upstream_status": 200}}
    # an unserved language carries no lang: the consumers identify it and count it as unserved
    ca = query_event("bon dia", CA, Choice("b", True, "base"), requested=None, endpoint=COMPLETIONS, stream=False,
                     upstream_status=200, routes_version=0)
    assert ca.lang is None and ca.meta["route"]["language"] == "ca" and ca.id.startswith("gw-")
    assert decode_event(encode_event(ca)) == ca


def test_forward_headers_drop_hop_by_hop_and_set_the_upstream_key():
    got = forward_headers({"Host": "gw", "Connection": "keep-alive", "Content-Length": "9", "Accept-Encoding": "gzip",
                           "Authorization": "Bearer client", "Content-Type": "application/json", "X-Trace": "1"},
                          None)
    assert got == {"Authorization": "Bearer client", "Content-Type": "application/json", "X-Trace": "1",
                   "accept-encoding": "identity"}
    keyed = forward_headers({"authorization": "Bearer client"}, "s3cret")
    assert keyed == {"authorization": "Bearer s3cret", "accept-encoding": "identity"}


def test_base_model_of_a_models_listing():
    vllm = {"data": [{"id": "Qwen", "parent": None}, {"id": "it@v1", "parent": "Qwen"}]}
    compass = {"data": [{"id": "auto", "parent": None}, {"id": "tiny", "parent": None}, {"id": "it@v1",
                                                                                       "parent": "tiny"}]}
    assert (base_model_of(vllm), base_model_of(compass)) == ("Qwen", "tiny")
    assert base_model_of({"data": [{"id": "llama"}]}) == "llama"  # llama.cpp: no parent field
    assert base_model_of({"data": []}) is None and base_model_of([]) is None


@pytest.mark.parametrize("url, root", [("http://h:8000", "http://h:8000"), ("http://h:8000/v1/", "http://h:8000"),
                                       ("https://h/api/v1", "https://h/api")])
def test_upstream_root(url, root):
    assert upstream_root(url) == root


def test_settings_teach_the_fix(tmp_path):
    with pytest.raises(GatewayError, match="pass --upstream URL"):
        _settings(GatewayConfig(), None)
    with pytest.raises(GatewayError, match="--upstream 'localhost:8000' is not an http"):
        _settings(GatewayConfig(), "localhost:8000")
    assert _settings(GatewayConfig(), "http://127.0.0.1:9/v1").upstream == "http://127.0.0.1:9/v1"
    bad = tmp_path / "c.yaml"
    bad.write_text("gateway:\n  upstream: ftp://x\n  buffer_size: 0\n  upstream_token_env: 'A B'\n")
    with pytest.raises(ConfigError) as e:
        load_service_config(bad, env={})
    text = "\n".join(e.value.problems)
    for key in ("gateway.upstream", "gateway.buffer_size", "gateway.upstream_token_env"):
        assert key in text
    assert load_service_config(env={}).gateway == GatewayConfig()  # the shipped file's section is the defaults


def test_every_limits_a_log_line_and_counts_the_calls_between():
    every = _Every(3600)
    assert [every.tick() for _ in range(4)] == [1, 0, 0, 0]
    every._last -= 7200  # an hour later
    assert every.tick() == 4
