"""The ``gateway:`` section: `compass gateway`, the OpenAI-compatible proxy that routes by language and produces
the query events (daemon/gateway/)."""

from __future__ import annotations

from pydantic import Field, field_validator

from compass.validation import Frozen
from infra.settings.serving import _ENV, _URL  # one spelling of an upstream URL and an env-var name


def upstream_root(url: str) -> str:
    """The upstream's root: ``url`` without a trailing ``/`` or ``/v1`` (clients' base_url habit), since the
    gateway forwards each request to the same ``/v1/...`` path it arrived on."""
    url = url.rstrip("/")
    return url[:-3].rstrip("/") if url.endswith("/v1") else url


class GatewayConfig(Frozen):
    """The proxy in front of an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, `compass serve`)."""

    upstream: str | None = Field(
        None, description="URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8471 (a trailing /v1 is "
        "dropped); `compass gateway --upstream` overrides it",
    )
    base_model: str | None = Field(
        None, min_length=1, description="the base model's id on the upstream (what unrouted requests get); null: "
        "the first model of the upstream's GET /v1/models without a parent, other than auto, read at start",
    )
    host: str = Field("127.0.0.1", description="bind address of `compass gateway`; keep 127.0.0.1 unless behind a "
                      "proxy")
    port: int = Field(8472, ge=1, le=65535, description="port of `compass gateway`, in [1, 65535]")
    upstream_token_env: str | None = Field(
        None, description="name of an environment variable holding the upstream's API key (sent as a Bearer "
        "token); null: the client's Authorization header is passed through",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="seconds to connect to the upstream, in "
                                     "(0, 300]; past it: 504")
    read_timeout_s: float = Field(600.0, gt=0, le=3600, description="seconds the upstream may stay silent (before "
                                  "its answer or between stream chunks), in (0, 3600]; past it: 504")
    max_connections: int = Field(256, ge=1, le=10000, description="open connections to the upstream, in [1, 10000]")
    buffer_size: int = Field(10000, ge=1, le=10_000_000, description="query events held while Kafka is slow or "
                             "down, in [1, 10^7]; more are dropped (counted) and requests never wait")
    linger_ms: int = Field(20, ge=0, le=10_000, description="Kafka producer linger: ms to gather a batch, in "
                           "[0, 10000]")
    shutdown_flush_s: float = Field(5.0, ge=0, le=300, description="seconds a shutdown waits to send buffered "
                                    "events, in [0, 300]; what is left is logged as lost")
    routes_refresh_s: float = Field(2.0, gt=0, le=3600, description="seconds between reads of the routing table "
                                    "(infra/routes.py), in (0, 3600]")
    langid_max_chars: int = Field(2000, ge=16, le=1_000_000, description="characters of a request's text that "
                                  "language ID reads, in [16, 10^6]")

    @field_validator("upstream")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not _URL.match(v):
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:8471; got {v!r}")
        return v

    @field_validator("upstream_token_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV.match(v):
            raise ValueError(f"must name an environment variable (letters, digits, _), e.g. VLLM_API_KEY; got {v!r}")
        return v
