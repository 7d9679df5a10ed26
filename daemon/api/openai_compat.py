"""OpenAI-compatible endpoints of `compass serve` (any OpenAI client: ``base_url="http://HOST:PORT/v1"``), and
vLLM's runtime LoRA protocol.

  GET  /v1/models                 the base model (its directory's name), every served adapter (``LANG@VERSION``,
                                  or the name it was loaded under) and ``auto``; OpenAI's list shape
  GET  /v1/models/{id}            one of them
  POST /v1/chat/completions       {"model", "messages", ...} -> chat.completion (``stream: true``: server-sent
                                  chat.completion.chunk events, then ``data: [DONE]``)
  POST /v1/completions            {"model", "prompt", ...} -> text_completion (streams the same way)
  POST /v1/load_lora_adapter      {"lora_name", "lora_path"}: load a PEFT adapter directory (on the server's disk)
                                  under that name; 200 text/plain "Success: ..."; a name already loaded: 400
  POST /v1/unload_lora_adapter    {"lora_name"}: waits for the requests using it, then unloads; unknown: 404
                                  (both off unless ``compass serve --allow-lora-updates``: 403, like vLLM's
                                  VLLM_ALLOW_RUNTIME_LORA_UPDATING, since they read server-side paths)

``model``: ``"auto"`` routes by the language of the prompt (chat: the last user message) with the router the
server uses for /v1/generate (§3.2.5); the base model's id or an adapter's name pins that model. Every answer
carries the decision in ``compass: {language, adapter, version, kind, routed, reason}``; ``model`` in the answer
is the id of the model that answered.

Request fields: ``max_tokens`` (chat also ``max_completion_tokens``; default ``serving.max_new_tokens``, at most
4096), ``temperature`` in [0, 2] (default 1; 0 is greedy), ``top_p`` in (0, 1], ``stop`` (a string or up to 4),
``seed``, ``n`` (1 only), ``stream``, ``stream_options.include_usage``, ``user`` (ignored);
``presence_penalty``/``frequency_penalty`` only 0 and ``logprobs`` only off. Other fields are refused, naming them.
Chat ``messages``: roles system, developer, user, assistant; content a string or text parts; the prompt is the
tokenizer's chat template, or without one daemon/serving/chat.py's plain format. Answers carry ``usage``.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 ``invalid_request_error``
(``param`` names the field), 404 ``model_not_found``, 403 runtime LoRA updating off, 503 not ready.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compass.route import RouteError
from daemon.api.limits import MSG_MAX
from daemon.serving.adapters import AdapterLoadError
from daemon.serving.chat import ROLES, RequestError, Sampling, chat_prompt, message_text, route_text

if TYPE_CHECKING:
    from daemon.serving import AdapterServer, CompletionStream

MAX_TOKENS = 4096
_TYPES = {400: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error",
          503: "service_unavailable", 500: "server_error"}


class _Zero(BaseModel):
    """Fields OpenAI clients commonly send, accepted only at values that change nothing here."""

    model_config = ConfigDict(extra="forbid")

    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v: float | None) -> float | None:
        if v:
            raise ValueError("penalties are not supported; send 0 or omit the field")
        return v


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Request(_Zero):
    model: str = Field(..., min_length=1, description="'auto', the base model's id or an adapter name")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError("compass serve returns one choice per request; send n=1 (or omit n) and make "
                             "separate requests for more")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("give at most 4 non-empty stop strings")
        return v

    def sampling(self, default_max: int, max_tokens: int | None = None) -> Sampling:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(max_tokens or self.max_tokens or default_max,
                        1.0 if self.temperature is None else self.temperature,
                        1.0 if self.top_p is None else self.top_p, self.seed, stop)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. "name": harmless for a prompt

    role: str
    content: Any = None


class ChatRequest(_Request):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs are not supported; send false or omit the field")
        return v


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(...)
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None

    @field_validator("logprobs", "suffix")
    @classmethod
    def _unsupported(cls, v: Any) -> Any:
        if v:
            raise ValueError("not supported; omit the field")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("echo is not supported; send false or omit the field")
        return v


class LoadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(..., min_length=1)
    lora_path: str = Field(..., min_length=1)


class UnloadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(..., min_length=1)
    lora_int_id: int | None = None  # vLLM accepts it; names identify adapters here


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    """OpenAI's error body."""
    kind = _TYPES.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message[:MSG_MAX * 2], "type": kind, "param": param, "code": code}},
                        status_code=status)


def _validation_error(e: ValidationError) -> JSONResponse:
    err = e.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        return error(400, f"{param} is not a field compass serve supports; remove it (see GET /docs)", param)
    if err["type"] == "missing":
        return error(400, f"{param} is required; add it to the request body", param)
    got = json.dumps(err.get("input"), default=str)[:60]
    return error(400, f"{param} is invalid: {err['msg']} (got {got})", param)


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    try:
        raw = await request.json()
    except ValueError:
        return error(400, "the request body is not JSON; send a JSON object with Content-Type application/json")
    if not isinstance(raw, dict):
        return error(400, f"the request body is a JSON {type(raw).__name__}; send a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        return _validation_error(e)


def _request_error(e: Exception) -> JSONResponse:
    if isinstance(e, RequestError):
        return error(e.status, str(e), e.param, e.code)
    return error(400, str(e))  # RouteError, AdapterLoadError: the message names what to fix


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def add_openai_routes(app: FastAPI, server: AdapterServer, lora_updates: bool = False) -> None:
    """Add the OpenAI-compatible endpoints and vLLM's load/unload protocol to ``app``."""
    started = int(time.time())
    default_max = int(server.cfg.serving.max_new_tokens)

    def not_ready() -> JSONResponse | None:
        if server.ready().get("model") != "ok":
            return error(503, "the model is not loaded yet; retry when GET /readyz answers 200", code="not_ready")
        return None

    def model_entry(m: dict[str, Any]) -> dict[str, Any]:
        return {"id": m["id"], "object": "model", "created": started, "owned_by": "compass", "parent": m["parent"],
                "root": server.base_name,
                "compass": {"language": m["language"], "version": m["version"], "kind": m["kind"]}}

    def all_models() -> list[dict[str, Any]]:
        auto = {"id": "auto", "parent": None, "language": None, "version": None, "kind": "router"}
        return [model_entry(m) for m in [auto, *server.models()]]

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": all_models()}

    @app.get("/v1/models/{model_id}", response_model=None)
    def get_model(model_id: str) -> dict[str, Any] | JSONResponse:
        for m in all_models():
            if m["id"] == model_id:
                return m
        return error(404, f"model {model_id!r} is not served here; GET /v1/models lists what is", "model",
                     "model_not_found")

    async def run(body: _Request, prompt: str, text: str, special: bool, chat: bool,
                  max_tokens: int | None = None) -> Any:
        if (resp := not_ready()) is not None:
            return resp
        sampling = body.sampling(default_max, max_tokens)
        kind = "chat.completion" if chat else "text_completion"
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        try:
            if body.stream:
                stream = await run_in_threadpool(server.stream, prompt, text, body.model, sampling, special)
            else:
                done = await run_in_threadpool(server.complete, prompt, text, body.model, sampling, special)
        except (RequestError, RouteError, AdapterLoadError) as e:
            return _request_error(e)
        if not body.stream:
            assert done.served is not None
            choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": done.text}} if chat else {"text": done.text})
            return {"id": rid, "object": kind, "created": int(time.time()), "model": done.served.model,
                    "choices": [choice], "usage": done.usage(), "compass": done.served.extension()}
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_events(stream, rid, f"{kind}.chunk" if chat else kind, chat, usage),
                                 media_type="text/event-stream")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        body = await _parse(request, ChatRequest)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, ChatRequest)
        try:
            messages = []
            for i, m in enumerate(body.messages):
                if m.role not in ROLES:
                    raise RequestError(f"messages[{i}].role is {m.role!r}; give one of {list(ROLES)}",
                                       param=f"messages[{i}].role")
                messages.append({"role": m.role, "content": message_text(m.content, f"messages[{i}].content")})
            prompt, has_special = chat_prompt(server.tokenizer, messages)
            text = route_text(messages)
        except RequestError as e:
            return _request_error(e)
        return await run(body, prompt, text, not has_special, True, body.max_completion_tokens or body.max_tokens)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await _parse(request, CompletionRequest)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, CompletionRequest)
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                return error(400, f"prompt is a list of {len(prompt)} prompts; send one prompt per request (a "
                                  "string, or a list of one)", "prompt")
            prompt = prompt[0]
        if not prompt.strip():
            return error(400, "prompt is blank; send the text to continue", "prompt")
        return await run(body, prompt, prompt, True, False)

    def lora_off() -> JSONResponse | None:
        if lora_updates:
            return None
        return error(403, "runtime LoRA updating is off: it loads directories from the server's disk; start "
                          "`compass serve --allow-lora-updates` to allow it", code="lora_updates_disabled")

    @app.post("/v1/load_lora_adapter", response_model=None)
    async def load_lora_adapter(request: Request) -> Any:
        if (resp := lora_off()) is not None:
            return resp
        body = await _parse(request, LoadLoraRequest)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, LoadLoraRequest)
        try:
            await run_in_threadpool(server.load_adapter_dir, body.lora_name, body.lora_path)
        except RequestError as e:
            return _request_error(e)
        except AdapterLoadError as e:
            return error(400, str(e), "lora_path")
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", response_model=None)
    async def unload_lora_adapter(request: Request) -> Any:
        if (resp := lora_off()) is not None:
            return resp
        body = await _parse(request, UnloadLoraRequest)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, UnloadLoraRequest)
        try:
            await run_in_threadpool(server.unload_adapter, body.lora_name)
        except RequestError as e:
            return _request_error(e)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _events(stream: CompletionStream, rid: str, obj: str, chat: bool, usage: bool) -> Iterator[str]:
    """Server-sent events of one stream in OpenAI's chunk format, ending with ``data: [DONE]``."""
    created, model, ext = int(time.time()), stream.served.model, stream.served.extension()

    def chunk(piece: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {"content": piece} if piece is not None else {})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "compass": ext}

    if chat:
        yield _sse(chunk(None, None, role=True))
    try:
        for piece in stream:
            yield _sse(chunk(piece, None))
    except Exception as e:  # noqa: BLE001 - the status line is sent: report in the stream, as OpenAI does
        yield _sse({"error": {"message": str(e)[:MSG_MAX], "type": "server_error", "param": None, "code": None}})
        yield _sse("[DONE]")
        return
    done = stream.completion
    yield _sse(chunk(None, done.finish_reason))
    if usage:
        yield _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                    "usage": done.usage(), "compass": ext})
    yield _sse("[DONE]")

