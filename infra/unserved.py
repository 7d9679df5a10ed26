"""Unserved languages in Redis: traffic of languages no configured adapter serves, counted exactly once (issue 12).

A query whose language is not enabled in languages.yaml, or undetermined (``und``), never enters a configured
language's window (compass/route/decision.py ``classify``); the monitor counts it here instead. Served queries are
counted here too (one number per time bucket) so that a language's share of all traffic can be read.

Keys (all share the hash tag ``{unserved}``: one Redis Cluster slot, so one script sees them all; a language code
is 2-3 letters, so the tag never collides with a language's ``{ll}``):

  {prefix}:{unserved}:counts          hash   language -> unserved queries ever counted (``und`` included)
  {prefix}:{unserved}:offsets         hash   "topic:partition" -> last Kafka offset counted here
  {prefix}:{unserved}:bucket:<b>      hash   ``_served`` -> served queries, language -> unserved queries, of the
                                             queries timed in [b * bucket_s, (b + 1) * bucket_s) (event ``ts``, else
                                             the Kafka timestamp, never later than the consumer's clock); expires
                                             ``retention_s`` (daemon.emerging_horizon_s) after the bucket's end
  {prefix}:{unserved}:samples:<ll>    list   the newest ``samples_max`` query ids of unserved language ``ll``,
                                             newest last; expires ``samples_ttl_s`` after the last write
  {prefix}:{unserved}:emerging        string the daemon's episodes (compass/drift/emerging.py), JSON, written
                                             fenced (``...:emerging:fence``) under the daemon's lease
                                             ``{prefix}:{unserved}:lease`` (daemon/scheduler/unserved.py)

Exactly once, like infra/window/: one Lua call per batch compares each message's offset with ``offsets``
(a re-delivered message is a duplicate and skipped), then increments, pushes the samples and records the new
offsets. The monitor calls it after the window write and before the offset commit; the two keep offsets of
their own, so a crash between them re-delivers the batch and each skips what it already counted.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from compass.params import is_int
from infra.keys import PREFIX as _PREFIX
from infra.keys import UNSERVED, Keys
from infra.window.errors import WindowInputError
from infra.window.replies import pairs, text
from infra.window.types import LANG_RE, MAX_OFFSET, TOPIC_RE

TAG = UNSERVED  # the hash tag of every key here (infra/keys.py)
SERVED_FIELD = "_served"  # the served count of a bucket (never a language code: those are 2-3 letters)
_ID_MAX = 256  # a sample id longer than this is cut (ids are for looking queries up, not for storage)


@dataclass(frozen=True)
class Traffic:
    """One well-formed query's contribution: served (a configured language) or unserved (its detected language)."""

    query_id: str
    lang: str  # the detected (or given) language; ``und`` when undetermined
    served: bool
    topic: str
    partition: int
    offset: int
    at_ms: int  # when it was asked (epoch ms): selects its time bucket

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.query_id, str) or not self.query_id:
            problems.append(f"query_id must be a non-empty string; got {self.query_id!r}")
        if not isinstance(self.lang, str) or not LANG_RE.match(self.lang):
            problems.append(f"lang must be a compass language code (2-3 lowercase letters); got {self.lang!r}")
        if not isinstance(self.topic, str) or not TOPIC_RE.match(self.topic):
            problems.append(f"topic must be a Kafka topic name; got {self.topic!r}")
        if not is_int(self.partition, allow_numpy=True) or self.partition < 0:
            problems.append(f"partition must be an integer >= 0; got {self.partition!r}")
        if not is_int(self.offset, allow_numpy=True) or not 0 <= self.offset < MAX_OFFSET:
            problems.append(f"offset must be an integer in [0, 2**53); got {self.offset!r}")
        if not is_int(self.at_ms, allow_numpy=True) or self.at_ms < 0:
            problems.append(f"at_ms must be an integer >= 0 (epoch milliseconds); got {self.at_ms!r}")
        if problems:
            raise WindowInputError(f"Traffic {self.query_id!r}: " + "; ".join(problems))


@dataclass(frozen=True)
class UnservedResult:
    served: int  # served queries counted (first deliveries)
    unserved: Counter  # unserved queries counted, by language (first deliveries)
    duplicates: int  # messages at or below the last counted offset of their partition: skipped
    duplicates_unserved: int  # of those, unserved ones


@dataclass(frozen=True)
class UnservedReading:
    """Counts over a horizon (the buckets overlapping it) and since the start."""

    served: int  # served queries in the horizon
    counts: dict[str, int]  # unserved queries in the horizon, by language
    totals: dict[str, int]  # unserved queries ever counted, by language
    first_bucket: int
    last_bucket: int

    @property
    def total(self) -> int:
        return self.served + sum(self.counts.values())


# KEYS: counts, offsets, the batch's bucket keys (nb), its sample keys (ns)
# ARGV[1]: JSON {positions: ["topic:partition"], expire_at: [per bucket key], samples_max, samples_ttl,
#   items: [[position index, "offset", bucket index, lang ('' for served), sample index (0: none), id]]}
# Returns {served, dups, dups_unserved, lang1, n1, lang2, n2, ...}. Offsets travel as strings (kept verbatim).
_APPLY_LUA = r"""
local a = cjson.decode(ARGV[1])
local positions, nb = a.positions, #a.expire_at
local last_num, last_str, changed = {}, {}, {}
if #positions > 0 then
  local got = redis.call('HMGET', KEYS[2], unpack(positions))
  for j, p in ipairs(positions) do
    if got[j] then last_num[p] = tonumber(got[j]); last_str[p] = got[j] end
  end
end
local per_bucket, totals, order, samples = {}, {}, {}, {}
local served, dups, dups_u = 0, 0, 0
for _, it in ipairs(a.items) do
  local p, off_s, b, lang, s = positions[it[1]], it[2], it[3], it[4], it[5]
  local off = tonumber(off_s)
  if last_num[p] and off <= last_num[p] then
    dups = dups + 1
    if lang ~= '' then dups_u = dups_u + 1 end
  else
    last_num[p] = off; last_str[p] = off_s; changed[p] = true
    local field = lang
    if lang == '' then
      field = '_served'; served = served + 1
    else
      if not totals[lang] then totals[lang] = 0; order[#order + 1] = lang end
      totals[lang] = totals[lang] + 1
      samples[s] = samples[s] or {}
      table.insert(samples[s], it[6])
    end
    per_bucket[b] = per_bucket[b] or {}
    per_bucket[b][field] = (per_bucket[b][field] or 0) + 1
  end
end
for b, fields in pairs(per_bucket) do
  for f, n in pairs(fields) do redis.call('HINCRBY', KEYS[2 + b], f, n) end
  redis.call('EXPIREAT', KEYS[2 + b], a.expire_at[b])  -- in the past (an old query): gone at once, as it should
end
for _, lang in ipairs(order) do redis.call('HINCRBY', KEYS[1], lang, totals[lang]) end
for s, ids in pairs(samples) do
  local key = KEYS[2 + nb + s]
  for i = 1, #ids, 1000 do redis.call('RPUSH', key, unpack(ids, i, math.min(i + 999, #ids))) end
  redis.call('LTRIM', key, -a.samples_max, -1)
  redis.call('EXPIRE', key, a.samples_ttl)
end
for p, _ in pairs(changed) do redis.call('HSET', KEYS[2], p, last_str[p]) end
local out = {served, dups, dups_u}
for _, lang in ipairs(order) do out[#out + 1] = lang; out[#out + 1] = totals[lang] end
return out
"""

# KEYS: counts, then the bucket keys of the horizon. Returns {HGETALL counts, flat field -> sum over the buckets}.
_READ_LUA = r"""
local sums, order = {}, {}
for i = 2, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  for j = 1, #flat, 2 do
    local f = flat[j]
    if not sums[f] then sums[f] = 0; order[#order + 1] = f end
    sums[f] = sums[f] + tonumber(flat[j + 1])
  end
end
local out = {}
for _, f in ipairs(order) do out[#out + 1] = f; out[#out + 1] = tostring(sums[f]) end
return {redis.call('HGETALL', KEYS[1]), out}
"""


class UnservedStore:
    """The unserved-language counts under ``prefix`` (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str = "compass", *, bucket_s: int = 60,
                 retention_s: int = 86400, samples_max: int = 20, samples_ttl_s: int = 604800):
        problems = []
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            problems.append(f"prefix must use only letters, digits and _.:- ; got {prefix!r}")
        for name, value in (("bucket_s", bucket_s), ("retention_s", retention_s), ("samples_max", samples_max),
                            ("samples_ttl_s", samples_ttl_s)):
            if not is_int(value, allow_numpy=True) or value < 1:
                problems.append(f"{name} must be an integer >= 1; got {value!r}")
        if problems:
            raise WindowInputError("UnservedStore: " + "; ".join(problems))
        self.client = client
        self.prefix = prefix
        self._keys = Keys(prefix)
        self.bucket_s, self.retention_s = int(bucket_s), int(retention_s)
        self.samples_max, self.samples_ttl_s = int(samples_max), int(samples_ttl_s)
        self._apply = client.register_script(_APPLY_LUA)
        self._read = client.register_script(_READ_LUA)

    # ------------------------------------------------------------------ keys

    def key(self, name: str) -> str:
        return self._keys.unserved(name)

    def bucket_key(self, bucket: int) -> str:
        return self._keys.unserved_bucket(bucket)

    def samples_key(self, lang: str) -> str:
        return self._keys.unserved_samples(lang)

    def bucket_of(self, at_ms: int) -> int:
        return int(at_ms) // (1000 * self.bucket_s)

    # ------------------------------------------------------------------ writes

    def apply(self, items: Sequence[Traffic]) -> UnservedResult:
        """Count one batch's queries in order with one Lua call (atomic); see the module docstring."""
        if not items:
            return UnservedResult(0, Counter(), 0, 0)
        positions: dict[str, int] = {}
        buckets: dict[int, int] = {}
        sample_langs: dict[str, int] = {}
        packed = []
        for i, t in enumerate(items):
            if not isinstance(t, Traffic):
                raise WindowInputError(f"unserved counts: item {i} is {type(t).__name__}, not Traffic")
            p = positions.setdefault(f"{t.topic}:{t.partition}", len(positions) + 1)
            b = buckets.setdefault(self.bucket_of(t.at_ms), len(buckets) + 1)
            s = 0 if t.served else sample_langs.setdefault(t.lang, len(sample_langs) + 1)
            packed.append([p, str(t.offset), b, "" if t.served else t.lang, s, t.query_id[:_ID_MAX]])
        expire_at = [(b + 1) * self.bucket_s + self.retention_s for b in buckets]
        arg = {"positions": list(positions), "expire_at": expire_at, "samples_max": self.samples_max,
               "samples_ttl": self.samples_ttl_s, "items": packed}
        keys = [self.key("counts"), self.key("offsets"), *(self.bucket_key(b) for b in buckets),
                *(self.samples_key(lang) for lang in sample_langs)]
        reply = self._apply(keys=keys, args=[json.dumps(arg, ensure_ascii=False, separators=(",", ":"))])
        langs = Counter({text(reply[i]): int(reply[i + 1]) for i in range(3, len(reply), 2)})
        return UnservedResult(int(reply[0]), langs, int(reply[1]), int(reply[2]))

    def reset(self) -> None:
        """Delete every unserved count, bucket, sample list and offset (the daemon's episodes are kept)."""
        keys = [self.key("counts"), self.key("offsets")]
        for pattern in ("bucket:*", "samples:*"):
            keys += list(self.client.scan_iter(match=self.key(pattern), count=1000))
        if keys:
            self.client.delete(*keys)

    # ------------------------------------------------------------------ reads

    def read(self, now: float, horizon_s: float) -> UnservedReading:
        """Served and unserved counts of the buckets overlapping (now - horizon_s, now], one consistent read."""
        if not isinstance(now, int | float) or not math.isfinite(now) or now < 0:
            raise WindowInputError(f"now must be a finite number of unix seconds >= 0; got {now!r}")
        if not isinstance(horizon_s, int | float) or not math.isfinite(horizon_s) or horizon_s <= 0:
            raise WindowInputError(f"horizon_s must be a number of seconds > 0; got {horizon_s!r}")
        first, last = int((now - horizon_s) // self.bucket_s), int(now // self.bucket_s)
        keys = [self.key("counts"), *(self.bucket_key(b) for b in range(max(first, 0), last + 1))]
        totals_raw, sums_raw = self._read(keys=keys, args=[])
        sums = {f: int(v) for f, v in pairs(sums_raw).items()}
        served = sums.pop(SERVED_FIELD, 0)
        totals = {lang: int(v) for lang, v in pairs(totals_raw).items()}
        return UnservedReading(served, dict(sorted(sums.items())), dict(sorted(totals.items())), first, last)

    def totals(self) -> dict[str, int]:
        """Unserved queries ever counted, by language."""
        return {text(k): int(v) for k, v in sorted(self.client.hgetall(self.key("counts")).items())}

    def samples(self, lang: str, limit: int | None = None) -> list[str]:
        """The newest sample query ids of ``lang``, newest last."""
        if limit is not None and (not is_int(limit, allow_numpy=True) or limit < 0):
            raise WindowInputError(f"limit must be an integer >= 0 or None; got {limit!r}")
        if limit == 0:
            return []
        return [text(x) for x in self.client.lrange(self.samples_key(lang), -(limit or self.samples_max), -1)]

    def offsets(self) -> dict[str, int]:
        return {text(k): int(v) for k, v in self.client.hgetall(self.key("offsets")).items()}
