"""Versioned cluster codebooks: fitted clusterers on disk, the current version named by a pointer in Redis.

Layout under ``root`` (``consumer.codebook_dir``)::

    <version>/manifest.json   {"format", "version", "lineage", "type", "model_id", "languages", "parent",
                               "created_at", "n_clusters", "dim", "distance_quantiles", "origin" (a re-fit's:
                               reason, job_id, n_window per language, n_pool; absent otherwise)}
    <version>/clusterer/      the clusterer's own save(): manifest.json + .npy files (no pickle)
    <version>/labels.json     optional: per cluster its label terms and representative texts
                              (compass/cluster/labels.py; a revision copies its parent's)

A version directory is written in a temporary directory and renamed into place, so a reader sees a whole
codebook or none. The Redis key ``{prefix}:codebook:current`` names the version consumers use.

Versions sort by creation time and are unique: a fit is ``20250101T120000-123456-a1b2c3`` (UTC time,
microseconds, random hex), its lineage is itself. A revision (eq. 2 moved the centroids of the same clusters;
``parent`` given, same type, K, dim and embedder) is ``<lineage>.<time>-<hex>``: bucket ids keep their meaning
across a lineage, so the monitor windows (infra/window.py) are kept across revisions and reset on a new fit.
The pointer moves only forward: a new fit must sort after the current lineage, a revision only replaces its
parent (a revision racing a newer fit is stored but not made current).

``distance_quantiles`` (paper §6.1, stale clusters) calibrates "far from every centroid": the 0.90/0.95/0.99
quantiles of the cosine distance ``1 - max_k x·c_k`` of each training row to its nearest centroid, computed when
``publish`` is given the vectors the clusterer was fitted on. A revision carries its parent's forward (eq. 2 moves
the centroids little); a fit published without its vectors has none (null), and the far share is then unmeasured.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

from compass.cluster import Clusterer, load_clusterer
from compass.cluster.codebook import Codebook, CodebookError, centroids_of, distance_quantiles, lineage_of
from compass.cluster.codebook import EmbedderMismatch as EmbedderMismatch  # re-exported: the watcher's callers catch it
from compass.errors import CompassError
from infra.keys import Keys
from infra.window import LUA_OLDER, VERSION_RE

log = logging.getLogger(__name__)

FORMAT = 1
_LANG = re.compile(r"^[a-z]{2,3}$")
LABELS_FILE = "labels.json"


class CodebookNotFound(CodebookError, LookupError):
    """No codebook is published (no pointer), or the version's directory does not exist."""


class CodebookVersionError(CompassError, ValueError):
    """A version string is malformed (only [A-Za-z0-9._-], starting with a letter or digit)."""


# KEYS: pointer. ARGV: new version, new lineage, expected parent ('' = a new fit).
# Returns {1, previous} when set, {0, current} when refused.
_POINTER_LUA = LUA_OLDER + r"""
local cur = redis.call('GET', KEYS[1])
if ARGV[3] ~= '' then
  if cur ~= ARGV[3] then return {0, cur or ''} end
elseif cur and not older(string.match(cur, '^[^.]+'), ARGV[2]) then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, cur or ''}
"""


class CodebookStore:
    """Codebook versions under ``root`` and the pointer to the current one in Redis (``client`` may be None
    for offline use: then nothing is current and ``publish`` only writes the files)."""

    def __init__(self, root: str | Path, client: redis.Redis | None, prefix: str = "compass"):
        self.root = Path(root)
        self.client = client
        self.prefix = prefix
        self.pointer_key = Keys(prefix).codebook_current()
        self._pointer = client.register_script(_POINTER_LUA) if client is not None else None

    # ------------------------------------------------------------------ write

    def publish(
        self,
        clusterer: Clusterer,
        model_id: str,
        languages: Sequence[str] | None = None,
        parent: str | None = None,
        revision: bool | None = None,
        X_fit: np.ndarray | None = None,
        labels: dict | None = None,
        origin: Mapping[str, Any] | None = None,
        make_current: bool = True,
    ) -> Codebook:
        """Store ``clusterer`` as a new version and make it current (``make_current`` False: store it only; a
        re-fit moves the pointer later together with the languages' references, infra/reference.py
        ``switch_codebook``).

        ``revision``: the new version keeps ``parent``'s cluster ids (eq. 2 moved the centroids). None (the
        default) decides from the files: a parent of the same type, K, dim and embedder makes a revision.
        Pass False for a re-fit that merely records where it came from.

        ``X_fit``: the (n, dim) vectors the clusterer was fitted on; their nearest-centroid distances give the
        manifest's ``distance_quantiles``. Without it a revision keeps its parent's, anything else has none.

        ``labels``: the labels document (``compass.cluster.labels.label_clusters``), stored as ``labels.json``;
        without it a revision keeps its parent's (same clusters), anything else has none.

        ``origin``: JSON-safe lineage facts stored as the manifest's ``origin`` (a re-fit: reason, job_id, rows per
        language and from the pool).
        """
        if not isinstance(model_id, str) or not model_id:
            raise CodebookError(f"model_id must be the embedder's non-empty model_id; got {model_id!r}")
        langs = _check_languages(languages)
        meta = {
            "format": FORMAT,
            "type": _clusterer_type(clusterer),
            "model_id": model_id,
            "languages": list(langs) if langs is not None else None,
            "parent": parent,
            "n_clusters": int(clusterer.n_clusters_),
            "dim": _dim(clusterer),
            "distance_quantiles": None if X_fit is None else distance_quantiles(X_fit, centroids_of(clusterer)),
        }
        if origin is not None:
            meta["origin"] = dict(origin)
        if labels is not None:
            _check_labels("(new)", "labels", labels, int(clusterer.n_clusters_))
        lineage = None
        if parent is not None:
            parent_meta = self._manifest(parent)
            same = all(parent_meta.get(f) == meta[f] for f in ("type", "n_clusters", "dim", "model_id"))
            if revision and not same:
                raise CodebookError(
                    f"publish(revision=True): parent {parent} is {_describe(parent_meta)} but the clusterer is "
                    f"{_describe(meta)}; a revision keeps type, K, dim and embedder: publish it as a new fit "
                    "(revision=False)"
                )
            if same and revision is not False:
                lineage = lineage_of(parent)
                if X_fit is None:
                    meta["distance_quantiles"] = parent_meta.get("distance_quantiles")
                if labels is None:
                    labels = read_labels(self.root, parent)
        elif revision:
            raise CodebookError("publish(revision=True) needs parent: the version whose cluster ids it keeps")

        created_at = time.time()
        stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%dT%H%M%S-%f")
        own = f"{stamp}-{secrets.token_hex(3)}"
        version = f"{lineage}.{own}" if lineage else own
        meta = {"format": FORMAT, "version": version, "lineage": lineage_of(version), **meta}
        meta["created_at"] = created_at

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{version}-{os.getpid()}"
        try:
            tmp.mkdir()
            clusterer.save(tmp / "clusterer")
            if labels is not None:
                (tmp / LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False) + "\n", encoding="utf-8")
            (tmp / "manifest.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.rename(tmp, self.root / version)  # atomic: readers see the whole version or none
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_current:
            self._move_pointer(version, parent if lineage else None)
        return Codebook(version, clusterer, model_id, langs, created_at, parent, meta["distance_quantiles"])

    def restore(self, version: str) -> Codebook:
        """Make a stored ``version`` current again where no pointer exists (e.g. a fresh Redis) and return it."""
        codebook = self.load(version)
        self._move_pointer(check_version(version), None)
        return codebook

    def _move_pointer(self, version: str, parent: str | None) -> None:
        if self._pointer is None:
            return
        done, other = self._pointer(keys=[self.pointer_key], args=[version, lineage_of(version), parent or ""])
        other = _text(other)
        if int(done):
            return
        if parent is not None:
            # A newer codebook became current while this revision was computed: the newer one wins.
            log.warning(
                "codebook revision stored but not made current: the pointer moved from its parent meanwhile",
                extra={"version": version, "parent": parent, "current": other},
            )
            return
        raise CodebookError(
            f"codebook {version} is stored in {self.root / version} but not made current: the current version "
            f"{other} sorts after it (versions are UTC times; check this host's clock), and windows never go "
            "back to an older lineage"
        )

    # ------------------------------------------------------------------ read

    def current_version(self) -> str | None:
        """The version the pointer names; None when nothing is published (or no Redis client)."""
        if self.client is None:
            return None
        value = self.client.get(self.pointer_key)
        return _text(value) if value is not None else None

    def versions(self) -> list[str]:
        """Versions stored under ``root``, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if VERSION_RE.match(p.name) and (p / "manifest.json").is_file()
        )

    def manifest(self, version: str | None = None) -> dict:
        """The manifest of ``version`` (None: the current one), without loading the clusterer."""
        return self._manifest(self._resolve(version))

    def load(self, version: str | None = None) -> Codebook:
        """Load ``version`` (None: the pointer's) from disk; a fresh object on every call."""
        version = self._resolve(version)
        meta = self._manifest(version)
        path = self.root / version / "clusterer"
        try:
            clusterer = load_clusterer(path)
        except CompassError as e:
            raise CodebookError(f"codebook {version}: its clusterer in {path} cannot be loaded: {e}") from e
        except (OSError, ValueError, KeyError) as e:
            raise CodebookError(
                f"codebook {version}: its clusterer in {path} cannot be loaded ({type(e).__name__}: {e}); "
                "the directory is damaged: publish a new version"
            ) from e
        if int(clusterer.n_clusters_) != meta["n_clusters"]:
            raise CodebookError(
                f"codebook {version}: the manifest says n_clusters {meta['n_clusters']} but the clusterer in "
                f"{path} has {clusterer.n_clusters_}; the directory is damaged: publish a new version"
            )
        langs = tuple(meta["languages"]) if meta.get("languages") is not None else None
        quantiles = _check_quantiles(version, path.parent / "manifest.json", meta.get("distance_quantiles"))
        return Codebook(version, clusterer, meta["model_id"], langs, float(meta["created_at"]), meta.get("parent"),
                        quantiles)

    def labels(self, version: str | None = None) -> dict | None:
        """The labels document of ``version`` (None: the current one), or None when it has none."""
        return read_labels(self.root, self._resolve(version))

    def _resolve(self, version: str | None) -> str:
        if version is None:
            version = self.current_version()
            if version is None:
                raise CodebookNotFound(
                    f"no codebook is current (Redis key {self.pointer_key} is unset); publish one with "
                    "`compass codebook build RECORDS`"
                )
        check_version(version)
        return version

    def _manifest(self, version: str) -> dict:
        check_version(version)
        path = self.root / version / "manifest.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CodebookNotFound(
                f"codebook {version}: {path} does not exist; versions here: {self.versions()[-5:]} "
                f"(is consumer.codebook_dir {self.root} the directory the codebook was published to?)"
            ) from None
        except (OSError, ValueError) as e:
            raise CodebookError(f"codebook {version}: {path} is unreadable ({e}); publish a new version") from e
        missing = [f for f in ("type", "model_id", "n_clusters", "dim", "created_at") if f not in meta]
        if missing or meta.get("version") != version or meta.get("format") != FORMAT:
            raise CodebookError(
                f"codebook {version}: {path} is not a format-{FORMAT} manifest of this version (missing {missing}, "
                f"version {meta.get('version')!r}, format {meta.get('format')!r}); publish a new version"
            )
        return meta


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


def check_version(version: str) -> str:
    """``version`` if it is a well-formed version string (nothing that could leave ``root``)."""
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise CodebookVersionError(
            f"codebook version must be 1-128 of [A-Za-z0-9._-] starting with a letter or digit, without '..'; "
            f"got {version!r}"
        )
    return version


def read_labels(root: str | Path, version: str) -> dict | None:
    """``<root>/<version>/labels.json`` checked, or None when the version has no labels (no Redis needed)."""
    path = Path(root) / check_version(version) / LABELS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CodebookError(f"codebook {version}: {path} is unreadable ({e}); rebuild the codebook") from e
    _check_labels(version, str(path), doc, None)
    return doc


def _check_labels(version: str, where: str, doc: object, n_clusters: int | None) -> None:
    clusters = doc.get("clusters") if isinstance(doc, dict) else None
    ok = isinstance(clusters, list) and all(
        isinstance(c, dict) and c.get("cluster") == i and isinstance(c.get("label"), str)
        and isinstance(c.get("examples", []), list) for i, c in enumerate(clusters)
    )
    if not ok or (n_clusters is not None and len(clusters) != n_clusters):
        raise CodebookError(
            f"codebook {version}: {where} is not a labels document with one entry per cluster "
            f"({n_clusters if n_clusters is not None else 'K'}) of cluster id, label and examples; build it with "
            "compass.cluster.labels.label_clusters"
        )


def _check_quantiles(version: str, path: Path, value: object) -> dict[str, float] | None:
    if value is None:
        return None
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and _is_quantile(k) and isinstance(v, int | float) and 0.0 <= v <= 2.0
        for k, v in value.items()
    )
    if not ok:
        raise CodebookError(
            f"codebook {version}: {path} field distance_quantiles is {value!r}, not null or a map of quantile "
            '("0.95") to a cosine distance in [0, 2]; the directory is damaged: publish a new version'
        )
    return {k: float(v) for k, v in value.items()}


def _is_quantile(key: str) -> bool:
    try:
        return 0.0 < float(key) < 1.0
    except ValueError:
        return False


def _check_languages(languages: Sequence[str] | None) -> tuple[str, ...] | None:
    if languages is None:
        return None
    if isinstance(languages, str):
        raise CodebookError(f"languages must be a list of codes or None, not the string {languages!r}")
    bad = [code for code in languages if not isinstance(code, str) or not _LANG.match(code)]
    if bad:
        raise CodebookError(f"languages: {bad} are not compass language codes (2-3 lowercase letters)")
    return tuple(sorted(set(languages)))


def _clusterer_type(clusterer: Clusterer) -> str:
    return str(getattr(clusterer, "name", None) or type(clusterer).__name__)


def _dim(clusterer: Clusterer) -> int | None:
    centroids = getattr(clusterer, "centroids_", None)
    return int(np.asarray(centroids).shape[1]) if centroids is not None and np.ndim(centroids) == 2 else None


def _describe(meta: dict) -> str:
    return f"{meta.get('type')} K={meta.get('n_clusters')} dim={meta.get('dim')} on {meta.get('model_id')}"


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
