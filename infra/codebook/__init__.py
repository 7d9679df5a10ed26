"""Versioned cluster codebooks on disk with the current version named in Redis: the store (store.py), the
consumer's watcher (watch.py), the version directory's checks (manifest.py), the Redis pointer (pointer.py) and
errors (errors.py). The names below are the package's public face; import them from here."""

from compass.cluster.codebook import Codebook
from infra.codebook.errors import CodebookError, CodebookNotFound, CodebookVersionError, EmbedderMismatch
from infra.codebook.manifest import FORMAT, LABELS_FILE, check_version, read_labels
from infra.codebook.store import CodebookStore
from infra.codebook.watch import CodebookWatcher

__all__ = [
    "FORMAT",
    "LABELS_FILE",
    "Codebook",
    "CodebookError",
    "CodebookNotFound",
    "CodebookStore",
    "CodebookVersionError",
    "CodebookWatcher",
    "EmbedderMismatch",
    "check_version",
    "read_labels",
]
