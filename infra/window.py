"""Per-language monitor windows in Redis: W_recent of eq. 4, updated atomically with effectively-once offsets.

Keys of language ``ll`` (all share the hash tag ``{ll}``, so a language lives in one Redis Cluster slot):

  {prefix}:{ll}:window   list   bucket ids of the last N assignments, oldest first (N = window_size)
  {prefix}:{ll}:counts   hash   bucket id -> count of that id in the window (zero counts are removed)
  {prefix}:{ll}:offsets  hash   "topic:partition" -> last applied Kafka offset of this language
  {prefix}:{ll}:recent   list   JSON [id, text] (or [id] when store_texts is false), newest last; capped, TTL
  {prefix}:{ll}:meta     hash   codebook_version (newest seen), lineage, n_buckets, window_size, and ``seen``: a
                                monotone count of the items ever applied (never lowered; gone only with ``reset``)
  {prefix}:{ll}:quality  list   quality scores carried by the events (consumer.quality_meta_key), newest last,
                                capped at QUALITY_MAX; the daemon pops them into its quality detector
  {prefix}:{ll}:ids      zset   event id -> when it was first applied (ms); entries older than the dedup horizon are
                                pruned on every apply (only with ``dedup_horizon_s`` > 0)

One Lua script per language and batch checks each item's offset against ``offsets`` (a re-delivered message
is a duplicate and skipped; so is an id applied within the dedup horizon: a re-sent event at a new offset),
appends, increments, trims the oldest, decrements their counts, records the new
offsets, the recent queries and the quality scores. The script validates everything before its first write, so
a rejected call changes nothing. Invariant after every call: sum(counts) == LLEN(window) <= window_size, no count < 1,
and LLEN(window) <= seen.

``snapshot(lang, since=cursor)`` reads, in the same consistent script, ``seen`` and the *tail*: the bucket ids of the
items applied after the reader's cursor (its ``seen`` of the previous read), oldest first, as far as the window
still holds them (the last min(seen - cursor, LLEN) entries). The drift daemon feeds them to the sequential
detector and the burn-in of compass/drift/lifecycle.py.

The window belongs to one codebook lineage. A codebook version ``L`` (a fit) or ``L.R`` (revision ``R`` of fit
``L``: eq. 2 moved its centroids, cluster ids kept; infra/codebook.py) has lineage ``L``. Bucket ids of another
lineage mean nothing, so a newer lineage resets window and counts (offsets are kept, so nothing is counted
twice); revisions of the same lineage keep the window and meta records the newest version seen. Lineages sort
by time (byte order); an older lineage than the window's is refused with ``StaleCodebookError`` and nothing
written, so consumers of one group that load a new fit a few seconds apart cannot reset a window back and forth.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis
from redis.cluster import RedisCluster

from compass.cluster.codebook import lineage_of
from compass.errors import CompassError
from infra.keys import PREFIX as _PREFIX
from infra.keys import WINDOW_KINDS, Keys

_LANG = re.compile(r"^[a-z]{2,3}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # no path traversal; a non-empty lineage
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic alphabet; never contains ':'
MAX_OFFSET = 2**53  # offsets are compared as Lua numbers (doubles): exact below 2**53
KINDS = WINDOW_KINDS  # the order of the scripts' KEYS
QUALITY_MAX = 100_000  # unread quality scores kept per language (the daemon pops them every check)


class WindowInputError(CompassError, ValueError):
    """An argument of a window call is invalid; nothing was sent to Redis."""


class WindowStateError(CompassError, RuntimeError):
    """The Redis state of a language contradicts the call or itself; nothing was written."""


class StaleCodebookError(CompassError, RuntimeError):
    """A batch was assigned with a codebook of an older lineage than the window's; nothing was written for it.

    ``stale`` maps language -> the window's (newer) version; ``results`` holds the languages of the same
    ``apply_batch`` that were applied. Fix: reload the codebook (``CodebookWatcher.refresh()``), re-assign
    the batch and apply it again; the languages already applied then report duplicates.
    """

    def __init__(self, given: str, stale: Mapping[str, str], results: Mapping[str, ApplyResult] | None = None):
        self.given = given
        self.stale = dict(stale)
        self.results = dict(results or {})
        langs = ", ".join(f"{lang} (window has {v})" for lang, v in sorted(self.stale.items()))
        super().__init__(
            f"codebook_version {given!r} is of an older lineage than the window of {langs}; reload the current "
            "codebook, re-assign the batch and apply it again"
        )


@dataclass(frozen=True)
class Assignment:
    """One query's contribution to its language's window, with the Kafka position it came from."""

    query_id: str
    bucket: int  # cluster id in [0, K), or K for noise (Codebook.assign maps NOISE -> K)
    topic: str
    partition: int
    offset: int
    text: str | None = None  # stored only when the store's store_texts is true
    quality: float | None = None  # a finite quality score from the event (consumer.quality_meta_key)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.query_id, str) or not self.query_id:
            problems.append(f"query_id must be a non-empty string; got {self.query_id!r}")
        if not _is_int(self.bucket) or self.bucket < 0:
            problems.append(f"bucket must be an integer >= 0; got {self.bucket!r}")
        if not isinstance(self.topic, str) or not _TOPIC.match(self.topic):
            problems.append(f"topic must be a Kafka topic name ([A-Za-z0-9._-], 1-249 chars); got {self.topic!r}")
        if not _is_int(self.partition) or self.partition < 0:
            problems.append(f"partition must be an integer >= 0; got {self.partition!r}")
        if not _is_int(self.offset) or not 0 <= self.offset < MAX_OFFSET:
            problems.append(f"offset must be an integer in [0, 2**53); got {self.offset!r}")
        if self.text is not None and not isinstance(self.text, str):
            problems.append(f"text must be a string or None; got {type(self.text).__name__}")
        if self.quality is not None and (not isinstance(self.quality, (int, float)) or isinstance(self.quality, bool)
                                         or not np.isfinite(self.quality)):
            problems.append(f"quality must be a finite number or None; got {self.quality!r}")
        if problems:
            raise WindowInputError(f"Assignment {self.query_id!r}: " + "; ".join(problems))

    @property
    def position(self) -> str:
        """The offsets-hash field of this item's partition."""
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class ApplyResult:
    applied: int  # items counted into the window
    duplicates: int  # items at or below the language's last applied offset of their partition, or resent: skipped
    evicted: int  # oldest items removed to keep the window at window_size
    reset: bool = False  # the window was emptied first because the codebook version changed
    resent: int = 0  # of the duplicates: a new offset but an id applied within the dedup horizon


@dataclass(frozen=True)
class WindowSnapshot:
    lang: str
    counts: np.ndarray  # int64, (n_buckets,): P_mon of eq. 4 is counts / size
    size: int  # LLEN(window) == counts.sum()
    codebook_version: str | None  # the newest version applied in the window's lineage; None: no window yet
    offsets: dict[str, int]  # "topic:partition" -> last applied offset
    seen: int = 0  # items ever applied to the window (meta ``seen``): the cursor of the next ``snapshot(since=)``
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # bucket ids applied after
    # ``since``, oldest first (empty without ``since``)


# KEYS: window, counts, offsets, recent, meta, quality, ids
# ARGV: version, window_size, n_buckets, recent_max, recent_ttl_s, n_items, lineage, then the items packed into
#       six strings (a few long arguments instead of 5 per item: redis-py packs each argument in Python):
#       positions ("topic:partition", "\n"-joined), per item: position index (1-based), offset, bucket
#       (","-joined each), recent entries (JSON, "\n"-joined; JSON never holds a raw newline), quality
#       (","-joined repr of the float, "-" for none); then QUALITY_MAX, the dedup horizon (ms, 0 = off), now (ms)
#       and the ids (a JSON array; "" when the horizon is 0)
# Version strings compared in Lua, as bytes: shared by the window script and the codebook pointer script.
LUA_OLDER = r"""
-- byte order, not Lua's `<` (strcoll: redis-server sets LC_COLLATE from its environment)
local function older(a, b)  -- a sorts before b
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""

# Returns {applied, duplicates, evicted, reset} or {-1, window_version} when the lineage is older.
_APPLY_LUA = LUA_OLDER + r"""
local version, wsize, nb = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rmax, rttl, n, lineage = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local function split(s, pattern)
  local t = {}
  for x in string.gmatch(s, pattern) do t[#t + 1] = x end
  return t
end
local positions = split(ARGV[8], '[^\n]+')
local pidx, offs, buckets = split(ARGV[9], '[^,]+'), split(ARGV[10], '[^,]+'), split(ARGV[11], '[^,]+')
local ents = split(ARGV[12], '[^\n]+')
local quals, qmax = split(ARGV[13], '[^,]+'), tonumber(ARGV[14])
local horizon, now = tonumber(ARGV[15]), tonumber(ARGV[16])
local ids = {}
if horizon > 0 then ids = cjson.decode(ARGV[17]) end
if #pidx ~= n or #offs ~= n or #buckets ~= n or #ents ~= n or #quals ~= n or (horizon > 0 and #ids ~= n) then
  return redis.error_reply('malformed item arguments: expected ' .. n .. ' items')
end


local meta = redis.call('HMGET', KEYS[5], 'codebook_version', 'lineage', 'n_buckets')
local stored, stored_lineage, stored_nb = meta[1], meta[2], meta[3]
if stored_lineage and older(lineage, stored_lineage) then
  return {-1, stored}
end
if stored_lineage == lineage and tonumber(stored_nb) ~= nb then
  return redis.error_reply('codebook lineage ' .. lineage .. ' has n_buckets ' .. stored_nb ..
    ' in the window but ' .. nb .. ' was given; all revisions of a codebook must keep its bucket count')
end
local reset = (stored_lineage ~= lineage)

-- last applied offset per partition: strings kept verbatim (Lua prints large numbers in %.14g)
local last_num, last_str, changed = {}, {}, {}
if #positions > 0 then
  local got = redis.call('HMGET', KEYS[3], unpack(positions))
  for j, p in ipairs(positions) do
    if got[j] then last_num[p] = tonumber(got[j]); last_str[p] = got[j] end
  end
end

local new, entries, scores, dups, resent, fresh, batch_ids = {}, {}, {}, 0, 0, {}, {}
local function seen_recently(id)
  if batch_ids[id] then return true end
  local t = redis.call('ZSCORE', KEYS[7], id)
  return t and tonumber(t) > now - horizon
end
for i = 1, n do
  local p, off_s = positions[tonumber(pidx[i])], offs[i]
  local off = tonumber(off_s)
  if last_num[p] and off <= last_num[p] then
    dups = dups + 1
  elseif horizon > 0 and seen_recently(ids[i]) then
    -- the same event sent again at a new offset: skipped, but its offset is consumed
    dups = dups + 1; resent = resent + 1
    last_num[p] = off; last_str[p] = off_s; changed[p] = true
  else
    if horizon > 0 then batch_ids[ids[i]] = true; fresh[#fresh + 1] = ids[i] end
    last_num[p] = off; last_str[p] = off_s; changed[p] = true
    new[#new + 1] = buckets[i]
    entries[#entries + 1] = ents[i]
    if quals[i] ~= '-' then scores[#scores + 1] = quals[i] end
  end
end

-- the evicted are the first `excess` of (old window ++ new)
local oldlen = 0
if not reset then oldlen = redis.call('LLEN', KEYS[1]) end
local excess = oldlen + #new - wsize
local delta = {}
for _, b in ipairs(new) do delta[b] = (delta[b] or 0) + 1 end
local evicted = 0
if excess > 0 then
  evicted = excess
  local from_old = math.min(excess, oldlen)
  if from_old > 0 then
    for _, b in ipairs(redis.call('LRANGE', KEYS[1], 0, from_old - 1)) do delta[b] = (delta[b] or 0) - 1 end
  end
  for i = 1, excess - from_old do delta[new[i]] = delta[new[i]] - 1 end
end
if not reset then
  for b, d in pairs(delta) do
    if d < 0 and (tonumber(redis.call('HGET', KEYS[2], b)) or 0) + d < 0 then
      return redis.error_reply('counts of bucket ' .. b .. ' disagree with the window list in ' .. KEYS[2] ..
        '; the state was changed outside compass: reset the language and rebuild (compass consume --rebuild)')
    end
  end
end

-- validated: write
if reset then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[5], 'codebook_version', version, 'lineage', lineage, 'n_buckets', nb)
elseif older(stored, version) then
  redis.call('HSET', KEYS[5], 'codebook_version', version)
end
for i = 1, #new, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(new, i, math.min(i + 999, #new)))
end
if excess > 0 then redis.call('LTRIM', KEYS[1], excess, -1) end
for b, d in pairs(delta) do
  if d ~= 0 and redis.call('HINCRBY', KEYS[2], b, d) == 0 then redis.call('HDEL', KEYS[2], b) end
end
for p, _ in pairs(changed) do redis.call('HSET', KEYS[3], p, last_str[p]) end
redis.call('HSET', KEYS[5], 'window_size', wsize)
if #new > 0 then
  -- a window written before `seen` existed: its items count as seen, so that seen >= LLEN holds from now on
  if redis.call('HEXISTS', KEYS[5], 'seen') == 0 then redis.call('HSET', KEYS[5], 'seen', oldlen) end
  redis.call('HINCRBY', KEYS[5], 'seen', #new)
end
if #entries > 0 then
  for i = 1, #entries, 1000 do
    redis.call('RPUSH', KEYS[4], unpack(entries, i, math.min(i + 999, #entries)))
  end
  redis.call('LTRIM', KEYS[4], -rmax, -1)
  redis.call('EXPIRE', KEYS[4], rttl)
end
if #scores > 0 then  -- only first deliveries: a re-delivered event's score is not fed to the detector twice
  for i = 1, #scores, 1000 do
    redis.call('RPUSH', KEYS[6], unpack(scores, i, math.min(i + 999, #scores)))
  end
  redis.call('LTRIM', KEYS[6], -qmax, -1)
end
if horizon > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. (now - horizon))
  for i = 1, #fresh, 500 do
    local args = {}
    for j = i, math.min(i + 499, #fresh) do args[#args + 1] = now; args[#args + 1] = fresh[j] end
    redis.call('ZADD', KEYS[7], unpack(args))
  end
  if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('PEXPIRE', KEYS[7], horizon) end
end
local r = 0
if reset then r = 1 end
return {#new, dups, evicted, r, resent}
"""

# KEYS: window, counts, offsets, meta; ARGV: since (the reader's cursor, or -1: no tail). One consistent read of a
# language: meta, counts, LLEN, offsets, seen, the tail (bucket ids applied after `since`, oldest first).
_SNAPSHOT_LUA = r"""
local size, since = redis.call('LLEN', KEYS[1]), tonumber(ARGV[1])
local seen = tonumber(redis.call('HGET', KEYS[4], 'seen')) or size  -- no `seen` yet: a window of older code
local tail = {}
if since >= 0 then
  local k = seen - since
  if k < 0 or k > size then k = size end  -- a cursor past `seen`: the language was reset, all of it is new
  if k > 0 then tail = redis.call('LRANGE', KEYS[1], -k, -1) end
end
return {redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[2]), size, redis.call('HGETALL', KEYS[3]),
        seen, tail}
"""


class WindowStore:
    """The monitor windows of all languages in one Redis (or Redis Cluster) under ``prefix``."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        prefix: str = "compass",
        *,
        store_texts: bool = True,
        recent_max: int = 5000,
        recent_ttl_s: int = 604800,
        dedup_horizon_s: int = 0,
    ):
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise WindowInputError(f"prefix must use only letters, digits and _.:- ; got {prefix!r}")
        if not _is_int(recent_max) or recent_max < 1:
            raise WindowInputError(f"recent_max must be an integer >= 1; got {recent_max!r}")
        if not _is_int(recent_ttl_s) or recent_ttl_s < 1:
            raise WindowInputError(f"recent_ttl_s must be an integer >= 1 (seconds); got {recent_ttl_s!r}")
        self.client = client
        self.prefix = prefix
        self._keys = Keys(prefix)
        self.store_texts = store_texts
        self.recent_max = recent_max
        self.recent_ttl_s = recent_ttl_s
        if not _is_int(dedup_horizon_s) or dedup_horizon_s < 0:
            raise WindowInputError(f"dedup_horizon_s must be an integer >= 0 (seconds, 0 = off); "
                                   f"got {dedup_horizon_s!r}")
        self.dedup_horizon_s = dedup_horizon_s
        self._apply = client.register_script(_APPLY_LUA)
        self._snapshot = client.register_script(_SNAPSHOT_LUA)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def keys(self, lang: str) -> dict[str, str]:
        """Every key of ``lang`` by kind; all carry the hash tag ``{lang}`` (one Redis Cluster slot)."""
        _check_lang(lang)
        return self._keys.window(lang)

    # ------------------------------------------------------------------ writes

    def apply(
        self, lang: str, window_size: int, codebook_version: str, n_buckets: int, items: Sequence[Assignment]
    ) -> ApplyResult:
        """Apply one language's items in order with one Lua call (atomic); see the module docstring."""
        keys, args = self._script_call(lang, window_size, codebook_version, n_buckets, items)
        try:
            reply = self._apply(keys=keys, args=args)
        except redis.ResponseError as e:  # the script's own validation: nothing was written
            raise WindowStateError(f"window of {lang!r}: {e}") from e
        return self._result(lang, codebook_version, reply)

    def apply_batch(
        self,
        by_lang: Mapping[str, tuple[int, Sequence[Assignment]]],
        codebook_version: str,
        n_buckets: int,
    ) -> dict[str, ApplyResult]:
        """Apply all languages of a poll batch: ``by_lang`` maps lang -> (window_size, items).

        Every input is validated before anything is sent. On a single Redis the scripts run in one MULTI/EXEC:
        no reader sees a half-applied batch and a crash cannot leave one. (A script that refuses its language,
        stale codebook or inconsistent state, writes nothing while the others still apply: Redis has no
        rollback.) On Redis Cluster a language's keys share one slot but languages are spread over slots, so
        each language is atomic on its own: a failure part-way leaves the earlier languages applied. Both are
        safe because a language's offsets are recorded in the same step as its counts: the re-delivered batch
        counts only what was not applied yet.

        Raises ``StaleCodebookError`` (listing the applied languages' results) when ``codebook_version`` is
        older than some language's window; those languages are not written.
        """
        calls = {
            lang: self._script_call(lang, size, codebook_version, n_buckets, items)
            for lang, (size, items) in by_lang.items()
        }
        if not calls:
            return {}
        try:
            if self.is_cluster:
                replies = [self._apply(keys=k, args=a) for k, a in calls.values()]
            else:
                with self.client.pipeline(transaction=True) as pipe:
                    for k, a in calls.values():
                        self._apply(keys=k, args=a, client=pipe)
                    replies = pipe.execute()
        except redis.ResponseError as e:  # a script refused its language (wrote nothing); see the docstring
            raise WindowStateError(f"windows of {', '.join(calls)}: {e}") from e
        results: dict[str, ApplyResult] = {}
        stale: dict[str, str] = {}
        for lang, reply in zip(calls, replies, strict=True):
            if int(reply[0]) < 0:
                stale[lang] = _text(reply[1])
            else:
                results[lang] = _apply_result(reply)
        if stale:
            raise StaleCodebookError(codebook_version, stale, results)
        return results

    def reset(self, lang: str | None = None) -> None:
        """Delete the state of ``lang`` (window, counts, offsets, recent, meta), or of every language.

        For ``compass consume --rebuild``: after a reset the offsets are gone too, so re-reading the topic
        counts every message again.
        """
        langs = [lang] if lang is not None else self.languages()
        for code in langs:
            self.client.delete(*self.keys(code).values())  # one slot per language: valid on Redis Cluster

    # ------------------------------------------------------------------ reads

    def snapshot(self, lang: str, since: int | None = None) -> WindowSnapshot:
        """One consistent read of ``lang``'s window (a read-only script: nothing interleaves).

        With ``since`` (the ``seen`` of the reader's previous snapshot; 0 for a first read) the snapshot's ``tail``
        holds the bucket ids applied after it, oldest first: the last min(seen - since, size) of the window (all of
        it when ``since`` > ``seen``, i.e. the language was reset since)."""
        if since is not None and (not _is_int(since) or since < 0):
            raise WindowInputError(f"since must be an integer >= 0 (a previous snapshot's seen) or None; got {since!r}")
        k = self.keys(lang)
        meta_raw, counts_raw, size, offsets_raw, seen, tail_raw = self._snapshot(
            keys=[k["window"], k["counts"], k["offsets"], k["meta"]], args=[-1 if since is None else int(since)]
        )
        meta = _pairs(meta_raw)
        version = meta.get("codebook_version")
        n_buckets = int(meta.get("n_buckets", 0))
        counts = np.zeros(n_buckets, dtype=np.int64)
        for bucket, count in _pairs(counts_raw).items():
            b = int(bucket)
            if not 0 <= b < n_buckets:
                raise WindowStateError(
                    f"{k['counts']}: bucket {b} outside [0, {n_buckets}) of codebook {version!r}; the state was "
                    "changed outside compass: reset the language and rebuild (compass consume --rebuild)"
                )
            counts[b] = int(count)
        offsets = {p: int(o) for p, o in _pairs(offsets_raw).items()}
        tail = np.fromiter((int(b) for b in tail_raw), dtype=np.int64, count=len(tail_raw))
        return WindowSnapshot(lang, counts, int(size), version, offsets, int(seen), tail)

    def recent(self, lang: str, limit: int | None = None) -> list[tuple[str, str | None]]:
        """The recent queries of ``lang`` as (id, text or None), newest last; at most ``limit`` of them."""
        if limit is not None and (not _is_int(limit) or limit < 0):
            raise WindowInputError(f"limit must be an integer >= 0 or None; got {limit!r}")
        if limit == 0:
            return []
        start = -limit if limit is not None else 0
        out = []
        for raw in self.client.lrange(self.keys(lang)["recent"], start, -1):
            entry = json.loads(raw)
            out.append((entry[0], entry[1] if len(entry) > 1 else None))
        return out

    def languages(self) -> list[str]:
        """Languages that have a window (a meta hash), sorted."""
        found = set()
        for key in self.client.scan_iter(match=self._keys.every_language("meta"), count=1000):
            lang = self._keys.language_of(_text(key), "meta")
            if lang is not None and _LANG.match(lang):
                found.add(lang)
        return sorted(found)

    # ------------------------------------------------------------------ helpers

    def _script_call(
        self, lang: str, window_size: int, version: str, n_buckets: int, items: Sequence[Assignment]
    ) -> tuple[list[str], list[str | int]]:
        keys = self.keys(lang)  # validates lang
        problems = []
        if not _is_int(window_size) or window_size < 1:
            problems.append(f"window_size must be an integer >= 1; got {window_size!r}")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            problems.append(
                f"codebook_version must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit; got {version!r}"
            )
        if not _is_int(n_buckets) or n_buckets < 1:
            problems.append(f"n_buckets must be an integer >= 1 (clusters + 1 noise bucket); got {n_buckets!r}")
        if problems:
            raise WindowInputError(f"window of {lang!r}: " + "; ".join(problems))
        positions: dict[str, int] = {}
        pidx, offsets, buckets, entries, quality = [], [], [], [], []
        for i, item in enumerate(items):
            if not isinstance(item, Assignment):
                raise WindowInputError(f"window of {lang!r}: item {i} is {type(item).__name__}, not Assignment")
            if item.bucket >= n_buckets:
                raise WindowInputError(
                    f"window of {lang!r}: item {i} ({item.query_id!r}) has bucket {item.bucket}, outside "
                    f"[0, {n_buckets}) of codebook {version!r}; assign with that codebook (noise -> {n_buckets - 1})"
                )
            pidx.append(positions.setdefault(item.position, len(positions) + 1))
            offsets.append(item.offset)
            buckets.append(item.bucket)
            entry = [item.query_id, item.text] if self.store_texts and item.text is not None else [item.query_id]
            entries.append(json.dumps(entry, ensure_ascii=False))
            quality.append("-" if item.quality is None else repr(float(item.quality)))
        args: list[str | int] = [
            version, window_size, n_buckets, self.recent_max, self.recent_ttl_s, len(items), lineage_of(version),
            "\n".join(positions), ",".join(map(str, pidx)), ",".join(map(str, offsets)),
            ",".join(map(str, buckets)), "\n".join(entries), ",".join(quality), QUALITY_MAX,
            self.dedup_horizon_s * 1000, int(time.time() * 1000),
            json.dumps([item.query_id for item in items], ensure_ascii=False) if self.dedup_horizon_s else "",
        ]
        return [keys[kind] for kind in KINDS], args

    def _result(self, lang: str, version: str, reply: list) -> ApplyResult:
        if int(reply[0]) < 0:
            raise StaleCodebookError(version, {lang: _text(reply[1])})
        return _apply_result(reply)


def _apply_result(reply: list) -> ApplyResult:
    return ApplyResult(int(reply[0]), int(reply[1]), int(reply[2]), bool(int(reply[3])), int(reply[4]))


def _check_lang(lang: str) -> None:
    if not isinstance(lang, str) or not _LANG.match(lang):
        raise WindowInputError(
            f"lang must be a compass language code (2-3 lowercase letters, compass/langcodes.py); got {lang!r}"
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _pairs(flat: list) -> dict[str, str]:
    """A HGETALL reply inside a script comes back as a flat [field, value, ...] list."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
