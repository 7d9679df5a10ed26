"""P_ref per language (eq. 3) in Redis, stored with the adapter version and codebook it belongs to.

Key ``{prefix}:{lang}:ref`` (hash-tagged like every key of the language), JSON::

    {"probs": [...], "counts": [...] | null, "codebook_version": "v2", "adapter_version": "a7",
     "created_at": 1732270000.0, "origin": null | "recluster:<job_id>", "baseline": null | [...]}

``probs`` sums to 1 over the codebook's buckets (clusters + noise, the window's layout). The training worker
writes it when it promotes an adapter; ``compass ref set`` writes it by hand (ops, tests); a re-fit
(daemon/worker/recluster.py) writes every language's at once with the new codebook pointer (``switch_codebook``),
each with its ``baseline``: the counts, on the same buckets, of the traffic its adapter was trained for (the
adapter's stored window rows re-assigned), from which the daemon arms the learned detectors at once
(compass/drift/baseline.py). JSON written before baselines existed loads with ``baseline`` None.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import redis
from redis.cluster import RedisCluster

from compass.cluster.codebook import CodebookError, lineage_of
from compass.drift import reference_distribution
from compass.errors import CompassError
from infra.codebook import CodebookStore
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
    origin: str | None = None  # None: written with its adapter (a promotion, ops); "recluster:<job_id>": a re-fit
    baseline: list[float] | None = None  # a re-fit's: the adapter's training traffic per bucket; None: live burn-in

    @property
    def n_buckets(self) -> int:
        return len(self.probs)

    @property
    def identity(self) -> str:
        """What the daemon's lifecycle calls the reference (``ref_id``): a new one is a new baseline (re-armed, a
        new burn-in). The adapter version, as before re-fits existed; a re-fit's reference on the same adapter
        adds its codebook, so the re-fit is a new baseline too."""
        return self.adapter_version if self.origin is None else f"{self.adapter_version}@{self.codebook_version}"


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


def make_reference(
    lang: str,
    *,
    codebook_version: str,
    adapter_version: str,
    counts: Sequence[float] | np.ndarray | None = None,
    probs: Sequence[float] | np.ndarray | None = None,
    created_at: float | None = None,
    origin: str | None = None,
    baseline: Sequence[float] | np.ndarray | None = None,
) -> Reference:
    """P_ref of ``lang`` from ``counts`` (n_eval + n_aux_selected per bucket) or ``probs``, checked, not stored;
    ``baseline``: the counts of the traffic its adapter was trained for, on the same buckets (a re-fit's)."""
    for name, value in (("codebook_version", codebook_version), ("adapter_version", adapter_version)):
        if not isinstance(value, str) or not value:
            raise BadReference(f"{name}: got {value!r}; must be a non-empty string")
    p = _probs_from(counts, probs)
    return Reference(
        language=lang,
        probs=p,
        codebook_version=codebook_version,
        adapter_version=adapter_version,
        created_at=time.time() if created_at is None else float(created_at),
        counts=None if counts is None else [float(c) for c in counts],
        origin=origin,
        baseline=None if baseline is None else _baseline(baseline, len(p)),
    )


def _baseline(baseline: Sequence[float] | np.ndarray, n_buckets: int) -> list[float]:
    arr = np.asarray(baseline, dtype=np.float64)
    if arr.shape != (n_buckets,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise BadReference(f"baseline: got {arr.tolist()}; must be {n_buckets} finite counts >= 0, one per bucket "
                           "of P_ref")
    return arr.tolist()


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
    ref = make_reference(lang, codebook_version=codebook_version, adapter_version=adapter_version, counts=counts,
                         probs=probs, created_at=created_at)
    client.set(reference_key(lang, prefix), json.dumps(asdict(ref)))
    return ref


def switch_codebook(store: CodebookStore, version: str, references: Sequence[Reference],
                    also: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> None:
    """Install ``references`` (all on codebook ``version``) and make ``version`` current as one switch; ``also``
    (key -> value) is set and ``drop`` deleted in the same step. Idempotent: re-running a finished switch rewrites
    the same values.

    Single-node Redis: WATCH the pointer, check that ``version`` may become current (it is, or its lineage sorts
    after the current one: windows never go back), then one MULTI/EXEC; a reader sees all of it or none. Redis
    Cluster (the keys live in many slots): references first, then the pointer (the ordered Lua move), then the
    rest; a crash in between leaves some languages on the new codebook ahead of the pointer
    (``codebook_mismatch``) until the caller's retry runs the switch again.
    """
    wrong = [r.language for r in references if r.codebook_version != version]
    if wrong:
        raise BadReference(f"switch_codebook to {version}: the references of {wrong} are on another codebook")
    client, prefix = store.client, store.prefix
    if client is None:
        raise BadReference("switch_codebook needs a Redis client (the pointer and references live there)")
    sets = {reference_key(r.language, prefix): json.dumps(asdict(r)) for r in references} | dict(also or {})
    if isinstance(client, RedisCluster):
        for key, value in sets.items():
            client.set(key, value)
        if store.current_version() != version:
            store.restore(version)
        for key in drop:
            client.delete(key)
        return
    for _ in range(10):  # another writer moved the pointer between WATCH and EXEC: look again
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(store.pointer_key)
                raw = pipe.get(store.pointer_key)
                current = raw.decode() if isinstance(raw, bytes) else raw
                if current not in (None, version) and lineage_of(current) >= lineage_of(version):
                    raise CodebookError(f"codebook {version} cannot become current: the current version {current} "
                                        "sorts after it (versions are UTC times; windows never go back)")
                pipe.multi()
                for key, value in sets.items():
                    pipe.set(key, value)
                pipe.set(store.pointer_key, version)
                if drop:
                    pipe.delete(*drop)
                pipe.execute()
                return
            except redis.WatchError:
                continue
    raise CodebookError(f"codebook {version}: the pointer kept moving during the switch; retry it")


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
        if ref.baseline is not None:
            _baseline(ref.baseline, ref.n_buckets)
    except (ValueError, TypeError) as e:
        raise BadReference(f"{key}: unreadable reference ({e}); rewrite it with `compass ref set {lang} ...`") from None
    return ref
