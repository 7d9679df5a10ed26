"""The shared rates of capped sampling (``sampling.max_per_second``, compass/sampling.py) in Redis.

A cap needs the language's traffic, and the traffic of a consumer group is spread over its workers: no worker
sees it whole. So the workers count it together, per time bucket of the events' own time (``bucket_s``, 1 s by
default; the event ``ts``, else the Kafka timestamp, never past the consumer's clock: the time the unserved counts
use), and the rate of a bucket is decided once, from the counts of the ``lookback`` buckets before it
(``compass.sampling.capped_rate``), and frozen. One hash per language and epoch of ``EPOCH_BUCKETS`` buckets:

  {prefix}:{ll}:sampling:<epoch>   hash   n:<b> -> the language's queries counted in bucket b by every worker;
                                          r:<b> -> the rate of bucket b, set by the first worker that needed it

expiring ``ttl_s`` after its last write (memory: about 2 fields of ~50 bytes per bucket kept, ~0.4 MB per capped
language at 1 s buckets and an hour's ttl). One Lua call per language and batch walks the batch's buckets oldest
first: it reads (or freezes) the bucket's rate, then adds the batch's queries of that bucket to its count, so a
batch that spans buckets b-1 and b has counted its b-1 queries before b's rate is decided.

What this guarantees: every worker, a re-delivery and a replay within ``ttl_s`` read the same frozen rate for a
bucket, and ``keep(id, rate)`` is a function of the id: the same queries are kept everywhere. What it does not: the
count is not exactly-once (a re-delivered batch is counted again, which can only lower a later bucket's rate a
little), and a bucket is decided on what the look-back had counted when its first query arrived (a worker that
lags behind the others counts late). A surge is sampled at the rate of the traffic before it for one bucket; a
language with no count in the look-back keeps everything (no evidence of load).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis

from compass.params import is_int
from infra.keys import Keys
from infra.window.errors import WindowInputError
from infra.window.types import LANG_RE

EPOCH_BUCKETS = 600  # buckets per hash: old epochs expire whole

# KEYS: the epoch hashes the call touches. ARGV: cap (queries/s), bucket_s, ttl_s, lookback (buckets), EPOCH_BUCKETS,
# the number of epochs, the epochs (in KEYS order), then (bucket, count) pairs of the batch, oldest bucket first.
# Returns the rates as strings (what was frozen, parsed alike by every worker).
RATES_LUA = r"""
local cap, bs, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lookback, per_epoch, ne = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keyof = {}
for i = 1, ne do keyof[tonumber(ARGV[6 + i])] = KEYS[i] end
local function key(b) return keyof[math.floor(b / per_epoch)] end
local out = {}
for j = 7 + ne, #ARGV, 2 do
  local b, n = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  local k = key(b)
  local r = redis.call('HGET', k, 'r:' .. b)
  if not r then
    -- compass.sampling.capped_rate, in the same doubles and order of operations
    local total, span = 0, 0
    for i = 1, lookback do
      local c = tonumber(redis.call('HGET', key(b - i), 'n:' .. (b - i)) or '0')
      if c > 0 then total = total + c; span = i end
    end
    local rate = 1
    if total > 0 then rate = math.min(1, cap * span * bs / total) end
    r = string.format('%.17g', rate)
    redis.call('HSET', k, 'r:' .. b, r)
  end
  if n > 0 then redis.call('HINCRBY', k, 'n:' .. b, n) end
  redis.call('EXPIRE', k, ttl)
  out[#out + 1] = r
end
return out
"""


class SamplingRates:
    """The frozen rates of capped languages, per bucket of ``bucket_s`` seconds (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str = "compass", *, bucket_s: int = 1, lookback_s: int = 10,
                 ttl_s: int = 3600):
        for name, value, low in (("bucket_s", bucket_s, 1), ("lookback_s", lookback_s, 1), ("ttl_s", ttl_s, 60)):
            if not is_int(value, allow_numpy=True) or value < low:
                raise WindowInputError(f"{name} must be an integer >= {low} (seconds); got {value!r}")
        if lookback_s < bucket_s or lookback_s > EPOCH_BUCKETS * bucket_s:
            raise WindowInputError(f"lookback_s must be in [bucket_s, {EPOCH_BUCKETS} * bucket_s] = [{bucket_s}, "
                                   f"{EPOCH_BUCKETS * bucket_s}] seconds; got {lookback_s!r}")
        self.client, self.keys = client, Keys(prefix)
        self.bucket_s, self.ttl_s = int(bucket_s), int(ttl_s)
        self.lookback = int(lookback_s) // int(bucket_s)
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
            buckets = sorted(per_bucket)
            epochs = sorted({b // EPOCH_BUCKETS for b in buckets}
                            | {(b - self.lookback) // EPOCH_BUCKETS for b in buckets})
            args = [repr(float(caps[lang])), self.bucket_s, self.ttl_s, self.lookback, EPOCH_BUCKETS, len(epochs),
                    *epochs, *(x for b in buckets for x in (b, int(per_bucket[b])))]
            calls.append((lang, buckets, [self.keys.sampling(lang, e) for e in epochs], args))
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
        return int(self.client.hget(self.keys.sampling(lang, bucket // EPOCH_BUCKETS), f"n:{int(bucket)}") or 0)


__all__ = ["EPOCH_BUCKETS", "RATES_LUA", "SamplingRates"]
