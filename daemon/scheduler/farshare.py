"""The far share of a language's recent traffic (paper §6.1): the default ``FarShareFn`` of the drift daemon.

``RecentFarShare(lang, snapshot)`` embeds ``lang``'s recent texts (kept by the window store) and measures the
share farther from every centroid of the window's codebook than its calibrated distance
(``compass.drift.stale.share_beyond``); the daemon compares it with ``daemon.stale_far_share`` through
compass/drift/lifecycle.py's stale rule.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import redis

from compass.drift.stale import share_beyond
from compass.embed.base import Embedder
from infra.codebook import Codebook, CodebookStore
from infra.settings import ServiceConfig
from infra.window import WindowSnapshot, WindowStore

log = logging.getLogger(__name__)


class FarShareFn(Protocol):
    """Measures the far share of a language's recent points; the daemon closes it when it stops."""

    def __call__(self, lang: str, snap: WindowSnapshot) -> float | None:
        """The share in [0, 1], or None when unmeasured."""
        ...

    def close(self) -> None: ...


class RecentFarShare:
    """The default ``FarShareFn`` (paper §6.1): the share of ``lang``'s recent texts (at most
    ``daemon.stale_far_max_texts``, from the window store) whose embeddings lie farther from every centroid of the
    window's codebook than its calibrated distance (``daemon.stale_distance_quantile`` of the training distances,
    infra/codebook/). None (unknown) when the window keeps no texts (``consumer.store_texts: false``) or the
    codebook has no calibration; each such reason is logged once per language. Other failures raise, for the
    daemon to log and count. The embedder (``infra.embedders.make_embedder``) is built on first use, once."""

    def __init__(self, config: ServiceConfig, windows: WindowStore, client: redis.Redis,
                 embedder: Embedder | None = None, *, reuse: bool = True):
        """``reuse``: a window with no query applied since the last measurement keeps that measurement (False:
        measure on every call, the behaviour before issue 20; for benchmarks/daemon_scale.py)."""
        self.reuse = reuse
        self.dcfg = config.daemon
        self.embedder_config = config.embedder
        self.windows = windows
        self.store = CodebookStore(config.consumer.codebook_dir, client, config.redis.key_prefix)
        self._embedder = embedder
        self._lock = threading.Lock()  # checks of several languages run in parallel; one embedder, one codebook
        self._codebook: Codebook | None = None  # the last one loaded: windows of a lineage share it
        self._logged: set[tuple[str, str]] = set()
        # lang -> ((seen, codebook version, max texts), share): the recent texts change only with the window's
        # `seen` (one apply writes both), so a check of a window without new queries reuses the last measurement
        self._last: dict[str, tuple[tuple[int, str, int], float | None]] = {}

    def __call__(self, lang: str, snap: WindowSnapshot) -> float | None:
        if snap.codebook_version is None or self.dcfg.stale_far_max_texts == 0:
            return None
        key = (snap.seen, snap.codebook_version, self.dcfg.stale_far_max_texts)
        last = self._last.get(lang)
        if self.reuse and last is not None and last[0] == key:  # nothing applied since: same texts, same share
            return last[1]
        share = self._measure(lang, snap)
        self._last[lang] = (key, share)
        return share

    def _measure(self, lang: str, snap: WindowSnapshot) -> float | None:
        assert snap.codebook_version is not None
        texts = [t for _, t in self.windows.recent(lang, limit=self.dcfg.stale_far_max_texts) if t]
        if not texts:
            self._once(lang, "no_texts", "%s: far share unknown: no recent texts in the window store (with "
                       "consumer.store_texts false only ids are kept); only the noise share is measured", lang)
            return None
        with self._lock:
            codebook = self._load(snap.codebook_version)
            q = self.dcfg.stale_distance_quantile
            radius = codebook.calibrated_distance(q)
            if radius is None:
                self._once(lang, f"uncalibrated:{codebook.version}",
                           "%s: far share unknown: codebook %s has no calibrated distance for quantile %s "
                           "(distance_quantiles %s); rebuild it with `compass codebook build`, or set "
                           "daemon.stale_distance_quantile to a recorded quantile", lang, codebook.version, q,
                           codebook.distance_quantiles)
                return None
            embedder = self._embedder_()
            codebook.check_model(embedder.model_id)
            X = embedder.encode(texts)
        return share_beyond(codebook.nearest_distances(X), radius)

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
