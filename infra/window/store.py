"""Per-language monitor windows in Redis: W_recent of eq. 4, updated atomically with effectively-once offsets.

Keys of language ``ll`` (all share the hash tag ``{ll}``, so a language lives in one Redis Cluster slot):

  {prefix}:{ll}:window   list   bucket ids of the last N assignments, oldest first (N = window_size)
  {prefix}:{ll}:counts   hash   bucket id -> count of that id in the window (zero counts are removed)
  {prefix}:{ll}:offsets  hash   "topic:partition" -> last applied Kafka offset of this language
  {prefix}:{ll}:recent   list   JSON [id, text] or [id, text, response] (a labelled query: meta.response), or [id]
                                when store_texts is false; newest last; capped, TTL
  {prefix}:{ll}:meta     hash   codebook_version (newest seen), lineage, n_buckets, window_size, ``seen``: a
                                monotone count of the items ever applied (never lowered; gone only with ``reset``),
                                ``sampling_rate``: the share of the language's queries the consumers kept
                                (compass/sampling.py) when they last applied items (absent: every query), and
                                ``sampled_out``: the queries left out of the sample (at least once: a re-delivered
                                batch counts again, like the consumers' metric)
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
``L``: eq. 2 moved its centroids, cluster ids kept; infra/codebook/) has lineage ``L``. Bucket ids of another
lineage mean nothing, so a newer lineage resets window and counts (offsets are kept, so nothing is counted
twice); revisions of the same lineage keep the window and meta records the newest version seen. Lineages sort
by time (byte order); an older lineage than the window's is refused with ``StaleCodebookError`` and nothing
written, so consumers of one group that load a new fit a few seconds apart cannot reset a window back and forth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

import numpy as np
import redis
from redis.cluster import RedisCluster

from compass.cluster.codebook import lineage_of
from compass.params import is_int
from infra.keys import PREFIX as _PREFIX
from infra.keys import WINDOW_KINDS, Keys
from infra.window.errors import StaleCodebookError, WindowInputError, WindowStateError
from infra.window.lua import APPLY_LUA, SNAPSHOT_LUA
from infra.window.replies import pairs, text
from infra.window.types import LANG_RE, VERSION_RE, ApplyResult, Assignment, WindowSnapshot

KINDS = WINDOW_KINDS  # the order of the scripts' KEYS
QUALITY_MAX = 100_000  # unread quality scores kept per language (the daemon pops them every check)


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
        if not is_int(recent_max, allow_numpy=True) or recent_max < 1:
            raise WindowInputError(f"recent_max must be an integer >= 1; got {recent_max!r}")
        if not is_int(recent_ttl_s, allow_numpy=True) or recent_ttl_s < 1:
            raise WindowInputError(f"recent_ttl_s must be an integer >= 1 (seconds); got {recent_ttl_s!r}")
        self.client = client
        self.prefix = prefix
        self._keys = Keys(prefix)
        self.store_texts = store_texts
        self.recent_max = recent_max
        self.recent_ttl_s = recent_ttl_s
        if not is_int(dedup_horizon_s, allow_numpy=True) or dedup_horizon_s < 0:
            raise WindowInputError(f"dedup_horizon_s must be an integer >= 0 (seconds, 0 = off); "
                                   f"got {dedup_horizon_s!r}")
        self.dedup_horizon_s = dedup_horizon_s
        self._apply = client.register_script(APPLY_LUA)
        self._snapshot = client.register_script(SNAPSHOT_LUA)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def keys(self, lang: str) -> dict[str, str]:
        """Every key of ``lang`` by kind; all carry the hash tag ``{lang}`` (one Redis Cluster slot)."""
        _check_lang(lang)
        return self._keys.window(lang)

    # ------------------------------------------------------------------ writes

    def apply(
        self, lang: str, window_size: int, codebook_version: str, n_buckets: int, items: Sequence[Assignment],
        *, sampling_rate: float | None = None,
    ) -> ApplyResult:
        """Apply one language's items in order with one Lua call (atomic); see the module docstring.
        ``sampling_rate``: the rate the items were kept at, recorded in meta (None: leave it)."""
        keys, args = self._script_call(lang, window_size, codebook_version, n_buckets, items, sampling_rate)
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
        *,
        sampling_rates: Mapping[str, float] | None = None,
    ) -> dict[str, ApplyResult]:
        """Apply all languages of a poll batch: ``by_lang`` maps lang -> (window_size, items); ``sampling_rates``
        the rate each language's items were kept at (recorded in its meta; a language left out: not recorded).

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
            lang: self._script_call(lang, size, codebook_version, n_buckets, items, (sampling_rates or {}).get(lang))
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
                stale[lang] = text(reply[1])
            else:
                results[lang] = _apply_result(reply)
        if stale:
            raise StaleCodebookError(codebook_version, stale, results)
        return results

    def add_sampled_out(self, counts: Mapping[str, int]) -> None:
        """Add each language's sampled-out queries of a batch to its meta ``sampled_out`` (one round trip)."""
        todo = {lang: n for lang, n in counts.items() if n}
        for lang, n in todo.items():
            _check_lang(lang)
            if not is_int(n, allow_numpy=True) or n < 0:
                raise WindowInputError(f"sampled-out count of {lang!r} must be an integer >= 0; got {n!r}")
        if todo:
            with self.client.pipeline(transaction=False) as pipe:
                for lang, n in todo.items():
                    pipe.hincrby(self._keys.window(lang)["meta"], "sampled_out", int(n))
                pipe.execute()

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
        keys, args = self._snapshot_call(lang, since)
        return self._snapshot_of(lang, self._snapshot(keys=keys, args=args))

    def snapshot_many(self, requests: Mapping[str, int | None]) -> dict[str, WindowSnapshot | Exception]:
        """``snapshot(lang, since)`` of every ``lang -> since`` of ``requests`` in one round trip (a pipeline of the
        read-only scripts; each language's read is consistent on its own, as with ``snapshot``). On Redis Cluster
        the languages are spread over slots: one call per language, as ``apply_batch`` does.

        A language whose read fails maps to the exception ``snapshot`` would raise for it (a damaged window:
        ``WindowStateError``; a key of the wrong type: ``redis.ResponseError``), so that one broken language does
        not hide the others. Invalid requests (a bad code, a bad ``since``) raise before anything is sent."""
        calls = {lang: self._snapshot_call(lang, since) for lang, since in requests.items()}
        if self.is_cluster:
            replies: list = []
            for k, a in calls.values():
                try:
                    replies.append(self._snapshot(keys=k, args=a))
                except redis.ResponseError as e:
                    replies.append(e)
        else:
            with self.client.pipeline(transaction=False) as pipe:
                for k, a in calls.values():
                    self._snapshot(keys=k, args=a, client=pipe)
                replies = pipe.execute(raise_on_error=False)
        out: dict[str, WindowSnapshot | Exception] = {}
        for lang, reply in zip(calls, replies, strict=True):
            try:
                out[lang] = reply if isinstance(reply, Exception) else self._snapshot_of(lang, reply)
            except WindowStateError as e:
                out[lang] = e
        return out

    def _snapshot_call(self, lang: str, since: int | None) -> tuple[list[str], list[int]]:
        if since is not None and (not is_int(since, allow_numpy=True) or since < 0):
            raise WindowInputError(f"since must be an integer >= 0 (a previous snapshot's seen) or None; got {since!r}")
        k = self.keys(lang)
        return [k["window"], k["counts"], k["offsets"], k["meta"]], [-1 if since is None else int(since)]

    def _snapshot_of(self, lang: str, reply: list) -> WindowSnapshot:
        """A ``WindowSnapshot`` from SNAPSHOT_LUA's reply for ``lang``."""
        k = self.keys(lang)
        meta_raw, counts_raw, size, offsets_raw, seen, tail_raw = reply
        meta = pairs(meta_raw)
        version = meta.get("codebook_version")
        n_buckets = int(meta.get("n_buckets", 0))
        counts = np.zeros(n_buckets, dtype=np.int64)
        for bucket, count in pairs(counts_raw).items():
            b = int(bucket)
            if not 0 <= b < n_buckets:
                raise WindowStateError(
                    f"{k['counts']}: bucket {b} outside [0, {n_buckets}) of codebook {version!r}; the state was "
                    "changed outside compass: reset the language and rebuild (compass consume --rebuild)"
                )
            counts[b] = int(count)
        offsets = {p: int(o) for p, o in pairs(offsets_raw).items()}
        tail = np.fromiter((int(b) for b in tail_raw), dtype=np.int64, count=len(tail_raw))
        return WindowSnapshot(lang, counts, int(size), version, offsets, int(seen), tail,
                              float(meta.get("sampling_rate", 1.0)), int(meta.get("sampled_out", 0)))

    def recent(self, lang: str, limit: int | None = None) -> list[tuple[str, str | None]]:
        """The recent queries of ``lang`` as (id, text or None), newest last; at most ``limit`` of them."""
        return [(i, t) for i, t, _ in self.recent_rows(lang, limit)]

    def recent_rows(self, lang: str, limit: int | None = None) -> list[tuple[str, str | None, str | None]]:
        """The recent queries of ``lang`` as (id, text or None, response or None), newest last."""
        if limit is not None and (not is_int(limit, allow_numpy=True) or limit < 0):
            raise WindowInputError(f"limit must be an integer >= 0 or None; got {limit!r}")
        if limit == 0:
            return []
        start = -limit if limit is not None else 0
        out = []
        for raw in self.client.lrange(self.keys(lang)["recent"], start, -1):
            entry = json.loads(raw)
            out.append((entry[0], entry[1] if len(entry) > 1 else None, entry[2] if len(entry) > 2 else None))
        return out

    def languages(self) -> list[str]:
        """Languages that have a window (a meta hash), sorted."""
        found = set()
        for key in self.client.scan_iter(match=self._keys.every_language("meta"), count=1000):
            lang = self._keys.language_of(text(key), "meta")
            if lang is not None and LANG_RE.match(lang):
                found.add(lang)
        return sorted(found)

    # ------------------------------------------------------------------ helpers

    def _script_call(
        self, lang: str, window_size: int, version: str, n_buckets: int, items: Sequence[Assignment],
        sampling_rate: float | None = None,
    ) -> tuple[list[str], list[str | int]]:
        keys = self.keys(lang)  # validates lang
        problems = []
        if not is_int(window_size, allow_numpy=True) or window_size < 1:
            problems.append(f"window_size must be an integer >= 1; got {window_size!r}")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            problems.append(
                f"codebook_version must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit; got {version!r}"
            )
        if not is_int(n_buckets, allow_numpy=True) or n_buckets < 1:
            problems.append(f"n_buckets must be an integer >= 1 (clusters + 1 noise bucket); got {n_buckets!r}")
        if sampling_rate is not None and (isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float))
                                          or not 0.0 < sampling_rate <= 1.0):
            problems.append(f"sampling_rate must be a number in (0, 1] or None; got {sampling_rate!r}")
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
            if len(entry) == 2 and item.response is not None:
                entry.append(item.response)
            entries.append(json.dumps(entry, ensure_ascii=False))
            quality.append("-" if item.quality is None else repr(float(item.quality)))
        args: list[str | int] = [
            version, window_size, n_buckets, self.recent_max, self.recent_ttl_s, len(items), lineage_of(version),
            "\n".join(positions), ",".join(map(str, pidx)), ",".join(map(str, offsets)),
            ",".join(map(str, buckets)), "\n".join(entries), ",".join(quality), QUALITY_MAX,
            self.dedup_horizon_s * 1000, int(time.time() * 1000),
            json.dumps([item.query_id for item in items], ensure_ascii=False) if self.dedup_horizon_s else "",
            "" if sampling_rate is None else repr(float(sampling_rate)),
        ]
        return [keys[kind] for kind in KINDS], args

    def _result(self, lang: str, version: str, reply: list) -> ApplyResult:
        if int(reply[0]) < 0:
            raise StaleCodebookError(version, {lang: text(reply[1])})
        return _apply_result(reply)


def _apply_result(reply: list) -> ApplyResult:
    return ApplyResult(int(reply[0]), int(reply[1]), int(reply[2]), bool(int(reply[3])), int(reply[4]))


def _check_lang(lang: str) -> None:
    if not isinstance(lang, str) or not LANG_RE.match(lang):
        raise WindowInputError(
            f"lang must be a compass language code (2-3 lowercase letters, compass/langcodes.py); got {lang!r}"
        )
