"""Step 3 of a re-fit (daemon/worker/recluster.py): every language's P_ref (eq. 3) recomputed on the new codebook.

Sources, in order: the current adapter version's stored training rows (``reference_rows.npz``; counts = the
weighted bincount of their buckets on the new codebook: exact eq. 3); for a version written before versions kept
them, the language's sampled window queries (``window_fallback``); with no traffic either, D_t
(``target_fallback``, ``worker.targets_dir``, as eq. 3 stands D_t in for a missing usage proxy). A language with
none of these keeps its P_ref on the old codebook (``skipped``, said in the report and the event). JS before: the
old P_ref against the window on the old codebook; after: the new P_ref against the language's sampled window rows
on the new one. With stored rows, each reference also carries its ``baseline``: the rows of source "window" (else
"target") on the new codebook, the traffic the adapter was trained for, from which the daemon arms the learned
detectors at once instead of a burn-in on traffic that has already shifted (compass/drift/baseline.py); the stand-ins
carry none (the window fallback *is* the shifted traffic): those languages burn in live, as before.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from compass.cluster.codebook import Codebook, lineage_of
from compass.divergence import js_divergence
from compass.drift.baseline import recount
from compass.drift.reference_rows import read_reference_rows
from daemon.worker.model import WorkerError
from daemon.worker.pipeline import JobContext, load_target
from infra.reference import BadReference, Reference, get_reference, make_reference
from infra.window import WindowStore

log = logging.getLogger(__name__)


def rereference(ctx: JobContext, job_id: str, old: Codebook | None, new: Codebook, texts: list[tuple[str, str]],
                X: np.ndarray) -> tuple[list[Reference], dict[str, dict[str, Any]], dict[str, str]]:
    """The new references on ``new`` of every enabled language that has a reference or an adapter; per language
    what was done (js_before, js_after, source, n_rows); the languages left as they are, with why. ``texts`` and
    ``X``: the re-fit's sample, window rows ("lang", text) first, then pool rows ("pool", text)."""
    k = new.n_clusters
    n_window = sum(1 for lang, _ in texts if lang != "pool")
    buckets = new.assign(X[:n_window]) if n_window else np.zeros(0, np.int64)
    windows = WindowStore(ctx.client, ctx.prefix)
    refs, done, skipped = [], {}, {}
    for lang in ctx.languages.enabled:
        mine = np.array([i for i, (code, _) in enumerate(texts) if code == lang], dtype=np.int64)
        window_counts = np.bincount(buckets[mine], minlength=k + 1).astype(np.float64)
        try:
            old_ref = get_reference(ctx.client, lang, ctx.prefix)
        except BadReference:
            old_ref = None  # a corrupt one is replaced like a missing one
        adapter = ctx.registry.current(lang)
        adapter_version = adapter or (old_ref.adapter_version if old_ref else None)
        if adapter_version is None:
            skipped[lang] = "no adapter and no reference: nothing to re-reference"
            continue
        rows = read_reference_rows(ctx.registry, lang, adapter) if adapter else None
        baseline = None
        if rows is not None and len(rows):
            (counts, baseline), source, n_rows = recount(rows, new), "stored_rows", len(rows)
        elif len(mine):  # a version from before versions kept their rows: the language's recent queries stand in
            counts, source, n_rows = window_counts, "window_fallback", len(mine)
        else:  # no traffic either: D_t stands in, as eq. 3 does for a language without a usage proxy
            target = _target_texts(ctx, lang)
            X_t = ctx.embed(target) if target else np.zeros((0, X.shape[1]), np.float32)
            counts = np.bincount(new.assign(X_t), minlength=k + 1).astype(np.float64) if len(X_t) else window_counts
            source, n_rows = "target_fallback", len(target)
        try:
            ref = make_reference(lang, codebook_version=new.version, adapter_version=adapter_version, counts=counts,
                                 origin=f"recluster:{job_id}", baseline=baseline)
        except BadReference as e:
            skipped[lang] = f"no rows to count ({source}): {e}; its P_ref stays on the old codebook"
            log.warning("%s: not re-referenced: %s", lang, skipped[lang])
            continue
        refs.append(ref)
        done[lang] = {"source": source, "n_rows": n_rows, "baseline": None if baseline is None else
                      int(baseline.sum()), "js_before": _js_before(windows, lang, old_ref, old),
                      "js_after": js_divergence(ref.probs, window_counts) if len(mine) else None}
    return refs, done, skipped


def _target_texts(ctx: JobContext, lang: str) -> list[str]:
    """D_t's texts of ``lang`` (at most ``daemon.recluster_max_rows``), or [] when none is configured."""
    try:
        records = load_target(ctx.config, lang)
    except WorkerError:
        return []
    return [r.text for r in records[: ctx.config.daemon.recluster_max_rows]]


def _js_before(windows: WindowStore, lang: str, ref: Reference | None, old: Codebook | None) -> float | None:
    """JS(old P_ref || the window) on the old codebook, when both are on its lineage."""
    if ref is None or old is None or lineage_of(ref.codebook_version) != lineage_of(old.version):
        return None
    snap = windows.snapshot(lang)
    if snap.size == 0 or snap.codebook_version is None or lineage_of(snap.codebook_version) != lineage_of(old.version) \
            or len(snap.counts) != len(ref.probs):
        return None
    return js_divergence(ref.probs, snap.counts)
