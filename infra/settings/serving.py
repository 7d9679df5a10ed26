"""The HTTP servers' sections: ``http:`` (the daemon API, and the body limit of every server) and ``serving:``
(routing and generation, `compass serve`, and the adapter sync to the serving targets, `compass sync`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from compass.validation import Frozen

TARGET_KINDS = ("vllm", "sglang", "compass")
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class HttpConfig(Frozen):
    host: str = Field("127.0.0.1", description="bind address; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8470, ge=1, le=65535, description="a TCP port in [1, 65535]")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30,
        description="largest request body of every HTTP server (daemon API, `compass serve`) in bytes, in "
        "[1024, 2^30]; larger ones answer 413",
    )


class ServingTarget(Frozen):
    """One server the adapter sync keeps in line with the registry through vLLM's runtime LoRA protocol."""

    name: str = Field(..., description="the target's name in the status page: 1-63 of [a-z0-9_-], e.g. vllm-a")
    kind: Literal["vllm", "sglang", "compass"] = Field(
        ..., description="vllm, sglang or compass (`compass serve --allow-lora-updates`); vllm and sglang refuse "
        "DoRA adapters",
    )
    url: str = Field(..., description="http(s) root of the server, e.g. http://10.0.0.5:8000 (a trailing /v1 is "
                     "dropped)")
    token_env: str | None = Field(None, description="name of an environment variable holding the server's API key "
                                  "(sent as a Bearer token), e.g. VLLM_API_KEY; null: none")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TARGET_NAME.match(v):
            raise ValueError(f"must be 1-63 of [a-z0-9_-] starting with a letter or digit, e.g. vllm-a; got {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _URL.match(v):
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:8000; got {v!r}")
        v = v.rstrip("/")
        return v[:-3].rstrip("/") if v.endswith("/v1") else v  # the sync adds /v1/... itself

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV.match(v):
            raise ValueError(f"must name an environment variable (letters, digits, _), e.g. VLLM_API_KEY; got {v!r}")
        return v


def _targets_rule(targets: tuple[ServingTarget, ...]) -> str | None:
    seen: dict[str, int] = {}
    for i, t in enumerate(targets):
        if t.name in seen:
            return (f"targets[{seen[t.name]}] and targets[{i}] are both named {t.name!r}; give each target its own "
                    "name (the sync state is kept per name)")
        seen[t.name] = i
    return None


def _retry_rule(sync_retry_base_s: float, sync_retry_max_s: float) -> str | None:
    if sync_retry_max_s < sync_retry_base_s:
        return (f"sync_retry_max_s ({sync_retry_max_s}) is below sync_retry_base_s ({sync_retry_base_s}); raise "
                "sync_retry_max_s (the longest wait between tries of a target that is down)")
    return None


class ServingConfig(Frozen):
    """Routing and generation (`compass route`, POST /v1/route, POST /v1/generate), §3.2.5, and the adapter sync
    (`compass sync`, daemon/sync/) that loads each promoted version on the ``targets`` and switches the gateway."""

    host: str = Field("127.0.0.1", description="bind address of `compass serve`; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8471, ge=1, le=65535, description="port of `compass serve`, in [1, 65535]")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="default generation length, in [1, 4096]")
    max_batch: int = Field(8, ge=1, le=256, description="requests of one language generated together, in [1, 256]")
    events_group_id: str = Field("compass-router", min_length=1, description="Kafka group reading promotions")
    targets: tuple[ServingTarget, ...] = Field(
        (), description="the servers `compass sync` loads promoted adapters on: a list of {name, kind, url, "
        "token_env}",
    )
    export_dir: Path = Field(
        Path(".compass/serving-export"), description="where `compass sync` writes each version as a PEFT directory; "
        "every target must read it at the same path (a shared volume)",
    )
    drain_s: float = Field(30.0, ge=0, le=86400, description="seconds a version stays loaded after the gateway "
                           "stopped routing to it (requests in flight finish), in [0, 86400]")
    sync_poll_s: float = Field(2.0, gt=0, le=3600, description="seconds between the sync's reads of the registry's "
                               "current versions and the targets, in (0, 3600]")
    sync_timeout_s: float = Field(120.0, gt=0, le=3600, description="seconds one load, unload or confirm request "
                                  "may take, in (0, 3600]")
    sync_retry_base_s: float = Field(1.0, gt=0, le=3600, description="first wait before a failed target is tried "
                                     "again, doubled per failure, in (0, 3600]")
    sync_retry_max_s: float = Field(60.0, gt=0, le=86400, description="longest wait between tries of a failed "
                                    "target, in (0, 86400]")

    _rules = (_targets_rule, _retry_rule)
