"""The far share of a language's recent traffic (paper §6.1): the default ``FarShareFn`` of the drift daemon.

``RecentFarShare(lang, snapshot)`` embeds ``lang``'s recent texts (kept by the window store) and measures the
share farther from every centroid of the window's codebook than its calibrated distance
(``compass.drift.stale.share_beyond``); the daemon compares it with ``daemon.stale_far_share`` through
compass/drift/lifecycle.py's stale rule.

Measured incrementally (issue 20: 200 languages every 2 s): the share is over the newest ``stale_far_max_texts``
entries of the window's ``recent`` list, and one apply of the window store appends one entry per applied query and
adds the same number to meta ``seen``, in one script (infra/window/lua.py). So the entries of a check are those of
the last check, less the oldest ``seen - last seen``, plus that many new ones: a check reads only the new entries
(one script, ``_SYNC_LUA``) and embeds only their texts, keeping the far/near verdicts of the others. A window that
moved by 20 queries costs 20 entries, not 500; a window that stores no texts costs the parsing of its new ids.
Anything else (a reset, an expired ``recent`` list, a window of older code without ``seen``) fails the script's
check of the entry just before the new ones, and the check reads all of them again, as before.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from compass.drift.stale import share_beyond
from compass.embed.base import Embedder
from infra.codebook import Codebook, CodebookStore
from infra.settings import ServiceConfig
from infra.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)


class FarShareFn(Protocol):
    """Measures the far share of a language's recent points; the daemon closes it when it stops. It may also have
    ``prefetch(snaps: Mapping[str, WindowSnapshot]) -> None``, called once per check round with the round's windows
    before the calls (``RecentFarShare.prefetch``: their reads in one round trip)."""

    def __call__(self, lang: str, snap: WindowSnapshot) -> float | None:
        """The share in [0, 1], or None when unmeasured."""
        ...

    def close(self) -> None: ...


# KEYS[1] recent, KEYS[2] meta; ARGV[1] the `seen` of the entries held (-1: none), ARGV[2] how many are wanted
# (stale_far_max_texts), ARGV[3] the newest entry held -> {seen (-1: unknown), 1 when only the entries after the
# held ones are returned (0: the newest ARGV[2]), the entries, oldest first, LLEN} (the list is capped at the
# consumers' recent_max, maybe below ARGV[2]: the held ones beyond LLEN are gone). Both keys carry the language's
# hash tag: one slot on Redis Cluster.
_SYNC_LUA = r"""
local seen = tonumber(redis.call('HGET', KEYS[2], 'seen')) or -1
local held, want = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = redis.call('LLEN', KEYS[1])
if held >= 0 and seen >= held and seen - held < want and ARGV[3] ~= '' then
  local new = seen - held
  if redis.call('LINDEX', KEYS[1], -(new + 1)) == ARGV[3] then
    if new == 0 then return {seen, 1, {}, n} end
    return {seen, 1, redis.call('LRANGE', KEYS[1], -new, -1), n}
  end
end
return {seen, 0, redis.call('LRANGE', KEYS[1], -want, -1), n}
"""


@dataclass
class _Recent:
    """The newest entries of a language's ``recent`` list as last read, each with its verdict: True far, False
    near, None for an entry without text or not measured yet (``version``: the codebook they were measured with)."""

    seen: int = -1  # meta `seen` when read (-1: unknown: the next read takes them all)
    newest: bytes = b""  # the raw newest entry: the next read checks it sits just before the new ones
    texts: list[str | None] = field(default_factory=list)  # oldest first
    far: list[bool | None] = field(default_factory=list)
    version: str | None = None
    pending: bool = False  # some text has no verdict yet

    def take(self, reply: list, want: int) -> None:
        """Apply ``_SYNC_LUA``'s reply: append the new entries (or replace all), keep the newest ``want``."""
        seen, incremental, raw, length = reply
        texts = [_text(r) for r in raw]
        self.pending = self.pending or any(t is not None for t in texts) or not incremental
        if incremental:
            texts, far = self.texts + texts, self.far + [None] * len(texts)
            drop = max(0, len(texts) - min(want, int(length)))  # keep what the list still holds of the newest `want`
            self.texts, self.far = texts[drop:], far[drop:]
        else:
            self.texts, self.far = texts, [None] * len(texts)
        self.seen = int(seen)
        if raw:
            self.newest = raw[-1]
        elif not incremental:
            self.newest = b""


def _text(raw: bytes) -> str | None:
    """The text of a recent entry (JSON [id, text] or [id]); None when it has none (an empty text counts as none)."""
    entry = json.loads(raw)
    return (entry[1] or None) if len(entry) > 1 else None


class RecentFarShare:
    """The default ``FarShareFn`` (paper §6.1): the share of ``lang``'s recent texts (at most
    ``daemon.stale_far_max_texts``, from the window store) whose embeddings lie farther from every centroid of the
    window's codebook than its calibrated distance (``daemon.stale_distance_quantile`` of the training distances,
    infra/codebook/). None (unknown) when the window keeps no texts (``consumer.store_texts: false``) or the
    codebook has no calibration; each such reason is logged once per language. Other failures raise, for the
    daemon to log and count (what was not measured is tried again on the next check). The embedder
    (``infra.embedders.make_embedder``) is built on first use, once.

    Incremental (module docstring): a check reads and embeds only the entries added since the last one; the verdicts
    of the others are kept while the codebook version is the same (a new version measures all kept texts again).
    ``prefetch`` reads the new entries of many languages in one round trip (``Daemon.check_round``)."""

    def __init__(self, config: ServiceConfig, windows: WindowStore, client: redis.Redis,
                 embedder: Embedder | None = None, *, incremental: bool = True):
        """``incremental`` False: read and embed all the newest entries on every call (the behaviour before issue
        20; for benchmarks/daemon_scale.py and the tests that compare both)."""
        self.incremental = incremental
        self.dcfg = config.daemon
        self.embedder_config = config.embedder
        self.windows = windows
        self.client = client
        self.store = CodebookStore(config.consumer.codebook_dir, client, config.redis.key_prefix)
        self._embedder = embedder
        self._lock = threading.Lock()  # checks of several languages run in parallel; one embedder, one codebook
        self._codebook: Codebook | None = None  # the last one loaded: windows of a lineage share it
        self._logged: set[tuple[str, str]] = set()
        self._recent: dict[str, _Recent] = {}  # lang -> its newest entries and their verdicts
        self._keys: dict[str, list[str]] = {}  # lang -> its recent and meta keys
        self._sync = client.register_script(_SYNC_LUA)

    def __call__(self, lang: str, snap: WindowSnapshot) -> float | None:
        want = self.dcfg.stale_far_max_texts
        if snap.codebook_version is None or want == 0:
            return None
        if not self.incremental:
            return self._measure_all(lang, snap)
        rec = self._recent.get(lang)
        if rec is None or rec.seen != snap.seen or len(rec.texts) > want:  # moved (or not read yet): new entries
            rec = self._read(lang, rec, want)
        if rec.texts.count(None) == len(rec.texts):
            self._no_texts(lang)
            return None
        if (rec.pending or rec.version != snap.codebook_version) and not self._measure(lang, rec,
                                                                                      snap.codebook_version):
            return None  # no calibrated distance: unknown
        far, near = rec.far.count(True), rec.far.count(False)
        return far / (far + near)  # == share_beyond of all of them: an exact count over a count

    def _measure(self, lang: str, rec: _Recent, version: str) -> bool:
        """Verdicts for the texts of ``rec`` without one (all of them for another codebook version); False when the
        codebook has no calibrated distance."""
        with self._lock:
            codebook = self._load(version)
            radius = self._radius(lang, codebook)
            if radius is None:
                return False
            if rec.version != codebook.version:  # other centroids, another radius: every kept text again
                rec.far, rec.version = [None] * len(rec.texts), codebook.version
            todo = [i for i, (t, f) in enumerate(zip(rec.texts, rec.far, strict=True)) if t is not None and f is None]
            if todo:
                embedder = self._embedder_()
                codebook.check_model(embedder.model_id)
                distances = codebook.nearest_distances(embedder.encode([rec.texts[i] for i in todo]))
                for i, d in zip(todo, distances, strict=True):
                    rec.far[i] = bool(d > radius)  # share_beyond's test, one text at a time
            rec.pending = False
        return True

    def prefetch(self, snaps: Mapping[str, WindowSnapshot]) -> None:
        """Read the new recent entries of every language of ``snaps`` whose window moved since its last read, in
        one pipeline (a check round's languages; the calls that follow find them read). Nothing is embedded here:
        a language whose check ends before the stale rule only has its entries read."""
        want = self.dcfg.stale_far_max_texts
        if not self.incremental or want == 0 or self.windows.is_cluster:  # a pipeline cannot span slots
            return
        moved = {}
        for lang, snap in snaps.items():
            rec = self._recent.get(lang)
            if snap.codebook_version is not None and (rec is None or rec.seen != snap.seen or len(rec.texts) > want):
                moved[lang] = rec or _Recent()
        if not moved:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for lang, rec in moved.items():
                self._sync_call(lang, rec, want, pipe)
            replies = pipe.execute(raise_on_error=False)
        for (lang, rec), reply in zip(moved.items(), replies, strict=True):
            if not isinstance(reply, Exception):  # else the check's own call reads it, and raises there
                rec.take(reply, want)
                self._recent[lang] = rec

    def _read(self, lang: str, rec: _Recent | None, want: int) -> _Recent:
        rec = rec or _Recent()
        rec.take(self._sync_call(lang, rec, want), want)
        self._recent[lang] = rec
        return rec

    def _sync_call(self, lang: str, rec: _Recent, want: int, client: Any = None) -> Any:
        keys = self._keys.get(lang)
        if keys is None:
            window = self.windows.keys(lang)
            keys = self._keys[lang] = [window["recent"], window["meta"]]
        # a held list longer than wanted (the knob was lowered) is read again whole
        held = rec.seen if len(rec.texts) <= want else -1
        return self._sync(keys=keys, args=[held, want, rec.newest], client=client)

    def _measure_all(self, lang: str, snap: WindowSnapshot) -> float | None:
        """The far share of all the newest entries, read and embedded now (``incremental`` False)."""
        assert snap.codebook_version is not None
        texts = [t for _, t in self.windows.recent(lang, limit=self.dcfg.stale_far_max_texts) if t]
        if not texts:
            self._no_texts(lang)
            return None
        with self._lock:
            codebook = self._load(snap.codebook_version)
            radius = self._radius(lang, codebook)
            if radius is None:
                return None
            embedder = self._embedder_()
            codebook.check_model(embedder.model_id)
            X = embedder.encode(texts)
        return share_beyond(codebook.nearest_distances(X), radius)

    def _no_texts(self, lang: str) -> None:
        self._once(lang, "no_texts", "%s: far share unknown: no recent texts in the window store (with "
                   "consumer.store_texts false only ids are kept); only the noise share is measured", lang)

    def _radius(self, lang: str, codebook: Codebook) -> float | None:
        q = self.dcfg.stale_distance_quantile
        radius = codebook.calibrated_distance(q)
        if radius is None:
            self._once(lang, f"uncalibrated:{codebook.version}",
                       "%s: far share unknown: codebook %s has no calibrated distance for quantile %s "
                       "(distance_quantiles %s); rebuild it with `compass codebook build`, or set "
                       "daemon.stale_distance_quantile to a recorded quantile", lang, codebook.version, q,
                       codebook.distance_quantiles)
        return radius

    def close(self) -> None:
        if self._embedder is not None:  # built on first use: nothing to close before
            self._embedder.close()

    def _load(self, version: str) -> Codebook:
        if self._codebook is None or self._codebook.version != version:
            self._codebook = self.store.load(version)
        return self._codebook

    def _embedder_(self) -> Embedder:
        if self._embedder is None:
            from infra.embedders import make_embedder

            self._embedder = make_embedder(self.embedder_config)
        return self._embedder

    def _once(self, lang: str, what: str, msg: str, *args: Any) -> None:
        if (lang, what) not in self._logged:
            self._logged.add((lang, what))
            log.warning(msg, *args)
