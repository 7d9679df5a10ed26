"""HTTP API of `compass gateway` (``gateway.host:port``): OpenAI's API, relayed to the upstream.

  POST /v1/chat/completions, /v1/completions   ``model: "auto"`` (or none) becomes the language's adapter name from
                                               the routing table, or the base model; any other name passes as is.
                                               Streams are relayed chunk by chunk. An answered (2xx) request with
                                               text produces a query event (daemon/gateway/events.py).
  GET  /v1/models                              the upstream's list, with ``auto`` added; /v1/models/auto
  *    /v1/...                                 anything else passes through untouched
  GET  /healthz, /readyz (the upstream answers GET /v1/models), /metrics

A body that is not a JSON object is forwarded untouched: the upstream's error is the client's. The gateway's own
failures answer OpenAI's error shape: 502 upstream unreachable, 504 upstream timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.api.limits import install_limits
from daemon.gateway.events import query_event
from daemon.gateway.routing import AUTO, CHAT, COMPLETIONS, choose, request_text
from daemon.gateway.service import Gateway

_AUTO_ENTRY = {"id": AUTO, "object": "model", "created": 0, "owned_by": "compass-gateway", "parent": None,
               "compass": {"kind": "router", "description": "routes by the request's language (compass gateway)"}}


def create_gateway_app(gw: Gateway) -> FastAPI:
    """The API over a started ``Gateway``; the app's shutdown closes the upstream client (the caller closes
    ``gw``: it flushes the events)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await gw.upstream.aclose()

    app = FastAPI(title="compass gateway", version="1", lifespan=lifespan,
                  description="OpenAI-compatible proxy: routes by language, produces query events (issue 17).")
    install_limits(app, gw.cfg.http.max_body_bytes)
    m = gw.metrics

    def observe(endpoint: str, status: int, t0: float) -> None:
        m.requests.labels(endpoint, str(status)).inc()
        m.latency.labels(endpoint, str(status)).observe(time.perf_counter() - t0)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        resp = await gw.upstream.open("GET", "/v1/models", "", request.headers, b"")
        up = isinstance(resp, httpx.Response) and resp.status_code == 200
        if isinstance(resp, httpx.Response):
            await resp.aclose()
        checks = {"upstream": "ok" if up else "unreachable", "base_model": gw.base_model,
                  "routes_version": gw.routes.routes.version,
                  "kafka": "ok" if gw.events.connected else "buffering",
                  "events_buffered": gw.events.buffered()}
        return JSONResponse({"ready": up, **checks}, status_code=200 if up else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    async def generate(request: Request, endpoint: str) -> Response:
        t0 = time.perf_counter()
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        text = served = choice = requested = None
        routes = gw.routes.routes  # one table for the whole request
        if isinstance(body, dict):
            requested = body.get("model")
            text = request_text(endpoint, body)
            served = gw.identify(text) if text is not None else None
            choice = choose(requested, served, routes, gw.base_model)
            if choice.routed:
                body["model"] = choice.model
                raw = json.dumps(body, ensure_ascii=False).encode()
            m.routed.labels(served.language if served else "none", choice.target).inc()
        resp = await gw.upstream.open("POST", request.url.path, request.url.query, request.headers, raw)
        observe(endpoint, resp.status_code, t0)
        if not isinstance(resp, httpx.Response):
            return resp  # the gateway's 502/504
        stream = isinstance(body, dict) and body.get("stream") is True
        if 200 <= resp.status_code < 300 and text is not None and served is not None and choice is not None:
            # only answered queries: a client retrying a failed request would otherwise count twice
            gw.events.offer(query_event(text, served, choice, requested=requested, endpoint=endpoint, stream=stream,
                                        upstream_status=resp.status_code, routes_version=routes.version))
        return await gw.upstream.relay(resp, stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, CHAT)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, COMPLETIONS)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        t0 = time.perf_counter()
        resp = await gw.upstream.open("GET", "/v1/models", request.url.query, request.headers, b"")
        observe("models", resp.status_code, t0)
        if not isinstance(resp, httpx.Response) or resp.status_code != 200:
            return resp if not isinstance(resp, httpx.Response) else await gw.upstream.relay(resp, False)
        try:
            listing = json.loads(await resp.aread())
        finally:
            await resp.aclose()
        data = listing.get("data") if isinstance(listing, dict) else None
        if isinstance(data, list) and not any(isinstance(e, dict) and e.get("id") == AUTO for e in data):
            listing["data"] = [_AUTO_ENTRY, *data]
        return JSONResponse(listing)

    @app.get("/v1/models/auto", response_model=None)
    async def auto_model(request: Request) -> Response:
        resp = await gw.upstream.open("GET", "/v1/models/auto", "", request.headers, b"")
        if isinstance(resp, httpx.Response) and resp.status_code == 200:  # the upstream has its own auto
            return await gw.upstream.relay(resp, False)
        if isinstance(resp, httpx.Response):
            await resp.aclose()
        return JSONResponse(_AUTO_ENTRY)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def passthrough(request: Request, rest: str) -> Response:
        t0 = time.perf_counter()
        resp = await gw.upstream.open(request.method, request.url.path, request.url.query, request.headers,
                                      await request.body())
        observe("other", resp.status_code, t0)
        if not isinstance(resp, httpx.Response):
            return resp
        return await gw.upstream.relay(resp, False)

    return app
