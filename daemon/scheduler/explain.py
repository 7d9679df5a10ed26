"""Drift explained with the codebook's labels: the I/O around the pure ``compass.drift.explain``.

``explain_window`` compares a window with P_ref (when they share a codebook lineage and bucket count) and names
the top clusters with the labels stored next to the codebook (``labels.json``, read through ``LabelCache``:
files of a version never change). Representative queries appear only when the codebook kept them and
``codebook.store_examples`` is still true; ``top_clusters`` (the ``drift_detected`` event's list) never carries
texts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from compass.drift.explain import explain
from infra.codebook import read_labels
from infra.reference import Reference
from infra.window import WindowSnapshot, lineage_of

log = logging.getLogger(__name__)
TOP = 5


class LabelCache:
    """Labels documents per codebook version under ``root``; a missing or damaged file is None (logged once)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._docs: dict[str, dict | None] = {}
        self._lock = threading.Lock()

    def get(self, version: str | None) -> dict | None:
        if version is None:
            return None
        with self._lock:
            if version not in self._docs:
                try:
                    self._docs[version] = read_labels(self.root, version)
                except Exception as e:  # an explanation without labels still helps
                    log.warning("codebook %s: labels not read (%s); clusters are shown by id", version, e)
                    self._docs[version] = None
            return self._docs[version]


def explain_window(ref: Reference | None, snap: WindowSnapshot, labels: dict | None, *, top: int = TOP,
                   examples: bool = True) -> dict[str, Any]:
    """``{"available", "reason", "codebook_version", "labeled", "js", "n_samples", "clusters"}``; ``available``
    false (with ``reason``) when there is nothing to compare."""
    out: dict[str, Any] = {"available": False, "reason": None, "codebook_version": snap.codebook_version,
                           "labeled": labels is not None, "js": None, "n_samples": snap.size, "clusters": []}
    if ref is None:
        out["reason"] = "no P_ref; set one with `compass ref set`"
    elif snap.size == 0 or snap.codebook_version is None:
        out["reason"] = "the window is empty"
    elif lineage_of(snap.codebook_version) != lineage_of(ref.codebook_version) or len(snap.counts) != ref.n_buckets:
        out["reason"] = (f"window codebook {snap.codebook_version} ({len(snap.counts)} buckets) is not comparable "
                         f"with P_ref's {ref.codebook_version} ({ref.n_buckets})")
    if out["reason"]:
        return out
    rows = (labels or {}).get("clusters") or []
    keep = examples and bool((labels or {}).get("store_examples", True))
    e = explain(np.asarray(ref.probs), snap.counts, labels=[r.get("label") for r in rows],
                examples=[r.get("examples") or [] for r in rows] if keep else None, top=top)
    return {**out, "available": True, **e.to_dict()}


def top_clusters(explanation: dict[str, Any]) -> list[dict[str, Any]]:
    """The short form for an event: cluster, label and the shares and JS term, rounded; no texts."""
    return [{"cluster": c["cluster"], "label": c["label"], "p_ref": round(c["p_ref"], 6),
             "p_window": round(c["p_window"], 6), "js_term": round(c["js_term"], 6)}
            for c in explanation.get("clusters", [])]
