"""A per-language lease in Redis so that exactly one daemon replica acts for a language at a time.

The lease itself is ``infra.lease.Lease`` (SET NX PX with a fencing token from INCR). A replica that
stalls past its TTL (GC pause, network partition) may still believe it holds the lease; writes guarded by
``fenced_set`` carry the token and are refused once a newer holder has written, so the stale replica
cannot overwrite state or double-trigger. Keys are hash-tagged per language (Redis Cluster).
"""

from __future__ import annotations

import redis

from infra.keys import Keys, fence
from infra.lease import Lease

# KEYS[1] guarded key, KEYS[2] its last-writer token; ARGV[1] token, ARGV[2] value -> 1 if written
_FENCED_SET = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < last then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class LanguageLease(Lease):
    """The lease of one language held by ``owner`` (e.g. ``hostname:pid``)."""

    def __init__(self, client: redis.Redis, lang: str, owner: str, ttl_ms: int = 30_000, prefix: str = "compass"):
        self._keys = Keys(prefix)
        super().__init__(client, self._keys.lease(lang), owner, ttl_ms)
        self.lang = lang
        self._fenced_set = client.register_script(_FENCED_SET)

    def fenced_set(self, name: str, value: str | bytes, token: int | None = None) -> bool:
        """Write ``{prefix}:{lang}:name`` only if no holder with a newer token has written it."""
        token = self.token if token is None else token
        if token is None:
            return False
        key = self._keys.language(self.lang, name)
        return bool(self._fenced_set(keys=[key, fence(key)], args=[token, value]))

    def queue_fenced_set(self, pipe: redis.client.Pipeline, name: str, value: str | bytes, token: int) -> None:
        """Add ``fenced_set(name, value, token)`` to ``pipe`` (the same script: fenced alike); its reply in the
        pipeline's results is 1 when written, 0 when a holder with a newer token has written."""
        key = self._keys.language(self.lang, name)
        self._fenced_set(keys=[key, fence(key)], args=[token, value], client=pipe)
