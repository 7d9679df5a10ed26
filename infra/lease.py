"""A lease in Redis: one holder at a time, with a fencing token that grows on every acquire.

Acquire is ``SET key owner NX PX ttl`` plus ``INCR key:fence`` in one script; renew and release compare the
owner first, so a holder whose lease expired can neither extend nor drop a newer holder's. The daemon's
per-language lease (infra/lock.py) and the consumers' codebook-revision publisher both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from infra.keys import fence

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


class Lease:
    """The lease ``key`` as held by ``owner`` (e.g. ``hostname:pid:rand``); ``token`` is our fencing token."""

    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_ms: int = 30_000):
        if ttl_ms < 100:
            raise ValueError(f"The 'ttl_ms' parameter of {type(self).__name__} must be >= 100. Got {ttl_ms} instead.")
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        # one script touches lease and fence: on Redis Cluster both must hash to one slot (infra/keys.py fence)
        self._fence_key = fence(key)
        self.token: int | None = None  # fencing token of the current hold
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> int | None:
        """The fencing token if this owner now holds the lease, else None (someone else holds it)."""
        token = self._acquire(keys=[self.key, self._fence_key], args=[self.owner, self.ttl_ms])
        self.token = int(token) if token else None
        return self.token

    def renew(self) -> bool:
        """Extend our hold by the TTL; False when the lease was lost (expired, taken by another holder)."""
        ok = bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))
        if not ok:
            self.token = None
        return ok

    def hold(self) -> int | None:
        """Renew a hold we have, else try to take the lease: our fencing token, or None."""
        if self.token is not None and self.renew():
            return self.token
        return self.acquire()

    def release(self) -> bool:
        released = bool(self._release(keys=[self.key], args=[self.owner]))
        self.token = None
        return released

    def holder(self) -> str | None:
        raw = self.client.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw


def hold_many(client: redis.Redis, leases: Sequence[Lease]) -> list[int | None | Exception]:
    """``lease.hold()`` of every lease of ``leases`` in (usually) one round trip: the renewals of the leases held,
    pipelined, then the acquires of the others and of those lost, pipelined; the results in their order. A lease
    whose call failed maps to that exception (its token is left as is). The same scripts as ``hold``: a batch
    fences exactly as the calls one by one. On Redis Cluster a pipeline cannot span slots: call ``hold`` each."""
    out: list[int | None | Exception] = [None] * len(leases)
    held = [i for i, lease in enumerate(leases) if lease.token is not None]
    free = [i for i, lease in enumerate(leases) if lease.token is None]
    if held:
        with client.pipeline(transaction=False) as pipe:
            for i in held:
                lease = leases[i]
                lease._renew(keys=[lease.key], args=[lease.owner, lease.ttl_ms], client=pipe)
            replies = pipe.execute(raise_on_error=False)
        for i, reply in zip(held, replies, strict=True):
            if isinstance(reply, Exception):
                out[i] = reply
            elif reply:
                out[i] = leases[i].token
            else:  # lost (expired, taken): try to take it again, as hold does
                leases[i].token = None
                free.append(i)
    if free:
        with client.pipeline(transaction=False) as pipe:
            for i in free:
                lease = leases[i]
                lease._acquire(keys=[lease.key, lease._fence_key], args=[lease.owner, lease.ttl_ms], client=pipe)
            replies = pipe.execute(raise_on_error=False)
        for i, reply in zip(free, replies, strict=True):
            if isinstance(reply, Exception):
                out[i] = reply
            else:
                leases[i].token = out[i] = int(reply) if reply else None
    return out
