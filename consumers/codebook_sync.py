"""The monitor's codebook: watch for new versions, move the centroids (paper eq. 2), publish revisions.

Incremental k-means (eq. 2): each worker keeps its own copy of the current codebook's centroids and
updates it after every batch it applied, mu_k <- (1 - eta) mu_k + eta * mean(X_k_new). Only one worker
publishes revisions: the holder of the Redis lock ``<prefix>:codebook:publisher`` (SET NX PX, renewed every
``revision_interval_s``, expiring after three intervals so a dead holder is replaced). Every
``revision_interval_s`` the holder persists its centroids as a new codebook revision (parent = the version
they descend from); the other workers pick the revision up through the ``CodebookWatcher`` and continue from
it (their own updates since the previous revision are superseded). HDBSCAN codebooks are fixed:
``approximate_predict`` assigns, noise counts in its own bucket, nothing is updated or published.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import numpy as np

from compass.errors import CompassError
from consumers.metrics import ConsumerMetrics
from infra.codebook import Codebook, CodebookStore, CodebookWatcher
from infra.keys import Keys
from infra.lease import Lease
from infra.settings import ConsumerConfig

log = logging.getLogger(__name__)


class NoCodebook(CompassError, RuntimeError):
    """No codebook has been published, so queries cannot be assigned to clusters."""


def open_codebooks(cc: ConsumerConfig, redis: Any, prefix: str, *, restore: bool) -> CodebookStore:
    """The codebook store; with ``restore`` (a rebuild) a lost current-version pointer is set back to the newest
    stored version, else a missing pointer raises ``NoCodebook`` with the fix."""
    codebooks = CodebookStore(cc.codebook_dir, redis, prefix)
    if codebooks.current_version() is None:
        stored = codebooks.versions()
        if not (restore and stored):
            raise NoCodebook(
                f"no codebook is published in Redis under prefix {prefix!r} (codebook_dir "
                f"{cc.codebook_dir}); fit and publish one first (compass codebook build), or, after a "
                "Redis loss, run `compass consume --rebuild` to restore the newest stored codebook"
            )
        # Redis lost its state: the pointer only ever moves forward, so the newest stored version is where the
        # consumers were; the rebuild re-counts the windows against it.
        codebooks.restore(stored[-1])
        log.warning("codebook pointer missing (Redis state lost); restored the newest stored codebook",
                    extra={"version": stored[-1]})
    return codebooks


class CodebookSync:
    """This worker's codebook: the watcher's current version, moved by eq. 2 and published as revisions.
    ``fixed``: never move or publish (a rebuild re-counts history against the codebook as it is)."""

    def __init__(self, codebooks: CodebookStore, redis: Any, prefix: str, model_id: str, *, eta: float,
                 revision_interval_s: float, metrics: ConsumerMetrics, fixed: bool = False):
        self.codebooks, self.model_id, self.metrics = codebooks, model_id, metrics
        self.eta, self.revision_interval_s, self.fixed = eta, revision_interval_s, fixed
        self.watcher = CodebookWatcher(codebooks, model_id=model_id)
        self._published: set[str] = set()  # revisions this worker published
        self.codebook: Codebook = self._use(self.watcher.current())
        self._watched = self.version  # the version the watcher reported last
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._publisher = Lease(redis, Keys(prefix).codebook_publisher(), owner,
                                ttl_ms=max(1000, int(3000 * revision_interval_s)))
        self._next_revision = time.monotonic() + revision_interval_s

    def _use(self, cb: Codebook) -> Codebook:
        # The watcher's object is this worker's own (store.load reads the files afresh): eq. 2 moves its
        # centroids in place.
        cb.check_model(self.model_id)
        self.version = cb.version
        log.info("codebook loaded", extra={"version": cb.version, "n_buckets": cb.n_buckets})
        return cb

    @property
    def updates_centroids(self) -> bool:
        return self.eta > 0 and not self.fixed and callable(getattr(self.codebook.clusterer, "update", None))

    def sync(self) -> None:
        """Adopt the watcher's version if someone else published it."""
        cb = self.watcher.current()
        # The watcher lags (it checks every few seconds) and also reports the revisions this worker published
        # itself: adopt a version only when the watcher moved to one that someone else published (another
        # worker's revision, or a new fit).
        if cb.version != self._watched:
            self._watched = cb.version
            if cb.version != self.version and cb.version not in self._published:
                self.codebook = self._use(cb)

    def reload(self) -> None:
        """Check for a newer version now (a window was moved to one) and adopt it."""
        self.watcher.refresh()
        self.sync()

    def update(self, X: np.ndarray) -> None:
        """Eq. 2 with the applied batch's embeddings ``X`` (call it after the write it describes succeeded)."""
        if len(X) and self.updates_centroids:
            self.codebook.clusterer.update(X, self.eta)

    def maybe_publish(self) -> str | None:
        """Publish the centroids as a revision when the interval is over and this worker holds the lease."""
        if not self.updates_centroids or time.monotonic() < self._next_revision:
            return None
        self._next_revision = time.monotonic() + self.revision_interval_s
        if self._publisher.hold() is None:
            return None
        cb = self.codebooks.publish(self.codebook.clusterer, self.model_id, languages=self.codebook.languages,
                                    parent=self.version)
        self.version = cb.version  # our centroids are that revision: no need to adopt the watcher's copy
        self._published.add(cb.version)
        self.metrics.revisions.inc()
        log.info("codebook revision published", extra={"version": cb.version, "parent": cb.parent})
        return cb.version

    def close(self) -> None:
        """Give the publisher lease back (another worker may publish at once)."""
        if self.updates_centroids:
            self._publisher.release()
