"""A fitted clusterer on disk, never pickled: ``manifest.json`` (type, params, state, format version) and one
``<name>.npy`` per array, read back with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from compass import __version__
from compass.cluster.errors import ClusterLoadError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_dir(
    path: str | Path, kind: str, params: dict[str, Any], state: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Write ``manifest.json`` and one ``<name>.npy`` per array (numeric dtypes only, so no pickle is ever needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        assert arr.dtype.kind in "fiub", f"{name}: {arr.dtype} would need pickle"
        np.save(path / f"{name}.npy", arr, allow_pickle=False)
    manifest = {
        "type": kind,
        "format_version": FORMAT_VERSION,
        "compass_version": __version__,
        "params": params,
        "state": state,
        "arrays": sorted(arrays),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    f = path / MANIFEST
    if not f.is_file():
        raise ClusterLoadError(f"{path}: no {MANIFEST}; pass the directory a clusterer's save() wrote.")
    try:
        manifest = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ClusterLoadError(f"{f}: not valid JSON ({e}); save the clusterer again.") from None
    for key in ("type", "format_version", "params", "state", "arrays"):
        if key not in manifest:
            raise ClusterLoadError(f"{f}: missing key {key!r}; save the clusterer again.")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ClusterLoadError(
            f"{f}: format_version {manifest['format_version']!r}, this compass reads {FORMAT_VERSION}; "
            "refit and save with this version."
        )
    return manifest


def read_arrays(path: str | Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    path = Path(path)
    out = {}
    for name in manifest["arrays"]:
        f = path / f"{name}.npy"
        try:
            out[name] = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ClusterLoadError(f"{f}: cannot be read without pickle ({e}); save the clusterer again.") from None
    return out
