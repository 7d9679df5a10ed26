"""Hot reload of ``configs/languages.yaml`` for a running daemon (SIGHUP or a change of the file).

ops edit thresholds while the daemon runs. A file that fails validation never replaces the config in
force: the daemon keeps the previous one and logs every problem with its key path, so a typo in one
language cannot switch monitoring off for all of them.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from pathlib import Path

from compass.errors import ConfigError
from compass.languages import LanguagesConfig, load_languages

log = logging.getLogger(__name__)


class ReloadingLanguages:
    """Holds the languages config in force; ``maybe_reload`` swaps it only for a valid, changed file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._current = load_languages(self.path)  # the first load must succeed: no previous config to keep
        self._digest = self._file_digest()
        self._requested = threading.Event()
        self.reloads = 0
        self.rejected = 0

    @property
    def current(self) -> LanguagesConfig:
        with self._lock:
            return self._current

    def _file_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def request(self) -> None:
        """Ask for a reload on the next ``maybe_reload`` even if the content looks unchanged (SIGHUP)."""
        self._requested.set()

    def maybe_reload(self) -> bool:
        """Reload when the file changed or a reload was requested; True when a new config took effect."""
        digest = self._file_digest()
        forced = self._requested.is_set()
        self._requested.clear()
        if digest == self._digest and not forced:
            return False
        self._digest = digest
        try:
            fresh = load_languages(self.path)
        except ConfigError as e:
            self.rejected += 1
            log.error("languages config %s rejected; keeping the previous one. %d problem(s):",
                      self.path, len(e.problems))
            for problem in e.problems:
                log.error("  %s", problem)
            return False
        with self._lock:
            changed = fresh != self._current
            self._current = fresh
        if changed:
            self.reloads += 1
            log.info("languages config reloaded from %s: %d enabled language(s)", self.path, len(fresh.enabled))
        return changed

    def install_sighup(self) -> None:
        """SIGHUP requests a reload; the scheduler's next tick performs it (no work inside the handler)."""
        signal.signal(signal.SIGHUP, lambda *_: self.request())
