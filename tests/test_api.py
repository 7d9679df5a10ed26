"""The daemon's HTTP API over a real Daemon (real Kafka and Redis): auth on mutating endpoints, status views."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient
from httpserve import serve
from typer.testing import CliRunner

from compass.drift.emerging import how_to_serve
from daemon.api.app import TOKEN_ENV, create_app
from daemon.cli import app as cli_app
from daemon.scheduler.dispatch import inbox_key
from infra.messages import Event, encode
from infra.reference import get_reference, set_reference
from infra.unserved import Traffic, UnservedStore
from infra.window import Assignment, WindowStore

LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, cooldown_s: 100}
languages:
  sw: {}
  yo: {enabled: false}
"""
TOKEN = "s3cret-token"


@pytest.fixture
def daemon(make_daemon):
    return make_daemon(LANGS, "api")


@pytest.fixture
def client(daemon):
    return TestClient(create_app(daemon))


def test_health_ready_metrics_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok", "owner": "api-test"}
    assert client.get("/readyz").json() == {"ready": True, "redis": "ok", "kafka": "ok"}
    assert "compass_daemon_check_seconds" in client.get("/metrics").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/languages", "/v1/languages/{lang}", "/v1/languages/{lang}/trigger"} <= set(paths)


@pytest.mark.parametrize("action", ["pause", "resume", "trigger"])
def test_mutating_endpoints_reject_missing_or_wrong_token(client, monkeypatch, action):
    url = f"/v1/languages/sw/{action}"
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    r = client.post(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 503 and f"set the environment variable {TOKEN_ENV}" in r.json()["detail"]
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    r = client.post(url)
    assert r.status_code == 401 and r.json()["detail"].startswith("missing bearer token")
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post(url, headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()["detail"]) == (401, "wrong bearer token")
    r = client.post(url, headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401


def test_pause_resume_trigger_and_views(client, daemon, redis, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    items = [Assignment(f"q{i}", 0, "compass.queries", 0, i, f"t{i}") for i in range(4)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)

    assert client.post("/v1/languages/sw/pause", headers=auth).json() == {"language": "sw", "paused": True}
    assert daemon.check("sw").state == "paused"
    r = client.post("/v1/languages/sw/trigger", headers=auth)
    assert (r.status_code, r.json()["state"], r.json()["fired"]) == (409, "paused", False)
    assert client.post("/v1/languages/sw/resume", headers=auth).json() == {"language": "sw", "paused": False,
                                                                            "stuck": False}

    r = client.post("/v1/languages/sw/trigger", headers=auth)
    body = r.json()
    assert (r.status_code, body["state"], body["fired"]) == (200, "manual", True)
    view = client.get("/v1/languages/sw").json()
    assert (view["state"], view["phase"], view["theta"], view["adapter_version"]) == ("updating", "updating", 0.2, "a1")
    assert view["window"] == {"size": 4, "window_size": 4, "fill": 1.0, "codebook_version": "v1", "sampling_rate": 1.0,
                              "sampled_out": 0, "inflow_qps": 0.0, "window_span_s": None, "traffic_qps": 0.0}  # no query since the check
    assert view["last_trigger"]["job_id"] == body["job_id"] and view["last_trigger"]["reason"] == "manual"
    assert view["lease_holder"] == "api-test"

    rows = client.get("/v1/languages").json()["languages"]
    assert [(r["language"], r["enabled"], r["state"], r["fill"]) for r in rows] == [
        ("sw", True, "updating", 1.0), ("yo", False, None, 0.0)]
    assert [(r["phase"], r["effective_threshold"]) for r in rows] == [("updating", 0.2), ("idle", 0.2)]
    r = client.get("/v1/languages/xx")
    assert r.status_code == 404 and "unknown language 'xx'" in r.json()["detail"]


def test_ref_cli_sets_and_shows_the_reference(services, redis):
    env = {"COMPASS_REDIS_URL": services.redis_url, "COMPASS_KAFKA_BOOTSTRAP": services.kafka_bootstrap}
    runner = CliRunner()
    r = runner.invoke(cli_app, ["ref", "set", "sw", "--counts", "3,1,0", "--codebook", "v1", "--adapter", "a1"],
                      env=env)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "sw: P_ref = [0.75, 0.25, 0.0] (codebook v1, adapter a1)"
    ref = get_reference(redis, "sw")
    assert (ref.probs, ref.counts, ref.codebook_version, ref.adapter_version) == ([0.75, 0.25, 0.0],
                                                                                  [3.0, 1.0, 0.0], "v1", "a1")
    r = runner.invoke(cli_app, ["ref", "set", "sw", "--counts", "3,x", "--codebook", "v1", "--adapter", "a1"], env=env)
    assert r.exit_code == 2 and "give numbers separated by commas" in r.output


def test_route_on_the_daemon_app(make_daemon, tmp_path):
    # no adapter promoted yet: an enabled language routes to the base model; bad input is a 422 naming the field
    from compass.adapt_settings import AdaptersConfig

    d = make_daemon(LANGS, "route", adapters=AdaptersConfig(registry=str(tmp_path / "adapters")))
    client = TestClient(create_app(d))
    r = client.post("/v1/route", json={"text": "Habari ya asubuhi, rafiki yangu. Ninakwenda sokoni leo."})
    assert r.status_code == 200
    body = r.json()
    assert (body["language"], body["adapter"], body["version"], body["kind"]) == ("sw", None, None, "base")
    r = client.post("/v1/route", json={"text": "   "})
    assert r.status_code == 422 and "text" in r.text


STUCK_LANGS = """
defaults: {min_samples: 4, window_size: 4, theta: 0.2, cooldown_s: 100, max_rejections: 1}
languages:
  sw: {}
"""


def test_resume_clears_a_stuck_language(make_daemon, redis, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    daemon = make_daemon(STUCK_LANGS, "stuck")
    client = TestClient(create_app(daemon))
    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    items = [Assignment(f"q{i}", 0, "compass.queries", 0, i, f"t{i}") for i in range(4)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)
    t0 = 1_000_000.0
    job = daemon.check("sw", t0).job
    # the worker's report, as the events poller queues it: the update failed, one is max_rejections
    redis.rpush(inbox_key("sw", "compass"), encode(Event("update_finished", "sw", t0 + 5, job.job_id, {"ok": False})))
    assert daemon.check("sw", t0 + 6).state == "stuck"
    view = client.get("/v1/languages/sw").json()
    assert (view["state"], view["phase"], view["failures"]) == ("stuck", "stuck", 1)
    assert "resume with POST /v1/languages/<lang>/resume" in view["stuck"]["reason"]
    assert 'compass_daemon_stuck{lang="sw"} 1.0' in client.get("/metrics").text

    r = client.post("/v1/languages/sw/resume", headers=auth)
    assert (r.status_code, r.json()) == (200, {"language": "sw", "paused": False, "stuck": True})
    r = daemon.check("sw", t0 + 6 + 100)  # resumed: armed, failures cleared; the window still drifts
    assert (r.state, r.fired) == ("drift", True)
    view = client.get("/v1/languages/sw").json()
    assert (view["phase"], view["failures"], view["stuck"]) == ("updating", 0, None)
    assert 'compass_daemon_stuck{lang="sw"} 0.0' in client.get("/metrics").text


def test_languages_lists_the_unserved_ones_on_request(client, daemon, redis):
    now_ms, items = int(time.time() * 1000), []
    for lang, served, n in (("sw", True, 6), ("ca", False, 3), ("und", False, 1), ("yo", False, 1)):  # yo: disabled
        for i in range(n):
            items.append(Traffic(f"{lang}-{i}", lang, served, "compass.queries", 0, len(items), now_ms))
    UnservedStore(redis).apply(items)

    assert set(client.get("/v1/languages").json()) == {"languages"}  # unchanged without the flag
    body = client.get("/v1/languages", params={"unserved": "true"}).json()
    assert [r["language"] for r in body["languages"]] == ["sw", "yo"]
    u = body["unserved"]
    assert {k: v for k, v in u.items() if k != "languages"} == {
        "horizon_s": 86400, "emerging_share": 0.02, "emerging_min_count": 200, "rearm_below": 0.01, "served": 6,
        "total": 11, "error": None}

    def row(lang, n, status, how):
        return {"language": lang, "count": n, "share": n / 11, "total_count": n, "status": status, "emerging": False,
                "since": None, "episodes": 0, "sample_ids": [f"{lang}-{i}" for i in range(n)], "how": how}

    # by share, then code; 3 of 11 is above 0.02 but under emerging_min_count 200: "few"
    assert u["languages"] == [row("ca", 3, "few", how_to_serve("ca")), row("und", 1, "undetermined", None),
                              row("yo", 1, "few", how_to_serve("yo"))]
    r = client.get("/v1/languages", params={"unserved": "maybe"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "unserved"]


# ------------------------------------------------------------------------------------------ HTTP limits

def raw_request(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, dict]:
    """Send ``head`` and ``chunks`` (never the end of the body), then read the reply within 5 s."""
    import json
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        for c in chunks:
            s.sendall(c)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", data.lower()).group(1)):
            data += s.recv(65536)  # a server waiting for the rest of the body times out here
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


LIMIT_DETAIL = "request body of {} bytes is over the limit of 1048576 bytes; send a smaller body " \
               "(config http.max_body_bytes)"


def test_a_body_over_the_limit_answers_413_before_it_is_read(daemon):
    with serve(create_app(daemon)) as port:
        head = (f"POST /v1/route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {8 << 20}\r\n\r\n").encode()
        assert raw_request(port, head, [b'{"text": "']) == (413, {"detail": LIMIT_DETAIL.format(8 << 20)})
        # chunked: counted as it streams, stopped past 1 MiB although the body never ends
        head = b"POST /v1/route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        chunk = b"x" * 65536
        chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 17  # 1.06 MiB
        assert raw_request(port, head, chunks) == (413, {"detail": LIMIT_DETAIL.format("more than 1048576")})


def test_a_422_quotes_only_a_prefix_of_the_input(daemon):
    client = TestClient(create_app(daemon))
    r = client.post("/v1/route", json={"text": 5, "lang": "x" * 500_000, "y" * 10_000: 1})
    assert r.status_code == 422 and len(r.content) < 2000
    rows = {row["loc"][1][:5]: row for row in r.json()["detail"]}
    assert rows["text"] == {"loc": ["body", "text"], "msg": "Input should be a valid string", "type": "string_type",
                            "input": 5}
    assert rows["lang"]["input"] == "x" * 100 + "... (500000 chars)" and rows["lang"]["type"] == "value_error"
    assert len(rows["lang"]["msg"]) <= 320
    assert rows["yyyyy"]["loc"] == ["body", "y" * 300 + "... (10000 chars)"]
    assert rows["yyyyy"]["type"] == "extra_forbidden"
    r = client.post("/v1/route", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413
