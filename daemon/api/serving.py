"""HTTP API of the model server (`compass serve`), on ``serving.host:serving.port`` (127.0.0.1 by default).

  GET  /healthz          the process answers
  GET  /readyz           the model is loaded (and how promotions arrive: Kafka ``ok`` or registry poll only)
  GET  /metrics          Prometheus text format (daemon/serving/metrics.py)
  POST /v1/route         {"text", "lang"?} -> the §3.2.5 routing decision (no generation)
  POST /v1/generate      {"text", "lang"?, "max_new_tokens"?} -> {"text", "language", "adapter_version", "kind",
                         "reason"}
  GET  /openapi.json, /docs

OpenAI-compatible endpoints (GET /v1/models, POST /v1/chat/completions, /v1/completions, streaming included) and
vLLM's runtime LoRA protocol (POST /v1/load_lora_adapter, /v1/unload_lora_adapter): daemon/api/openai_compat.py;
those answer errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}.

Invalid bodies answer 422 with FastAPI's ``detail`` list, whose ``loc`` names the field (e.g. ["body", "lang"]) and
whose ``input`` is cut to a short prefix; bodies over ``http.max_body_bytes`` answer 413 (daemon/api/limits.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from compass.route import RouteError
from compass.route.router import normalize_lang
from daemon.api.limits import MSG_MAX, install_limits
from infra.settings import HttpConfig

if TYPE_CHECKING:
    from daemon.serving import AdapterServer

MAX_TEXT = 100_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., min_length=1, max_length=MAX_TEXT, description="the query")
    lang: str | None = Field(None, description="language code overriding detection, e.g. 'it'")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank; send the query text")
        return v

    @field_validator("lang")
    @classmethod
    def _lang(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return normalize_lang(v)
        except RouteError as e:
            raise ValueError(str(e)) from None


class RouteRequest(_Body):
    pass


class GenerateRequest(_Body):
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="tokens to generate, in [1, 4096]")


class _NoMetrics:
    """The metrics of a stand-in server that keeps none: an empty registry."""

    registry = CollectorRegistry()


_NO_METRICS = _NoMetrics()


def create_serving_app(server: AdapterServer, lora_updates: bool = False) -> FastAPI:
    """The API over one ``AdapterServer`` (sync endpoints: FastAPI runs them in its thread pool).
    ``lora_updates``: allow /v1/load_lora_adapter and /v1/unload_lora_adapter (they read server-side paths)."""
    app = FastAPI(title="compass serving", version="1",
                  description="Language-routed generation over per-language adapters (paper §3.2.5).")
    cfg = getattr(server, "cfg", None)
    install_limits(app, cfg.http.max_body_bytes if cfg is not None else HttpConfig().max_body_bytes)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = server.ready()
        ok = checks.get("model") == "ok"
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        m = getattr(server, "metrics", _NO_METRICS)  # a stand-in server may have none: an empty exposition
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/route")
    def route(body: RouteRequest) -> dict[str, Any]:
        try:
            return server.route(body.text, body.lang).to_dict()
        except RouteError as e:
            raise HTTPException(422, str(e)[:MSG_MAX]) from None

    @app.post("/v1/generate")
    def generate(body: GenerateRequest) -> dict[str, Any]:
        try:
            (gen,) = server.generate([body.text], max_new_tokens=body.max_new_tokens, lang=body.lang)
        except RouteError as e:
            raise HTTPException(422, str(e)[:MSG_MAX]) from None
        return gen.to_dict()

    if hasattr(server, "models"):  # a stand-in server without OpenAI-style generation serves the routes above only
        from daemon.api.openai_compat import add_openai_routes

        add_openai_routes(app, server, lora_updates)
    return app
