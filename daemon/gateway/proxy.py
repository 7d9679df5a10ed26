"""Forwarding to the upstream OpenAI-compatible server with httpx: same path, query and body, the headers minus
hop-by-hop ones; the answer comes back chunk by chunk as the upstream sends it (server-sent events included), its
status and headers unchanged. The gateway's own failures use OpenAI's error shape: 502 when the upstream cannot be
reached or breaks the connection, 504 when it does not answer in time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 hop-by-hop headers, and those the HTTP layers set themselves for the new connection and body
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
# bodies are fetched as identity (see forward_headers); uvicorn writes its own date and server headers
_RESPONSE_DROP = HOP_BY_HOP | {"content-encoding", "date", "server"}


def error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    """OpenAI's error body for a failure of the gateway itself."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


def forward_headers(headers: Mapping[str, str], token: str | None) -> dict[str, str]:
    """The client's headers for the upstream: hop-by-hop ones dropped; ``token`` (the configured upstream key)
    replaces the client's Authorization. Bodies are asked for uncompressed: the gateway reads what it relays."""
    out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "accept-encoding"}
    if token:
        out = {k: v for k, v in out.items() if k.lower() != "authorization"}
        out["authorization"] = f"Bearer {token}"
    out["accept-encoding"] = "identity"
    return out


def response_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _RESPONSE_DROP}


class Upstream:
    """One pooled httpx client to the upstream (created on first use, on the server's event loop)."""

    def __init__(self, root: str, token: str | None, connect_s: float, read_s: float, max_connections: int):
        self.root, self.token = root, token
        self._timeout = httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=connect_s)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.root, timeout=self._timeout, limits=self._limits)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def open(self, method: str, path: str, query: str, headers: Mapping[str, str],
                   body: bytes) -> httpx.Response | JSONResponse:
        """Send a request; the upstream's response with its body not yet read, or the gateway's 502/504."""
        url = f"{path}?{query}" if query else path
        request = self.client.build_request(method, url, headers=forward_headers(headers, self.token), content=body)
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException as e:
            return error(504, f"the upstream {self.root} did not answer within gateway.connect_timeout_s / "
                         f"read_timeout_s ({type(e).__name__}); check that it is healthy and not overloaded",
                         "upstream_timeout")
        except httpx.TransportError as e:
            return error(502, f"the upstream {self.root} cannot be reached ({type(e).__name__}: {e}); start it, "
                         "or point gateway.upstream (or --upstream) at the running server", "upstream_unreachable")

    async def relay(self, resp: httpx.Response, stream: bool) -> Response:
        """The upstream's answer as the client's: streamed chunk by chunk when ``stream`` (or when it is a stream
        of events), else read whole (one response with its length)."""
        headers = response_headers(resp.headers)
        is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        if not (stream or is_sse):
            try:
                body = await resp.aread()
            except httpx.TransportError as e:
                return error(502, f"the upstream {self.root} broke off its answer ({type(e).__name__}); retry",
                             "upstream_broken")
            finally:
                await resp.aclose()
            return Response(body, status_code=resp.status_code, headers=headers)
        return StreamingResponse(self._chunks(resp, is_sse), status_code=resp.status_code, headers=headers,
                                 background=BackgroundTask(resp.aclose))

    async def _chunks(self, resp: httpx.Response, is_sse: bool) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.TransportError as e:  # the status line is sent: report in the stream, as OpenAI does
            log.warning("gateway: the upstream broke off a stream: %s: %s", type(e).__name__, e)
            if is_sse:
                err = {"error": {"message": f"the upstream broke off the stream ({type(e).__name__}); retry",
                                 "type": "server_error", "param": None, "code": "upstream_broken"}}
                yield f"\n\ndata: {json.dumps(err)}\n\ndata: [DONE]\n\n".encode()
        finally:  # also when the client goes away mid-stream: the upstream connection goes back to the pool
            await resp.aclose()
