"""Limits shared by every HTTP server of compass (the daemon API, `compass serve`).

- Request bodies: at most ``http.max_body_bytes``. A Content-Length above it answers 413 before the body is
  read; a chunked (or lying) body is counted as it streams and stopped at the first byte over the limit.
- Validation errors (422): FastAPI's ``detail`` list keeps ``loc``, ``msg`` and ``type``; ``input`` and long
  strings are cut to a short prefix, so a reply never echoes a large input back.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INPUT_MAX = 100  # characters of an input quoted in a 422
MSG_MAX = 300  # characters of a message or a loc item


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class _TooLarge(HTTPException):
    """Raised by the body's receive: an HTTPException, so FastAPI's body parsing passes it on (as a 413)."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (the body is never read past the limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, size: str) -> str:
        return (f"request body of {size} bytes is over the limit of {self.max_bytes} bytes; send a smaller body "
                "(config http.max_body_bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(send, 400, f"Content-Length {_cut(length.decode('latin-1'), 40)!r} is not a number of "
                                        "bytes; send a decimal Content-Length or a chunked body")
                return
            if int(length) > self.max_bytes:
                await _reply(send, 413, self._detail(length.decode()))
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self._detail(f"more than {self.max_bytes}"))
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge as e:  # an app that reads the body outside FastAPI's parsing
            if started:
                raise
            await _reply(send, 413, e.detail)


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _short_input(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(jsonable_encoder(value), ensure_ascii=False, default=str)
    if isinstance(value, str) and len(text) <= INPUT_MAX:
        return value
    return _cut(text, INPUT_MAX)


def short_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors with loc/msg/type kept and every input cut to ``INPUT_MAX`` characters."""
    out = []
    for err in errors:
        row: dict[str, Any] = {
            "loc": [_cut(x, MSG_MAX) if isinstance(x, str) else x for x in err.get("loc", ())],
            "msg": _cut(str(err.get("msg", "")), MSG_MAX),
            "type": err.get("type"),
        }
        if "input" in err:
            row["input"] = _short_input(err["input"])
        out.append(row)
    return out


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": short_errors(exc.errors())}, status_code=422)


def install_limits(app: FastAPI, max_body_bytes: int) -> None:
    """The body limit and the short 422 on ``app``."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
