"""What a codebook version directory holds and how it is checked (infra/codebook/store.py writes it): version
strings, the labels document, the manifest's distance quantiles, language codes and the clusterer's description.

Pure file and value checks: no Redis. ``read_labels`` reads a version's labels with only the directory."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compass.cluster import Clusterer
from compass.cluster.codebook import CodebookError
from infra.codebook.errors import CodebookVersionError
from infra.window.types import VERSION_RE

FORMAT = 1
_LANG = re.compile(r"^[a-z]{2,3}$")
LABELS_FILE = "labels.json"


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
