"""The versioned adapter registry: per language, immutable versions plus a ``current`` pointer.

Layout under the root (a local directory or any fsspec URL, e.g. ``s3://bucket/adapters``)::

    <lang>/versions/<version>/adapter_model.safetensors   weights (safetensors; no pickle anywhere)
                              adapter_config.json         the PEFT adapter config
                              <extra files>               e.g. fisher.safetensors
                              manifest.json               AdapterManifest; its presence marks "complete"
    <lang>/current                                        JSON of the promotion record now in force
    <lang>/promotions.jsonl                               every promote / rollback, oldest first
    <lang>/.tmp-<version>-<rand>/                         a version being written (local roots only)

Crash safety. Locally a version is written into a ``.tmp-*`` directory (files fsynced) and renamed into
``versions/`` in one ``rename``; the pointer and the history are replaced with ``os.replace``. A writer killed
at any point leaves either no version or a complete one; a leftover ``.tmp-*`` directory is never listed and
is removed by a later write once it is older than ``stale_tmp_s``. Object stores have no atomic directory
rename, so there the files are written in place with ``manifest.json`` LAST, and a directory without a
manifest counts as incomplete: never listed, never promotable, overwritten by a retry. Single-object PUTs
are atomic on S3/GCS/memory, so the pointer still switches from one version to the next with nothing between.

Concurrency: one writer per language at a time; the daemon's per-language lease (infra/lock.py) ensures it.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import secrets
import time
from collections.abc import Mapping
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from compass.registry.manifest import (
    AdapterManifest,
    RegistryError,
    check_file_name,
    check_language,
    check_version,
    utc_now,
)

log = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
RESERVED = frozenset({WEIGHTS, CONFIG, MANIFEST})
GATE_OUTCOMES = frozenset({"pass", "manual"})  # the pointer moves only after the gate passed, or by ops' hand


class AdapterRegistry:
    """Versioned per-language adapters under ``root`` (local path or fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str], stale_tmp_s: float = 3600.0):
        self.url = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        # A live writer's temp dir must not be swept by another; anything older than this is a dead writer's.
        self.stale_tmp_s = stale_tmp_s

    def __repr__(self) -> str:
        return f"AdapterRegistry({self.url!r})"

    # ----- paths -----
    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _version_dir(self, lang: str, version: str) -> str:
        return self._p(check_language(lang), "versions", check_version(version))

    # ----- versions -----
    def write_version(
        self,
        lang: str,
        tensors: Mapping[str, torch.Tensor],
        adapter_config: Mapping[str, Any],
        manifest: AdapterManifest,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> str:
        """Store a new immutable version; returns its version string. Does not move ``current``."""
        check_language(lang)
        version = check_version(manifest.version, "manifest.version")
        if manifest.language != lang:
            raise RegistryError(f"manifest.language is {manifest.language!r} but the version is written under "
                                f"{lang!r}; build the manifest with language={lang!r}")
        extra = dict(extra_files or {})
        for name, data in extra.items():
            check_file_name(name, "extra file name")
            if name in RESERVED:
                raise RegistryError(f"extra file name {name!r} is reserved by the registry; pick another name")
            if not isinstance(data, bytes | bytearray):
                raise RegistryError(f"extra file {name!r} is {type(data).__name__}; give its content as bytes")
        if manifest.fisher_file is not None and manifest.fisher_file not in extra:
            raise RegistryError(f"manifest.fisher_file is {manifest.fisher_file!r} but no such extra file is "
                                "given; pass its bytes in extra_files or set fisher_file=None")
        if manifest.parent is not None and not self._complete(lang, manifest.parent):
            raise RegistryError(f"manifest.parent {manifest.parent!r} is not a complete version of {lang!r}; "
                                f"use one of {self.versions(lang)} or None")
        if self._complete(lang, version):
            raise RegistryError(f"version {version!r} of {lang!r} already exists and versions are immutable; "
                                "write under a new version (compass.registry.new_version())")
        files = {WEIGHTS: _tensor_bytes(tensors),
                 CONFIG: (json.dumps(dict(adapter_config), indent=2, sort_keys=True) + "\n").encode(), **extra,
                 MANIFEST: manifest.to_json().encode()}  # manifest last: on object stores it marks completeness
        if self.local:
            self._write_local(lang, version, files)
        else:
            self._write_remote(lang, version, files)
        log.info("registry %s: wrote %s/%s", self.url, lang, version)
        return version

    def _write_local(self, lang: str, version: str, files: dict[str, bytes]) -> None:
        lang_dir = self._p(lang)
        os.makedirs(self._p(lang, "versions"), exist_ok=True)
        self._sweep_tmp(lang)
        tmp = self._p(lang, f".tmp-{version}-{secrets.token_hex(4)}")
        os.mkdir(tmp)
        for name, data in files.items():
            _write_synced(posixpath.join(tmp, name), data)
        _fsync_dir(tmp)
        final = self._version_dir(lang, version)
        if os.path.exists(final):  # an empty dir would be silently replaced by rename; a full one makes it fail
            raise RegistryError(f"{final} exists but has no manifest; remove it by hand, then write again")
        os.rename(tmp, final)  # the commit point: one rename, the version appears whole or not at all
        _fsync_dir(self._p(lang, "versions"))
        _fsync_dir(lang_dir)

    def _write_remote(self, lang: str, version: str, files: dict[str, bytes]) -> None:
        final = self._version_dir(lang, version)
        if self.fs.exists(final):  # a killed writer's incomplete version (no manifest): start it over
            self.fs.rm(final, recursive=True)
        for name, data in files.items():
            self.fs.pipe_file(posixpath.join(final, name), bytes(data))

    def _sweep_tmp(self, lang: str) -> None:
        """Remove ``.tmp-*`` dirs of dead writers (older than ``stale_tmp_s``); younger ones may be live."""
        cutoff = time.time() - self.stale_tmp_s
        with os.scandir(self._p(lang)) as entries:
            for e in entries:
                if e.name.startswith(".tmp-") and e.is_dir(follow_symlinks=False) and e.stat().st_mtime < cutoff:
                    log.warning("registry %s: removing %s left by a killed writer", self.url, e.path)
                    self.fs.rm(e.path, recursive=True)

    def _complete(self, lang: str, version: str) -> bool:
        return self.fs.isfile(posixpath.join(self._version_dir(lang, version), MANIFEST))

    def versions(self, lang: str) -> list[str]:
        """Complete versions of ``lang``, sorted (generated versions sort by creation time)."""
        base = self._p(check_language(lang), "versions")
        if not self.fs.isdir(base):
            return []
        out = []
        for entry in self.fs.ls(base, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "directory" and _valid_version(name) and self._complete(lang, name):
                out.append(name)
        return sorted(out)

    def read_version(self, lang: str, version: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], AdapterManifest]:
        """Weights, adapter config and manifest of a complete version, exactly as written."""
        d = self._version_dir(lang, version)
        if not self._complete(lang, version):
            raise RegistryError(f"{lang!r} has no complete version {version!r}; use one of {self.versions(lang)}")
        manifest = AdapterManifest.from_json(self.fs.cat_file(posixpath.join(d, MANIFEST)),
                                             f"{self.url}/{lang}/versions/{version}/{MANIFEST}")
        if (manifest.language, manifest.version) != (lang, version):
            raise RegistryError(f"{d}/{MANIFEST} says {manifest.language}/{manifest.version}, not {lang}/{version}; "
                                "the directory was moved or edited by hand: restore it or remove it")
        tensors = st_load(self.fs.cat_file(posixpath.join(d, WEIGHTS)))
        config = json.loads(self.fs.cat_file(posixpath.join(d, CONFIG)))
        return tensors, config, manifest

    def read_file(self, lang: str, version: str, name: str) -> bytes:
        """An extra file of a version (e.g. the manifest's ``fisher_file``)."""
        if not self._complete(lang, version):
            raise RegistryError(f"{lang!r} has no complete version {version!r}; use one of {self.versions(lang)}")
        path = posixpath.join(self._version_dir(lang, version), check_file_name(name))
        if not self.fs.isfile(path):
            raise RegistryError(f"version {lang}/{version} has no file {name!r}; see `compass adapters show`")
        return self.fs.cat_file(path)

    def files(self, lang: str, version: str) -> list[str]:
        d = self._version_dir(lang, version)
        return sorted(posixpath.basename(p) for p in self.fs.ls(d, detail=False))

    def languages(self) -> list[str]:
        """Languages with a ``versions`` directory, sorted."""
        if not self.fs.isdir(self.root):
            return []
        out = []
        for entry in self.fs.ls(self.root, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "directory" and _valid_language(name) and self.fs.isdir(self._p(name, "versions")):
                out.append(name)
        return sorted(out)

    # ----- pointer and history -----
    def current(self, lang: str) -> str | None:
        """The version serving ``lang`` now, or None before the first promotion."""
        rec = self._pointer(lang)
        return rec["version"] if rec else None

    def history(self, lang: str) -> list[dict[str, Any]]:
        """Promotion records oldest first: {seq, action, version, previous, at, gate, reason}."""
        path = self._p(check_language(lang), "promotions.jsonl")
        records: list[dict[str, Any]] = []
        if self.fs.isfile(path):
            for i, line in enumerate(self.fs.cat_file(path).decode().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        log.warning("registry %s: %s line %d is not JSON; skipped", self.url, path, i)
        pointer = self._pointer(lang)
        # Killed between the pointer write (the commit) and the history write: the pointer's record is the truth.
        if pointer and (not records or records[-1]["seq"] < pointer["seq"]):
            records.append(pointer)
        return records

    def promote(self, lang: str, version: str, gate: Mapping[str, Any]) -> None:
        """Point ``current`` of ``lang`` at ``version``; ``gate`` must show outcome 'pass' (or 'manual' by ops)."""
        outcome = gate.get("outcome") if isinstance(gate, Mapping) else None
        if outcome not in GATE_OUTCOMES:
            raise RegistryError(f"gate outcome is {outcome!r}; only a gate with outcome in {sorted(GATE_OUTCOMES)} "
                                "may move the pointer: fix the candidate or promote by hand (`compass adapters "
                                "promote`)")
        self._move(lang, version, "promote", gate=dict(gate))

    def rollback(self, lang: str, to: str | None = None, reason: str = "") -> str:
        """Point ``current`` back at the previously promoted version (undo, repeatable) or at ``to``."""
        if to is None:
            stack = _stack(self.history(lang))
            if len(stack) < 2:
                raise RegistryError(f"{lang!r} has no earlier promoted version to roll back to (promoted: "
                                    f"{stack}); name one with --to, from {self.versions(lang)}")
            to = stack[-2]
            self._move(lang, to, "rollback", reason=reason, undo=True)
        else:
            self._move(lang, to, "rollback", reason=reason, undo=False)
        return to

    def _move(self, lang: str, version: str, action: str, gate: dict | None = None, reason: str = "",
              undo: bool = False) -> None:
        if not self._complete(lang, version):
            raise RegistryError(f"{lang!r} has no complete version {version!r}; use one of {self.versions(lang)}")
        records = self.history(lang)
        rec = {"seq": (records[-1]["seq"] + 1) if records else 1, "action": action, "version": version,
               "previous": records[-1]["version"] if records else None, "undo": undo, "at": utc_now(),
               "gate": gate, "reason": reason}
        # Pointer first: it is what serving reads, so it is the commit; history() heals a missing log line.
        self._atomic_write(self._p(lang, "current"), (json.dumps(rec, sort_keys=True) + "\n").encode())
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in [*records, rec])
        self._atomic_write(self._p(lang, "promotions.jsonl"), lines.encode())
        log.info("registry %s: %s %s -> %s", self.url, action, lang, version)

    def _pointer(self, lang: str) -> dict[str, Any] | None:
        path = self._p(check_language(lang), "current")
        if not self.fs.isfile(path):
            return None
        try:
            rec = json.loads(self.fs.cat_file(path))
            check_version(rec["version"])
            return rec
        except (ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"{path} is corrupt ({e}); repair it with `compass adapters rollback {lang} --to V`"
                                ) from None

    def _atomic_write(self, path: str, data: bytes) -> None:
        if self.local:
            tmp = f"{path}.tmp-{secrets.token_hex(4)}"
            _write_synced(tmp, data)
            os.replace(tmp, path)
            _fsync_dir(posixpath.dirname(path))
        else:  # one PUT: readers see the old object or the new one
            self.fs.pipe_file(path, data)


def _stack(records: list[dict[str, Any]]) -> list[str]:
    """Replay the history as a stack: promote / rollback --to push; a plain rollback pops (undo)."""
    stack: list[str] = []
    for r in records:
        if r.get("undo"):
            if stack:
                stack.pop()
            if not stack or stack[-1] != r["version"]:
                stack.append(r["version"])
        else:
            stack.append(r["version"])
    return stack


def _tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise RegistryError(f"tensors {bad[:5]} are not str -> torch.Tensor; pass a state dict "
                            "(peft.get_peft_model_state_dict(model))")
    if not tensors:
        raise RegistryError("tensors is empty; pass the adapter's state dict")
    # clone(): safetensors refuses tensors sharing storage; contiguous CPU copies are bit-identical.
    return st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})


def _valid_version(name: str) -> bool:
    try:
        check_version(name)
        return True
    except RegistryError:
        return False


def _valid_language(name: str) -> bool:
    try:
        check_language(name)
        return True
    except RegistryError:
        return False


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
