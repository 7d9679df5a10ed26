"""The gateway's routing table in Redis: which model name on the serving targets answers each language (issue 17).

``{prefix}:serving:routes`` is one hash: ``language -> model name`` (an adapter loaded on every target under
``LANG@VERSION``, compass/route's naming), and ``_version``: a counter raised by every change. The adapter sync
(it loads a promoted version on the targets, confirms it answers, then switches) is the only writer; every
gateway replica reads the whole table in one HGETALL and keeps it until ``_version`` moves. A language absent from
the table is served by the base model.

A switch is atomic (one Lua call: the name and the counter together), so a reader sees the old table or the new
one, never a half-written change; ``switch_many`` switches several languages in one step (a rollback of a batch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from compass.errors import CompassError
from infra.keys import Keys
from infra.window.replies import text

VERSION_FIELD = "_version"  # never a language code (2-3 letters)
_LANG = re.compile(r"^[a-z]{2,3}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/-]{0,255}$")  # what vLLM and compass serve accept as lora_name

# KEYS: routes. ARGV: n, then n (language, name) pairs; name "" removes the language. Returns the new version.
_SWITCH_LUA = r"""
local n = tonumber(ARGV[1])
for i = 1, n do
  local lang, name = ARGV[2 * i], ARGV[2 * i + 1]
  if name == '' then redis.call('HDEL', KEYS[1], lang) else redis.call('HSET', KEYS[1], lang, name) end
end
return redis.call('HINCRBY', KEYS[1], '_version', 1)
"""


class RouteTableError(CompassError, ValueError):
    """A language code or model name the routing table cannot hold."""


@dataclass(frozen=True)
class Routes:
    """One read of the table: its ``version`` (0: never written) and ``language -> model name``."""

    version: int = 0
    names: dict[str, str] = field(default_factory=dict)

    def model_for(self, lang: str | None, base: str) -> str:
        """The model name that answers ``lang``: its adapter when the table has one, else ``base``."""
        return self.names.get(lang, base) if lang else base


class RoutingTable:
    """The routing table under ``prefix`` (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str = "compass"):
        self.client, self.key = client, Keys(prefix).serving_routes()
        self._switch = client.register_script(_SWITCH_LUA)

    def read(self) -> Routes:
        raw = {text(k): text(v) for k, v in self.client.hgetall(self.key).items()}
        version = int(raw.pop(VERSION_FIELD, 0))
        return Routes(version, dict(sorted(raw.items())))

    def switch(self, lang: str, name: str | None) -> int:
        """Route ``lang`` to ``name`` (None: back to the base model); returns the table's new version."""
        return self.switch_many({lang: name})

    def switch_many(self, changes: Mapping[str, str | None]) -> int:
        """Apply every change in one atomic step; returns the table's new version."""
        args: list[str] = []
        for lang, name in changes.items():
            if not isinstance(lang, str) or not _LANG.match(lang):
                raise RouteTableError(f"language must be a compass code (2-3 lowercase letters); got {lang!r}")
            if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
                raise RouteTableError(f"model name for {lang!r} must be 1-256 of [A-Za-z0-9._@:/-], starting with a "
                                      f"letter or digit (e.g. {lang}@v3); got {name!r}")
            args += [lang, name or ""]
        if not args:
            return self.read().version
        return int(self._switch(keys=[self.key], args=[len(changes), *args]))


__all__ = ["RouteTableError", "Routes", "RoutingTable", "VERSION_FIELD"]
