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
across a lineage, so the monitor windows (infra/window/) are kept across revisions and reset on a new fit.
The pointer moves only forward: a new fit must sort after the current lineage, a revision only replaces its
parent (a revision racing a newer fit is stored but not made current).

``distance_quantiles`` (paper §6.1, stale clusters) calibrates "far from every centroid": the 0.90/0.95/0.99
quantiles of the cosine distance ``1 - max_k x·c_k`` of each training row to its nearest centroid, computed when
``publish`` is given the vectors the clusterer was fitted on. A revision carries its parent's forward (eq. 2 moves
the centroids little); a fit published without its vectors has none (null), and the far share is then unmeasured.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

from compass.cluster import Clusterer, load_clusterer
from compass.cluster.codebook import Codebook, CodebookError, centroids_of, distance_quantiles, lineage_of
from compass.errors import CompassError
from infra.codebook.errors import CodebookNotFound
from infra.codebook.manifest import (
    FORMAT,
    LABELS_FILE,
    _check_labels,
    _check_languages,
    _check_quantiles,
    _clusterer_type,
    _describe,
    _dim,
    check_version,
    read_labels,
)
from infra.codebook.pointer import POINTER_LUA, move_pointer
from infra.keys import Keys
from infra.window.replies import text
from infra.window.types import VERSION_RE


class CodebookStore:
    """Codebook versions under ``root`` and the pointer to the current one in Redis (``client`` may be None
    for offline use: then nothing is current and ``publish`` only writes the files)."""

    def __init__(self, root: str | Path, client: redis.Redis | None, prefix: str = "compass"):
        self.root = Path(root)
        self.client = client
        self.prefix = prefix
        self.pointer_key = Keys(prefix).codebook_current()
        self._pointer = client.register_script(POINTER_LUA) if client is not None else None

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
        move_pointer(self._pointer, self.pointer_key, self.root, version, parent)

    # ------------------------------------------------------------------ read

    def current_version(self) -> str | None:
        """The version the pointer names; None when nothing is published (or no Redis client)."""
        if self.client is None:
            return None
        value = self.client.get(self.pointer_key)
        return text(value) if value is not None else None

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
