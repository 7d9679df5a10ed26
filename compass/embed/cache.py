"""An on-disk embedding cache, so a pool of queries is embedded once per model.

One SQLite file per ``model_id`` maps sha256(text) to the float32 vector. WAL mode and a busy timeout let
several processes read and write the same file. An entry whose length does not match the model's dimension,
or whose values are not a finite unit vector, is treated as a miss and overwritten. A file SQLite cannot
read is moved aside (it only holds a cache) and a new one started. Opening retries, with backoff, while another
process holds the lock (the switch to WAL and the first schema write need it even with the busy timeout).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from compass.embed.base import Embedder, check_texts, empty, l2_normalize
from compass.errors import EmbedderError

log = logging.getLogger(__name__)

OPEN_TRIES = 12  # attempts to open a locked file: backoff 0.05 s doubling to 2 s, ~15 s in all
_SQL_VARS = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (hash BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID;
"""


def cache_file_name(model_id: str) -> str:
    """A file name readable by people and unique per model_id (the hash separates ids the slug merges)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:80] or "model"
    return f"{slug}-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}.sqlite"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _chunks(seq: list[bytes], size: int) -> Iterator[list[bytes]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class CachedEmbedder(Embedder):
    """Wraps an embedder; ``encode`` answers cached texts from disk and sends only the misses to ``inner``.

    Counters, summed over calls and over distinct texts within a call: ``hits`` (found on disk), ``misses``
    (sent to the inner embedder). Repeated texts within a call are looked up and embedded once.
    """

    def __init__(self, inner: Embedder, cache_dir: str | Path, chunk_size: int = 4096):
        if chunk_size < 1:
            raise EmbedderError(f"embedding cache: chunk_size must be >= 1; got {chunk_size}")
        self.inner = inner
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0
        self._model_id = inner.model_id
        self.path = Path(cache_dir).expanduser() / cache_file_name(self._model_id)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmbedderError(
                f"embedding cache: cannot create cache_dir {str(self.path.parent)!r} ({e.strerror}); set "
                "embedder.cache_dir to a writable directory or embedder.cache: false"
            ) from None
        self._conn = self._open()
        self._stored_dim = self._read_dim()

    # ------------------------------------------------------------------------------------------ storage

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False)
        try:
            # Switching needs an exclusive lock: only done when the file is not in WAL mode already.
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
                if mode != "wal":  # another connection kept it from switching: retried as a lock
                    raise sqlite3.OperationalError(f"database is locked (journal_mode stayed {mode!r})")
            # In WAL mode a crash may lose the last writes, never corrupt the file: right for a cache.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            with conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('model_id', ?)", (self._model_id,))
            owner = conn.execute("SELECT value FROM meta WHERE key = 'model_id'").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if owner != self._model_id:
            conn.close()
            raise EmbedderError(
                f"embedding cache {str(self.path)!r} belongs to model {owner!r}, not {self._model_id!r}; "
                "delete the file (it only holds a cache)"
            )
        return conn

    def _connect_retrying(self) -> sqlite3.Connection:
        """``_connect``, tried again while the database is locked by another process (bounded, with backoff)."""
        for attempt in range(OPEN_TRIES):
            try:
                return self._connect()
            except sqlite3.OperationalError as e:
                msg = str(e).lower()
                if ("locked" not in msg and "busy" not in msg) or attempt == OPEN_TRIES - 1:
                    raise
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.info("embedding cache %s is locked (%s); opening again in %.2f s", self.path, e, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect_retrying()
        except sqlite3.OperationalError as e:  # locked, read-only, cannot open: the file may be fine
            raise self._unopenable(e) from None
        except sqlite3.DatabaseError as e:  # not a database, or corrupt
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("embedding cache %s is unreadable (%s); moved to %s", self.path, e, aside)
            self.path.rename(aside)
        try:
            return self._connect_retrying()
        except sqlite3.DatabaseError as e:
            raise self._unopenable(e) from None

    def _unopenable(self, e: Exception) -> EmbedderError:
        return EmbedderError(
            f"embedding cache: cannot open {str(self.path)!r} ({e}); check its permissions, or set "
            "embedder.cache_dir to a writable directory or embedder.cache: false"
        )

    def _read_dim(self) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        return int(row[0]) if row else None

    def _set_dim(self, dim: int) -> None:
        """Record the model's dimension; entries of any other dimension are dropped as a stale space."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            self._conn.execute("DELETE FROM vectors WHERE length(vec) != ?", (4 * dim,))
        self._stored_dim = dim

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        dim = self._stored_dim
        if dim is None:
            return {}
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for chunk in _chunks(keys, _SQL_VARS):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT hash, vec FROM vectors WHERE hash IN ({marks})", chunk)
                for key, blob in rows:
                    if len(blob) != 4 * dim:
                        continue
                    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
                    sq = float(vec @ vec)  # stored vectors are unit (or all-zero) rows; others are damage
                    if np.isfinite(sq) and (abs(sq - 1.0) < 1e-3 or not vec.any()):
                        found[key] = vec
        return found

    def _store(self, keys: list[bytes], x: np.ndarray) -> None:
        rows = [(k, x[i].astype("<f4").tobytes()) for i, k in enumerate(keys)]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)

    # ------------------------------------------------------------------------------------------ embedder

    @property
    def dim(self) -> int:
        # The stored dimension spares backends that learn it by asking (http) a request.
        return self._stored_dim if self._stored_dim is not None else self.inner.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return empty(self.dim)
        keys = [text_key(t) for t in items]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        found = self._lookup(list(first))
        self.hits += len(found)
        todo = [k for k in first if k not in found]
        done = 0
        while done < len(todo):
            chunk = todo[done : done + self.chunk_size]
            x = np.asarray(self.inner.encode([items[first[k]] for k in chunk]))
            if x.ndim != 2 or x.shape[0] != len(chunk):
                raise EmbedderError(
                    f"embedder {self._model_id!r} returned shape {x.shape} for {len(chunk)} texts; "
                    "expected (n, dim). This is a bug in the backend"
                )
            if x.shape[1] != self._stored_dim:
                if self._stored_dim is not None and done > 0:
                    raise EmbedderError(
                        f"embedder {self._model_id!r} changed dimension from {self._stored_dim} to "
                        f"{x.shape[1]} within one call; check the backend (for http: that embedder.url "
                        "serves a single model)"
                    )
                if self._stored_dim is not None:
                    # Same model_id, new dimension: the stored entries belong to another space. Drop them
                    # and embed this call's disk hits again so the answer comes from one space.
                    log.warning(
                        "embedding cache %s: model %s now gives dim %d, the cache held dim %d; cleared",
                        self.path, self._model_id, x.shape[1], self._stored_dim,
                    )
                    self.hits -= len(found)
                    todo.extend(found)
                    found = {}
                self._set_dim(x.shape[1])
            x = l2_normalize(x)  # the contract; also keeps a loose inner's answers equal on later hits
            self._store(chunk, x)
            self.misses += len(chunk)
            found.update(zip(chunk, x, strict=True))
            done += len(chunk)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def close(self) -> None:
        self._conn.close()
        self.inner.close()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path='{self.path}', hits={self.hits}, misses={self.misses})"
