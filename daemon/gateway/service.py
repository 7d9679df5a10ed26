"""The gateway's parts and their lifecycle: language ID over the enabled languages, the routing table cache, the
upstream client and the event sink. ``start`` before serving, ``close`` after (it flushes the events)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import httpx
from pydantic import ValidationError

from compass.errors import CompassError
from compass.route.decision import Served, classify
from daemon.gateway.events import EventSink
from daemon.gateway.metrics import GatewayMetrics
from daemon.gateway.proxy import Upstream
from daemon.gateway.routing import AUTO, RouteCache
from infra.routes import RoutingTable
from infra.settings.gateway import GatewayConfig, upstream_root

if TYPE_CHECKING:
    from compass.langid import LanguageIdentifier
    from compass.languages import LanguagesConfig
    from infra.settings import ServiceConfig

log = logging.getLogger(__name__)


class GatewayError(CompassError, ValueError):
    """The gateway cannot start as configured; the message names the setting and the fix."""


def _settings(cfg: GatewayConfig, upstream: str | None) -> GatewayConfig:
    """``cfg`` with ``upstream`` (``--upstream``) in place, validated like the file's value."""
    if upstream is not None:
        try:
            cfg = GatewayConfig.model_validate({**cfg.model_dump(), "upstream": upstream})
        except ValidationError:
            raise GatewayError(f"--upstream {upstream!r} is not an http(s) URL; give the OpenAI-compatible "
                               "server's address, e.g. --upstream http://127.0.0.1:8000") from None
    if cfg.upstream is None:
        raise GatewayError("no upstream: pass --upstream URL (e.g. http://127.0.0.1:8000 for vLLM) or set "
                           "gateway.upstream in the service config")
    return cfg


def _token(cfg: GatewayConfig) -> str | None:
    if cfg.upstream_token_env is None:
        return None
    token = os.environ.get(cfg.upstream_token_env)
    if not token:
        raise GatewayError(f"gateway.upstream_token_env names {cfg.upstream_token_env}, which is not set; export "
                           "it with the upstream's API key, or remove the setting to pass clients' keys through")
    return token


def base_model_of(models: object) -> str | None:
    """The base model's id in an OpenAI /v1/models answer: the first model without a parent other than auto (vLLM
    gives adapters their base as parent; llama.cpp's server lists one model)."""
    data = models.get("data") if isinstance(models, dict) else None
    for m in data if isinstance(data, list) else ():
        if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"] != AUTO and not m.get("parent"):
            return m["id"]
    return None


class Gateway:
    def __init__(self, cfg: ServiceConfig, languages: LanguagesConfig, upstream: str | None = None, *,
                 identifier: LanguageIdentifier | None = None, metrics: GatewayMetrics | None = None):
        from compass.langid import make_identifier

        self.cfg, self.settings = cfg, _settings(cfg.gateway, upstream)
        s = self.settings
        assert s.upstream is not None
        self.enabled = tuple(languages.enabled)
        self.identifier = identifier or make_identifier(cfg.langid, self.enabled)
        self.metrics = metrics or GatewayMetrics()
        self.upstream = Upstream(upstream_root(s.upstream), _token(s), s.connect_timeout_s, s.read_timeout_s,
                                 s.max_connections)
        self.routes = RouteCache(self._routing_table, s.routes_refresh_s, self.metrics.routes_version.set)
        self.events = EventSink(cfg.kafka, cfg.kafka.queries_topic, s.buffer_size, self.metrics,
                                linger_ms=s.linger_ms)
        self.base_model: str = s.base_model or ""

    def _routing_table(self) -> RoutingTable:
        from infra.clients import redis_client

        return RoutingTable(redis_client(self.cfg.redis), self.cfg.redis.key_prefix)

    def identify(self, text: str) -> Served:
        """The language of ``text`` against the enabled languages (language ID reads its first
        ``gateway.langid_max_chars`` characters: enough to tell, and a bounded cost per request)."""
        return classify(self.identifier.identify(text[:self.settings.langid_max_chars]), self.enabled)

    def discover_base_model(self) -> str:
        """The base model's id from the upstream's GET /v1/models (when ``gateway.base_model`` is not set)."""
        url = f"{self.upstream.root}/v1/models"
        headers = {"authorization": f"Bearer {self.upstream.token}"} if self.upstream.token else {}
        try:
            resp = httpx.get(url, headers=headers, timeout=self.settings.connect_timeout_s + 5)
            resp.raise_for_status()
            found = base_model_of(resp.json())
        except (httpx.HTTPError, ValueError) as e:
            raise GatewayError(f"cannot read the base model's id from {url} ({type(e).__name__}: {e}); start the "
                               "upstream first, or set gateway.base_model to its id") from None
        if found is None:
            raise GatewayError(f"{url} lists no base model (a model without a parent); set gateway.base_model to "
                               "the id the upstream serves its base model under")
        return found

    def start(self) -> None:
        if not self.base_model:
            self.base_model = self.discover_base_model()
        self.routes.start()
        self.events.start()
        log.info("gateway: upstream %s, base model %s, %d routed language(s) in table version %d; events to %s",
                 self.upstream.root, self.base_model, len(self.routes.routes.names), self.routes.routes.version,
                 self.cfg.kafka.queries_topic)

    def close(self) -> int:
        """Stop refreshing routes and flush the events (within ``gateway.shutdown_flush_s``); returns those lost."""
        self.routes.close()
        return self.events.close(self.settings.shutdown_flush_s)
