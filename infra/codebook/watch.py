"""The current codebook for one consumer (infra/codebook/store.py holds the versions): the pointer checked at most
every few seconds, a new version loaded when it moved, a version that cannot be used logged once and skipped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from compass.cluster.codebook import Codebook
from compass.errors import CompassError
from infra.codebook.store import CodebookStore

log = logging.getLogger("infra.codebook")  # the package's logger, as before the split


class CodebookWatcher:
    """The current codebook for one consumer: checks the pointer at most every ``check_interval_s`` and
    reloads when it moved. A new version that cannot be loaded (or, with ``model_id``, was fitted on another
    embedder) is logged once and the old codebook kept; only the first load raises."""

    def __init__(
        self,
        store: CodebookStore,
        check_interval_s: float = 2.0,
        *,
        model_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if check_interval_s < 0:
            raise ValueError(f"check_interval_s must be >= 0 seconds; got {check_interval_s!r}")
        self.store = store
        self.check_interval_s = check_interval_s
        self.model_id = model_id
        self._clock = clock
        self._codebook: Codebook | None = None
        self._next_check = 0.0
        self._failed: str | None = None  # the last version that failed to load: logged once, retried quietly

    def current(self) -> Codebook:
        """The codebook to assign with now."""
        if self._codebook is None:
            self._codebook = self._load(self.store.load())
            self._next_check = self._clock() + self.check_interval_s
        elif self._clock() >= self._next_check:
            self.refresh()
        return self._codebook

    def refresh(self) -> bool:
        """Check the pointer now (e.g. after ``StaleCodebookError``); True when a new codebook was loaded."""
        self._next_check = self._clock() + self.check_interval_s
        if self._codebook is None:
            self.current()
            return True
        version = self.store.current_version()
        if version is None or version == self._codebook.version:
            return False
        try:
            self._codebook = self._load(self.store.load(version))
        except (CompassError, ValueError) as e:
            if version != self._failed:
                log.error(
                    "new codebook cannot be used; keeping the current one",
                    extra={"version": version, "current": self._codebook.version, "error": str(e)},
                )
                self._failed = version
            return False
        self._failed = None
        log.info("codebook reloaded", extra={"version": version})
        return True

    def _load(self, codebook: Codebook) -> Codebook:
        if self.model_id is not None:
            codebook.check_model(self.model_id)
        return codebook
