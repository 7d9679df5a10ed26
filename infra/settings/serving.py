"""The HTTP servers' sections: ``http:`` (the daemon API, and the body limit of every server) and ``serving:``
(routing and generation, `compass serve`)."""

from __future__ import annotations

from pydantic import Field

from compass.validation import Frozen


class HttpConfig(Frozen):
    host: str = Field("127.0.0.1", description="bind address; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8470, ge=1, le=65535, description="a TCP port in [1, 65535]")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30,
        description="largest request body of every HTTP server (daemon API, `compass serve`) in bytes, in "
        "[1024, 2^30]; larger ones answer 413",
    )


class ServingConfig(Frozen):
    """Routing and generation (`compass route`, POST /v1/route, POST /v1/generate), §3.2.5."""

    host: str = Field("127.0.0.1", description="bind address of `compass serve`; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8471, ge=1, le=65535, description="port of `compass serve`, in [1, 65535]")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="default generation length, in [1, 4096]")
    max_batch: int = Field(8, ge=1, le=256, description="requests of one language generated together, in [1, 256]")
    events_group_id: str = Field("compass-router", min_length=1, description="Kafka group reading promotions")
