"""The shared rates of capped sampling (``sampling.max_per_second``, compass/sampling.py) in Redis.

A cap needs the language's traffic, and the traffic of a consumer group is spread over its workers: no worker
sees it whole. So the workers count it together, per time bucket of the events' own time (the event ``ts``, else
the Kafka timestamp, never past the consumer's clock: the same time the unserved counts use), and the rate of a
bucket is decided once, from the previous bucket's count, and frozen:

  {prefix}:{ll}:traffic:<b>   string  the language's queries counted in bucket b by every worker (INCRBY)
  {prefix}:{ll}:rate:<b>      string  the rate of bucket b, set by the first worker that needed it (never changed)

Both expire ``ttl_s`` after they were last written. One Lua call per language and batch walks the batch's buckets
oldest first: it reads (or freezes) the bucket's rate, then adds the batch's queries of that bucket to its count,
so a batch that spans buckets b-1 and b has counted its b-1 queries before b's rate is decided.

What this guarantees: every worker, a re-delivery and a replay within ``ttl_s`` read the same frozen rate for a
bucket, and ``keep(id, rate)`` is a function of the id: the same queries are kept everywhere. What it does not: the
count is not exactly-once (a re-delivered batch is counted again, which can only lower a later bucket's rate a
little), and a bucket is decided on what b-1 had counted when b's first query arrived (a worker that lags behind
the others counts late). A sudden surge is sampled at the previous bucket's rate for one bucket; a quiet previous
bucket (no count) gives rate 1: keep everything rather than guess.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis

from compass.params import is_int
from infra.keys import Keys
from infra.window.errors import WindowInputError
from infra.window.types import LANG_RE

# KEYS: per bucket, oldest first: traffic:b, rate:b, traffic:b-1. ARGV: cap (queries/s), bucket_s, ttl_s, then the
# batch's count per bucket. Returns the rates as strings (what was frozen, parsed alike by every worker).
RATES_LUA = r"""
local cap, bs, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for j = 1, #KEYS / 3 do
  local tk, rk, pk = KEYS[3 * j - 2], KEYS[3 * j - 1], KEYS[3 * j]
  local r = redis.call('GET', rk)
  if not r then
    -- compass.sampling.capped_rate, in the same doubles
    local prev = tonumber(redis.call('GET', pk) or '0')
    local rate = 1
    if prev > 0 then rate = math.min(1, cap * bs / prev) end
    r = string.format('%.17g', rate)
    redis.call('SET', rk, r, 'EX', ttl)
  end
  local n = tonumber(ARGV[3 + j])
  if n > 0 then
    redis.call('INCRBY', tk, n)
    redis.call('EXPIRE', tk, ttl)
  end
  out[#out + 1] = r
end
return out
"""


class SamplingRates:
    """The frozen rates of capped languages, per bucket of ``bucket_s`` seconds (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str = "compass", *, bucket_s: int = 10, ttl_s: int = 86400):
        for name, value, low in (("bucket_s", bucket_s, 1), ("ttl_s", ttl_s, 60)):
            if not is_int(value, allow_numpy=True) or value < low:
                raise WindowInputError(f"{name} must be an integer >= {low} (seconds); got {value!r}")
        self.client, self.keys = client, Keys(prefix)
        self.bucket_s, self.ttl_s = int(bucket_s), int(ttl_s)
        self._rates = client.register_script(RATES_LUA)

    def bucket_of(self, at_ms: int) -> int:
        return int(at_ms) // (1000 * self.bucket_s)

    def rates(self, counts: Mapping[str, Counter], caps: Mapping[str, float]) -> dict[tuple[str, int], float]:
        """Count a batch and read its rates: ``counts`` maps a capped language to its queries per bucket in this
        batch, ``caps`` the language to its ``max_per_second``. Returns (language, bucket) -> the frozen rate.
        One round trip (a pipeline of one script call per language; each language's keys share one slot)."""
        calls = []
        for lang, per_bucket in counts.items():
            if not isinstance(lang, str) or not LANG_RE.match(lang):
                raise WindowInputError(f"lang must be a compass language code (2-3 lowercase letters); got {lang!r}")
            cap = caps[lang]
            buckets = sorted(per_bucket)
            keys = [k for b in buckets for k in (self.keys.sampling_traffic(lang, b),
                                                 self.keys.sampling_rate(lang, b),
                                                 self.keys.sampling_traffic(lang, b - 1))]
            calls.append((lang, buckets, keys, [repr(float(cap)), self.bucket_s, self.ttl_s,
                                                *(int(per_bucket[b]) for b in buckets)]))
        if not calls:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for _, _, keys, args in calls:
                self._rates(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
        out: dict[tuple[str, int], float] = {}
        for (lang, buckets, _, _), reply in zip(calls, replies, strict=True):
            for b, r in zip(buckets, reply, strict=True):
                out[(lang, b)] = float(r)
        return out

    def traffic(self, lang: str, bucket: int) -> int:
        """The queries of ``lang`` counted in ``bucket`` (0 when none or expired)."""
        return int(self.client.get(self.keys.sampling_traffic(lang, bucket)) or 0)


__all__ = ["RATES_LUA", "SamplingRates"]
