"""`compass sync` end to end on the real Redis: promoted registry versions reach running `compass serve
--allow-lora-updates` servers (uvicorn on 127.0.0.1) through vLLM's load protocol, are confirmed, the gateway's
routing table switches to ``LANG-VERSION``, the old version is unloaded after the drain, a rollback does the same in
reverse; a target that is down holds the switch, is retried and shown out of sync (Redis, /v1/status), then catches
up; a DoRA version is refused for a vllm target with the fix and loaded as is on a compass target."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from httpserve import serve_at
from test_serving import config_for, make_server
from test_serving import lm as lm  # noqa: F401 - the module-scoped tiny model fixture

from compass.adapt import TrainConfig, add_language_adapter, load_base
from compass.registry import AdapterManifest, AdapterRegistry
from daemon.api.app import create_app
from daemon.api.serving import create_serving_app
from daemon.sync import AdapterSync
from daemon.sync.client import TargetClient, TargetError
from daemon.sync.state import read_states
from daemon.worker.model import adapter_state
from infra.routes import RoutingTable
from infra.settings.serving import ServingTarget

PASS = {"outcome": "pass", "reasons": ["test"]}
LANGS_YAML = """
defaults: {min_samples: 4, window_size: 8, theta: 0.15, rearm_ratio: 0.5, cooldown_s: 100}
languages:
  it: {}
"""


def publish(reg: AdapterRegistry, lm, lang: str, version: str, seed: int, dora: bool = False) -> None:  # noqa: F811
    """Register ``version`` (a LoRA, or a DoRA, whose factors are seeded noise) and promote it."""
    model = add_language_adapter(load_base(lm), lang, TrainConfig(rank=4, alpha=8, dropout=0.0,
                                                                  target_modules=("q_proj", "v_proj"), use_dora=dora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    tensors, config = adapter_state(model, lang)
    reg.write_version(lang, tensors, config, AdapterManifest(language=lang, version=version, base_model_id="tiny",
                                                             codebook_version="c1"))
    reg.promote(lang, version, PASS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compass_serve(tmp_path, lm, name: str):  # noqa: F811
    """A `compass serve --allow-lora-updates` app over the tiny model, with an empty registry of its own: like a
    vLLM server, it serves only what the sync loads."""
    return create_serving_app(make_server(config_for(tmp_path / name), lm), lora_updates=True)


def models(port: int) -> list[str]:
    return [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]]


def sync_config(services, reg: AdapterRegistry, tmp_path, targets: list[ServingTarget], **serving):
    base = services.config
    update = {"targets": tuple(targets), "export_dir": tmp_path / "export", "drain_s": 0.0, "sync_poll_s": 0.02,
              "sync_timeout_s": 30.0, "sync_retry_base_s": 0.2, "sync_retry_max_s": 0.4, **serving}
    return base.model_copy(update={"adapters": base.adapters.model_copy(update={"registry": reg.url}),
                                   "serving": base.serving.model_copy(update=update)})


def target(name: str, kind: str, port: int) -> ServingTarget:
    return ServingTarget(name=name, kind=kind, url=f"http://127.0.0.1:{port}")


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.005) -> float:
    """Poll ``check`` until it is true; returns the time.perf_counter() it became so."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout} s: {check.__doc__ or check}"
        time.sleep(every)
    return time.perf_counter()


@contextlib.contextmanager
def running(s: AdapterSync) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=s.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        s.close()


def test_promotion_and_rollback_reach_compass_serve_then_switch_and_drain(tmp_path, services, redis, lm):  # noqa: F811
    reg = AdapterRegistry(tmp_path / "reg")
    publish(reg, lm, "it", "v1", seed=1)
    prefix = services.config.redis.key_prefix
    table = RoutingTable(redis, prefix)
    drain = 1.0
    with serve_at(compass_serve(tmp_path, lm, "a"), free_port()) as port:
        s = AdapterSync(sync_config(services, reg, tmp_path, [target("a", "compass", port)], drain_s=drain), redis)
        # first sync: one round loads, confirms and switches
        p = s.step()
        assert p.switch == {"it": "it-v1"} and table.read().names == {"it": "it-v1"}
        assert "it-v1" in models(port) and (tmp_path / "export" / "it@v1" / "adapter_config.json").is_file()
        with running(s):
            publish(reg, lm, "it", "v2", seed=2)
            promoted = time.perf_counter()
            switched = wait_for(lambda: table.read().names.get("it") == "it-v2")
            print(f"\npromotion -> routing table switch: {1000 * (switched - promoted):.0f} ms (poll "
                  f"{s.cfg.sync_poll_s} s; export, load on compass serve, 1-token confirm, switch)")
            # the new name was loaded and answering before the switch; the old one drains, then goes
            assert "it-v2" in models(port)
            assert "it-v1" in models(port), "unloaded before the drain"
            gone = wait_for(lambda: "it-v1" not in models(port))
            assert gone - switched >= drain - 0.1
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                                json={"model": "it-v2", "prompt": "ciao", "max_tokens": 2}).json()
            assert answer["model"] == "it-v2" and answer["compass"]["kind"] == "external"

            # rollback: the same in reverse; v1 is loaded again under its own name, v2 drains
            reg.rollback("it", reason="test")
            rolled = time.perf_counter()
            back = wait_for(lambda: table.read().names.get("it") == "it-v1")
            print(f"rollback -> routing table switch: {1000 * (back - rolled):.0f} ms")
            wait_for(lambda: "it-v2" not in models(port))
            assert [m for m in models(port) if m.startswith("it")] == ["it-v1"]
            wait_for(lambda: read_states(redis, prefix)["a"]["loaded"] == ["it-v1"])
        state = read_states(redis, prefix)["a"]
        assert (state["in_sync"], state["error"], state["desired"], state["waiting"]) == (True, None,
                                                                                           {"it": "it-v1"}, {})
        assert table.read().version == 3  # v1, v2, v1: one atomic switch each


def test_a_target_down_holds_the_switch_is_retried_shown_then_catches_up(tmp_path, services, redis, lm,  # noqa: F811
                                                                         make_daemon):
    reg = AdapterRegistry(tmp_path / "reg")
    publish(reg, lm, "it", "v1", seed=1)
    prefix = services.config.redis.key_prefix
    table = RoutingTable(redis, prefix)
    late = free_port()  # nothing listens there yet: the target is down
    with serve_at(compass_serve(tmp_path, lm, "a"), free_port()) as port:
        cfg = sync_config(services, reg, tmp_path, [target("a", "compass", port), target("b", "vllm", late)],
                          sync_retry_base_s=1.0, sync_retry_max_s=2.0)
        s = AdapterSync(cfg, redis)
        p = s.step()
        assert p.switch == {} and p.waiting == {"it": ("b",)} and table.read().names == {}
        assert "it-v1" in models(port)  # a is ready; the switch waits for b
        b = read_states(redis, prefix)["b"]
        assert (b["in_sync"], b["failures"], b["loaded"], b["waiting"]) == (False, 1, [], {"it": "it-v1"})
        assert f"target 'b' (vllm at http://127.0.0.1:{late}) is unreachable" in b["error"]
        assert b["next_retry"] > b["last_attempt"] and read_states(redis, prefix)["a"]["in_sync"] is True
        s.step()  # within the back-off: not tried again
        assert read_states(redis, prefix)["b"]["failures"] == 1

        # the daemon's /v1/status shows it out of sync, first
        daemon = make_daemon(LANGS_YAML, "sync", serving=cfg.serving, adapters=cfg.adapters)
        api = TestClient(create_app(daemon))
        serving = api.get("/v1/status").json()["serving"]
        assert serving["out_of_sync"] == 1 and serving["routes"] == {} and serving["error"] is None
        assert [(r["target"], r["in_sync"]) for r in serving["targets"]] == [("b", False), ("a", True)]
        assert "unreachable" in serving["targets"][0]["error"]
        assert 'id="targets"' in api.get("/").text

        with serve_at(compass_serve(tmp_path, lm, "b"), late), running(s):  # the sync stops first
            caught_up = wait_for(lambda: table.read().names == {"it": "it-v1"}, timeout=30)
            assert caught_up and "it-v1" in models(late)
            wait_for(lambda: read_states(redis, prefix)["b"]["in_sync"])
        b = read_states(redis, prefix)["b"]
        assert (b["error"], b["failures"], b["next_retry"], b["loaded"]) == (None, 0, None, ["it-v1"])
        serving = api.get("/v1/status").json()["serving"]
        assert serving["out_of_sync"] == 0 and serving["routes"] == {"it": "it-v1"}


def test_dora_is_refused_for_vllm_with_the_fix_and_loaded_as_is_on_compass(tmp_path, services, redis, lm):  # noqa: F811
    reg = AdapterRegistry(tmp_path / "reg")
    publish(reg, lm, "it", "v1", seed=1, dora=True)
    prefix = services.config.redis.key_prefix
    with serve_at(compass_serve(tmp_path, lm, "v"), free_port()) as pv, \
            serve_at(compass_serve(tmp_path, lm, "c"), free_port()) as pc:
        s = AdapterSync(sync_config(services, reg, tmp_path, [target("v", "vllm", pv), target("c", "compass", pc)]),
                        redis)
        try:
            p = s.step()
            s.step()  # the refusal stands round after round; nothing is retried into the vllm target
        finally:
            s.close()
    assert p.switch == {} and RoutingTable(redis, prefix).read().names == {}
    states = read_states(redis, prefix)
    v, c = states["v"], states["c"]
    assert (v["in_sync"], v["loaded"], v["waiting"]) == (False, [], {"it": "it-v1"})
    assert v["error"].startswith("a vllm target cannot load it-v1: it/v1 cannot be exported with --format peft: "
                                 "use_dora is true")
    assert "Fix: train it with `adapters.kind: lora`" in v["error"]
    assert (c["in_sync"], c["loaded"], c["error"]) == (True, ["it-v1"], None)  # compass serve takes DoRA as is


def test_a_missing_token_is_named(monkeypatch):
    monkeypatch.delenv("COMPASS_TEST_SYNC_TOKEN", raising=False)
    t = ServingTarget(name="x", kind="vllm", url="http://127.0.0.1:9", token_env="COMPASS_TEST_SYNC_TOKEN")
    client = TargetClient(t, 1.0)
    with pytest.raises(TargetError, match="token_env names COMPASS_TEST_SYNC_TOKEN but that environment variable "
                                          "is not set; export COMPASS_TEST_SYNC_TOKEN="):
        client.models()
    client.close()


def test_cli_once_reports_each_target_and_exits_1_when_one_is_out_of_sync(tmp_path, services, redis, lm):  # noqa: F811
    import yaml
    from typer.testing import CliRunner

    from daemon.cli import app

    reg = AdapterRegistry(tmp_path / "reg")
    publish(reg, lm, "it", "v1", seed=1)
    r = services.config.redis
    closed = free_port()
    with serve_at(compass_serve(tmp_path, lm, "a"), free_port()) as port:
        config = {"redis": {"host": r.host, "port": r.port, "db": r.db, "key_prefix": r.key_prefix},
                  "adapters": {"registry": reg.url},
                  "serving": {"export_dir": str(tmp_path / "export"), "drain_s": 0,
                              "targets": [{"name": "a", "kind": "compass", "url": f"http://127.0.0.1:{port}"},
                                          {"name": "b", "kind": "vllm", "url": f"http://127.0.0.1:{closed}"}]}}
        path = tmp_path / "sync.yaml"
        path.write_text(yaml.safe_dump(config))
        out = CliRunner().invoke(app, ["sync", "--once", "-c", str(path), "-q"])
        assert out.exit_code == 1, out.output
        assert f"a (compass http://127.0.0.1:{port}): in sync; loaded it-v1" in out.output
        assert f"b (vllm http://127.0.0.1:{closed}): OUT OF SYNC; loaded -; target 'b'" in out.output
        assert "routes: {}" in out.output  # b lacks it-v1: no switch
        config["serving"]["targets"] = config["serving"]["targets"][:1]
        path.write_text(yaml.safe_dump(config))
        out = CliRunner().invoke(app, ["sync", "--once", "-c", str(path), "-q"])
        assert out.exit_code == 0, out.output
        assert "routes: {'it': 'it-v1'}" in out.output
    config["serving"]["targets"] = []
    path.write_text(yaml.safe_dump(config))
    out = CliRunner().invoke(app, ["sync", "--once", "-c", str(path)])
    assert "serving.targets is empty" in str(out.exception)
