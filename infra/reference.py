"""P_ref per language (eq. 3) in Redis, stored with the adapter version and codebook it belongs to.

Key ``{prefix}:{lang}:ref`` (hash-tagged like every key of the language), JSON::

    {"probs": [...], "counts": [...] | null, "codebook_version": "v2", "adapter_version": "a7",
     "created_at": 1732270000.0}

``probs`` sums to 1 over the codebook's buckets (clusters + noise, the window's layout). The training worker
writes it when it promotes an adapter; ``compass ref set`` writes it by hand (ops, tests).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import redis

from compass.drift import reference_distribution
from compass.errors import CompassError
from infra.keys import Keys


class BadReference(CompassError, ValueError):
    """A reference distribution that is invalid (given) or unreadable (stored)."""


@dataclass(frozen=True)
class Reference:
    language: str
    probs: list[float]
    codebook_version: str
    adapter_version: str
    created_at: float
    counts: list[float] | None = None

    @property
    def n_buckets(self) -> int:
        return len(self.probs)


def reference_key(lang: str, prefix: str = "compass") -> str:
    return Keys(prefix).reference(lang)


def _probs_from(counts: Sequence[float] | np.ndarray | None, probs: Sequence[float] | np.ndarray | None) -> list[float]:
    if (counts is None) == (probs is None):
        raise BadReference("give exactly one of counts (eq. 3 numerators) or probs (a distribution)")
    if counts is not None:
        arr = np.asarray(counts, dtype=np.float64)
        try:  # eq. 3 with n_aux_selected folded into the counts
            return reference_distribution(arr, np.zeros_like(arr)).tolist()
        except ValueError as e:
            raise BadReference(f"counts: {e}") from None
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise BadReference(f"probs: got {arr.tolist()}; must be a non-empty vector of finite values >= 0")
    if not math.isclose(float(arr.sum()), 1.0, abs_tol=1e-6):
        raise BadReference(f"probs: sums to {arr.sum():.6g}; must sum to 1 (or pass counts instead)")
    return (arr / arr.sum()).tolist()


def set_reference(
    client: redis.Redis,
    lang: str,
    *,
    codebook_version: str,
    adapter_version: str,
    counts: Sequence[float] | np.ndarray | None = None,
    probs: Sequence[float] | np.ndarray | None = None,
    prefix: str = "compass",
    created_at: float | None = None,
) -> Reference:
    """Store P_ref of ``lang`` from ``counts`` (n_eval + n_aux_selected per bucket) or ``probs``."""
    for name, value in (("codebook_version", codebook_version), ("adapter_version", adapter_version)):
        if not isinstance(value, str) or not value:
            raise BadReference(f"{name}: got {value!r}; must be a non-empty string")
    ref = Reference(
        language=lang,
        probs=_probs_from(counts, probs),
        codebook_version=codebook_version,
        adapter_version=adapter_version,
        created_at=time.time() if created_at is None else float(created_at),
        counts=None if counts is None else [float(c) for c in counts],
    )
    client.set(reference_key(lang, prefix), json.dumps(asdict(ref)))
    return ref


def get_reference(client: redis.Redis, lang: str, prefix: str = "compass") -> Reference | None:
    """The stored P_ref of ``lang``; None when none was set; BadReference when the stored value is corrupt."""
    key = reference_key(lang, prefix)
    raw = client.get(key)
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
        ref = Reference(**obj)
        _probs_from(None, ref.probs)
    except (ValueError, TypeError) as e:
        raise BadReference(f"{key}: unreadable reference ({e}); rewrite it with `compass ref set {lang} ...`") from None
    return ref
