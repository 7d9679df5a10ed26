"""A per-language lease in Redis so that exactly one daemon replica acts for a language at a time.

Acquire is ``SET key owner NX PX ttl``; every successful acquire also takes a fencing token from a
per-language counter (INCR), strictly larger than any earlier holder's. A replica that stalls past its
TTL (GC pause, network partition) may still believe it holds the lease; writes guarded by
``fenced_set`` carry the token and are refused once a newer holder has written, so the stale replica
cannot overwrite state or double-trigger. Keys are hash-tagged per language (Redis Cluster).
"""

from __future__ import annotations

import redis

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] ttl ms -> fencing token or false
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""
# KEYS[1] lease; ARGV[1] owner, ARGV[2] ttl ms -> 1 if renewed
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] lease; ARGV[1] owner -> 1 if released
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
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


class LanguageLease:
    """The lease of one language held by ``owner`` (e.g. ``hostname:pid``)."""

    def __init__(self, client: redis.Redis, lang: str, owner: str, ttl_ms: int = 30_000, prefix: str = "compass"):
        if ttl_ms < 100:
            raise ValueError(f"The 'ttl_ms' parameter of LanguageLease must be >= 100. Got {ttl_ms} instead.")
        self.client = client
        self.lang = lang
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._tag = f"{prefix}:{{{lang}}}"
        self.key = f"{self._tag}:lease"
        self._fence_key = f"{self._tag}:lease:fence"
        self.token: int | None = None  # fencing token of the current hold
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced_set = client.register_script(_FENCED_SET)

    def acquire(self) -> int | None:
        """The fencing token if this owner now holds the lease, else None (someone else holds it)."""
        token = self._acquire(keys=[self.key, self._fence_key], args=[self.owner, self.ttl_ms])
        self.token = int(token) if token else None
        return self.token

    def renew(self) -> bool:
        """Extend our hold by the TTL; False when the lease was lost (expired, taken by another replica)."""
        ok = bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))
        if not ok:
            self.token = None
        return ok

    def release(self) -> bool:
        released = bool(self._release(keys=[self.key], args=[self.owner]))
        self.token = None
        return released

    def holder(self) -> str | None:
        raw = self.client.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def fenced_set(self, name: str, value: str | bytes, token: int | None = None) -> bool:
        """Write ``{prefix}:{lang}:name`` only if no holder with a newer token has written it."""
        token = self.token if token is None else token
        if token is None:
            return False
        key = f"{self._tag}:{name}"
        return bool(self._fenced_set(keys=[key, f"{key}:fence"], args=[token, value]))
