"""The baseline a re-fit reference carries, and the learned detectors armed from it without a live burn-in (pure).

A re-clustering (§6.1; daemon/worker/recluster.py, the replay's ``recluster="auto"``) happens *because* traffic
moved to topics the old codebook never saw. Its new P_ref (eq. 3 recounted on the new codebook from the adapter's
stored rows) counts as a new reference, and a live burn-in after it (``compass/drift/calibrated.py``) would run on
traffic that has already shifted: the calibrated threshold and the CUSUM null (``compass/drift/sequential.py``)
would learn the drift as "no drift" (``benchmarks/results/recluster/``: calibrated detections 56/60 -> 43/60).

The adapter was trained for the traffic of its cycle, not for today's, so the baseline is that traffic, re-assigned
on the new codebook: the stored rows of source ``"window"`` (E_t, the usage part of eq. 3's n_eval), or of source
``"target"`` (D_t) for a cycle that had no usage proxy; never the ``"selected"`` pool rows (eq. 3's n_aux,selected
is training data, not traffic). ``baseline_counts`` counts them per bucket (weighted, noise last, as eq. 4 counts a
window).

``armed_burn_in`` turns those counts into a finished ``BurnIn`` as if they had been seen live in checks of m
queries: m and the over-dispersion phi are carried over from the previous reference's detector (its calibrated
threshold or CUSUM), else from the previous burn-in's checks, else m = this check's queries and phi = 1. Limits of
that choice: the stored rows are one window, so the posterior of the live mix is as wide as one window allows
(``burn_in_queries`` is not enforced); phi was measured on the old codebook's buckets (dispersion is a property of
the traffic's burstiness more than of the partition, but a finer codebook can show more of it); the JS floor of a
live burn-in (its largest JS reading) is 0, the stored window having no readings of its own. A reference without
a baseline (a promotion, ``compass ref set``, a version written before versions kept rows) keeps today's live
burn-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from compass.drift.calibrated import UPPER_Z, BurnIn, JsThreshold, dispersion
from compass.drift.reference_rows import ReferenceRows
from compass.drift.sequential import Cusum

if TYPE_CHECKING:  # compass.cluster loads faiss: only for the type
    from compass.cluster.codebook import Codebook

BASELINE_SOURCES = ("window", "target")  # in order of preference: the cycle's traffic, else D_t standing in


def baseline_counts(rows: ReferenceRows, buckets: np.ndarray, k: int) -> np.ndarray | None:
    """(k+1,) weighted counts of the rows of source ``"window"`` (else ``"target"``) in ``buckets`` (one codebook
    bucket per row; k or negative = noise); None when the rows hold neither source."""
    sources = np.asarray(rows.sources)
    for source in BASELINE_SOURCES:
        mine = sources == source
        if mine.any():
            return rows.counts(np.asarray(buckets, dtype=np.int64), k, where=mine)
    return None


def recount(rows: ReferenceRows, book: Codebook) -> tuple[np.ndarray, np.ndarray | None]:
    """The stored rows on the re-fitted ``book``: their eq. 3 counts and their baseline counts (the worker's
    re-reference and the simulator's rebase alike); rows are float16 as stored, assigned anew."""
    buckets = book.assign(rows.X.astype(np.float32))
    return rows.counts(buckets, book.n_clusters), baseline_counts(rows, buckets, book.n_clusters)


def carried_over(threshold: JsThreshold | None, cusum: Cusum | None, burn: BurnIn,
                 queries_now: int) -> tuple[float, float]:
    """(m queries per check, phi) of the previous reference's detector (module docstring, in that order)."""
    if threshold is not None:
        return threshold.queries_per_check, threshold.dispersion
    if cusum is not None:
        return cusum.queries_per_check, cusum.phi
    if burn.checks > 0:
        return burn.seen / burn.checks, dispersion(burn.batches, UPPER_Z)
    return float(max(1, queries_now)), 1.0


def armed_burn_in(ref_id: str | None, baseline: np.ndarray, queries_per_check: float, phi: float) -> BurnIn | None:
    """A finished burn-in of the ``baseline`` counts seen in checks of ``queries_per_check`` queries with
    over-dispersion ``phi``; None when the baseline is empty (the caller runs a live burn-in)."""
    counts = np.rint(np.asarray(baseline, dtype=np.float64)).astype(np.int64)
    seen = int(counts.sum())
    if seen <= 0 or np.any(counts < 0):
        return None
    m = max(1.0, float(queries_per_check))
    return BurnIn(ref_id=ref_id, seen=seen, checks=max(1, int(round(seen / m))), counts=tuple(counts.tolist()),
                  phi=max(1.0, float(phi)))


__all__ = ["BASELINE_SOURCES", "armed_burn_in", "baseline_counts", "carried_over", "recount"]
