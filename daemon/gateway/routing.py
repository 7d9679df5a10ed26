"""Which model a request gets (issue 17): the request's text -> its language -> the routing table's model name.

The pure part is ``request_text`` (the text whose language routes the request) and ``choose`` (the model it
gets): a request asking for ``auto`` (or naming no model) gets its language's adapter name from the routing table
when compass serves that language (``compass.route.decision.classify``, the rule the consumers share), else the
base model; any other name is the caller's pin and passes untouched. ``RouteCache`` keeps the table from Redis
(infra/routes.py, written by the adapter sync) fresh off the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compass.route.decision import Served
from infra.routes import Routes, RoutingTable

log = logging.getLogger(__name__)

AUTO = "auto"
CHAT, COMPLETIONS = "chat", "completions"


def _content_text(content: Any) -> str:
    """A chat message's text: a string, or the joined text parts of a list (images and the like skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return ""


def request_text(kind: str, body: Mapping[str, Any]) -> str | None:
    """The text whose language routes a request, None when it has none.

    Chat: the last user message (what the user asks in; system prompts are often in English whatever the user
    speaks), else the last message with text. Completions: the prompt (a string, or a list of one string)."""
    if kind == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        texts = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, Mapping)]
        for role in ("user", None):
            for r, t in reversed(texts):
                if (role is None or r == role) and t.strip():
                    return t
        return None
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) and prompt.strip() else None


@dataclass(frozen=True, slots=True)
class Choice:
    """The model a request is sent with and why: ``routed`` (it asked for auto) or pinned by the caller."""

    model: str
    routed: bool
    target: str  # adapter (the table names one), base, or pinned


def choose(requested: Any, served: Served | None, routes: Routes, base: str) -> Choice:
    """The model for a request that asked for ``requested``, whose text's language is ``served`` (None: no text)."""
    if requested is not None and requested != AUTO:
        return Choice(requested if isinstance(requested, str) else str(requested), False, "pinned")
    if served is None or not served.served:
        return Choice(base, True, "base")
    model = routes.model_for(served.language, base)
    return Choice(model, True, "base" if model == base else "adapter")


class RouteCache:
    """The routing table, re-read every ``refresh_s`` on a daemon thread. A failed read keeps the last table (one
    warning per outage, one info line when it is back): a Redis outage never fails or slows a request."""

    def __init__(self, connect: Callable[[], RoutingTable], refresh_s: float,
                 on_version: Callable[[int], None] | None = None):
        self._connect, self.refresh_s, self._on_version = connect, refresh_s, on_version
        self._table: RoutingTable | None = None
        self.routes = Routes()  # replaced whole: readers see the old table or the new one
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read the table once; False (and the last table kept) when Redis does not answer."""
        from infra.clients import REDIS_ERRORS
        from infra.errors import ServiceUnavailable

        try:
            if self._table is None:
                self._table = self._connect()
            routes = self._table.read()
        except (*REDIS_ERRORS, ServiceUnavailable, ValueError) as e:
            if not self._failing:
                log.warning("gateway: cannot read the routing table (%s); keeping the last one (version %d, "
                            "%d language(s)) until Redis answers", e, self.routes.version, len(self.routes.names))
                self._failing = True
            return False
        if self._failing:
            log.info("gateway: the routing table is readable again (version %d)", routes.version)
            self._failing = False
        if routes.version != self.routes.version:
            log.info("gateway: routing table version %d: %s", routes.version,
                     ", ".join(f"{k}->{v}" for k, v in routes.names.items()) or "every language on the base model")
            if self._on_version:
                self._on_version(routes.version)
        self.routes = routes
        return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="gateway-routes", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._table is not None:
            self._table.client.close()
