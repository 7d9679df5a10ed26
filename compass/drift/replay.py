"""One replay of a stream through the drift lifecycle (``compass.drift.lifecycle.step``), in process.

The initial reference (the cycle that trained the first adapter on the stream's first ``reference_samples``
samples, eq. 3) is in place before the first sample arrives, as in production. Per ``increment`` samples, in
arrival order: assign the batch with the codebook, count the window (the last
``window_size`` samples, eq. 4), and run one check: an ``Observation`` (now = samples seen, the window's counts,
P_ref and its id, the batch's cluster ids as ``new_labels``, the simulated worker's reports of the previous
update) through ``lifecycle.step`` with the language's ``LanguageSettings``, the same call the daemon makes.
Time is the sample count, so ``cooldown_s``, ``settle_s`` and ``backoff_max_s`` are in samples here.

An action ``update`` is answered by a simulated worker at once: eq. 2 (``eta`` > 0) moves the codebook towards
the window, the eq. 3 reference of the cycle (``compass/drift/eq3.py``) is installed under a new ref_id, and
``update_started``, ``adapter_promoted`` and ``update_finished`` (ok, promoted) arrive in the next check's
``reports``: the lifecycle goes idle, starts the cooldown at the update and re-arms on the new reference.

With a ``Reclustering`` (``recluster="auto"``; ``compass/drift/reclustering.py``) every check also reads the noise
and far shares as the daemon does, and an action ``recluster`` is answered as the worker answers it: skipped inside
the minimum interval (``update_finished``, outcome ``skipped_interval``), else a new codebook fitted on the window
plus the pool, the last cycle's P_ref recomputed on it from that cycle's rows (a new ref_id: the lifecycle re-arms,
its learned detector armed from the cycle's baseline, ``compass/drift/baseline.py``, as the daemon's is)
and the window restarted (a new lineage: the old buckets mean nothing). Without one (``"off"``) no share is read
and no ``recluster`` is ever dispatched, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from compass.drift import lifecycle
from compass.drift.eq3 import References, probs
from compass.drift.lifecycle import DriftState, Limits, Observation, Report
from compass.drift.reclustering import Reclustering
from compass.languages import LanguageSettings

if TYPE_CHECKING:
    from compass.cluster.codebook import Codebook


@dataclass
class Trace:
    """What one replay did: when updates were dispatched, what they installed, what the detector learned."""

    fired: list[int] = field(default_factory=list)  # checks (samples seen) at which an update was dispatched
    detected: list[int] = field(default_factory=list)  # the detection each dispatched update came from
    references: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (installed at, eq. 3 counts)
    thresholds: list[dict[str, Any]] = field(default_factory=list)  # calibrated / sequential: per reference
    checks: list[str] = field(default_factory=list)  # the outcome of every check (Step.check)
    reclustered: list[int] = field(default_factory=list)  # checks at which a re-clustering installed a codebook
    recluster_skipped: list[int] = field(default_factory=list)  # recluster actions inside the minimum interval
    recluster_s: list[float] = field(default_factory=list)  # wall time of each re-clustering: sample, fit, P_ref
    codebooks: list[tuple[int, Codebook]] = field(default_factory=list)  # (installed at, the re-fitted codebook)
    n_checks: int = 0
    check_s: float = 0.0  # mean wall time of one check: assign the batch, count the window, step


def batches(n: int, increment: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, increment):
        yield start, min(n, start + increment)


def worker_reports(job_id: str, at: float, adapter: str) -> tuple[Report, ...]:
    """What a worker reports for an update that promoted: started, promoted, finished (ok)."""
    return (Report("update_started", job_id, at),
            Report("adapter_promoted", job_id, at, {"adapter_version": adapter}),
            Report("update_finished", job_id, at, {"ok": True, "outcome": "promoted", "adapter_version": adapter}))


def recluster_reports(job_id: str, at: float, outcome: str) -> tuple[Report, ...]:
    """What a worker reports for a recluster job: started, finished (ok; ``reclustered`` or ``skipped_interval``)."""
    return (Report("update_started", job_id, at),
            Report("update_finished", job_id, at, {"ok": True, "outcome": outcome}))


def ready_threshold(state: DriftState, settings: LanguageSettings) -> dict[str, Any] | None:
    """The learned threshold of the current reference, once its burn-in is over (None for a fixed theta)."""
    mode = lifecycle.detector_mode(settings)
    if mode == "calibrated" and state.threshold is not None:
        t = state.threshold
        return {"value": t.theta_full, "unit": "bits", "at_min_samples": t.theta_min, "dispersion": t.dispersion,
                "null_mean": t.null_mean}
    if mode == "sequential" and state.cusum is not None:
        return {"value": state.cusum.h, "unit": "nats", "dispersion": state.cusum.phi, "memory": state.cusum.memory}
    return None


def replay(
    x: np.ndarray,
    book: Codebook,
    refs: References,
    settings: LanguageSettings,
    *,
    increment: int,
    eta: float = 0.0,
    limits: Limits | None = None,
    on_check: Callable[[], None] | None = None,
    reclustering: Reclustering | None = None,
) -> Trace:
    """Replay ``x`` (one embedding row per sample, arrival order) through ``lifecycle.step`` (module docstring)."""
    labels = np.empty(len(x), dtype=np.int64)
    window = settings.window_size
    restart = 0  # the window's first sample: 0, or the last re-clustering (a new lineage restarts it)
    jobs = 0
    trace = Trace()
    state = DriftState()
    ref = refs.initial()  # the initial training cycle: the adapter and its P_ref exist before the traffic
    ref_id = "r0"
    baseline: np.ndarray | None = None  # a re-fit reference's baseline (the lifecycle arms its detector from it)
    trace.references.append((0, ref))
    reports: tuple[Report, ...] = ()
    detection: int | None = None
    learned_for: str | None = None  # the ref_id whose learned threshold is in trace.thresholds
    spent = 0.0
    for start, t in batches(len(x), increment):
        t0 = time.perf_counter()
        labels[start:t] = book.assign(x[start:t])
        lo = max(restart, t - window)
        counts = book.counts(labels[lo:t])
        noise, far = (None, None) if reclustering is None else reclustering.shares(book, counts, x[lo:t])
        obs = Observation(now=float(t), counts=counts, p_ref=probs(ref), ref_id=ref_id,
                          new_labels=labels[start:t], reports=reports, job_id=f"sim-{jobs + 1}",
                          noise_share=noise, far_share=far, baseline=baseline)
        out = lifecycle.step(state, obs, settings, limits or Limits())
        state, reports = out.state, ()
        spent += time.perf_counter() - t0
        trace.n_checks += 1
        trace.checks.append(out.check)
        learned = ready_threshold(state, settings)
        if learned is not None and state.ref_id != learned_for:
            trace.thresholds.append({"at": t, **learned})
            learned_for = state.ref_id
        if out.action.kind == "settle":
            detection = t
        elif out.action.kind == "update":
            trace.fired.append(t)
            trace.detected.append(t if detection is None else detection)
            detection = None
            if eta > 0:  # eq. 2: the update moves the codebook towards the data it learned
                book.clusterer.update(x[lo:t], eta)
                labels[lo:t] = book.assign(x[lo:t])
            ref, ref_id, baseline = refs.after_update(x[lo:t]), f"r{len(trace.references)}", None
            trace.references.append((t, ref))
            reports = worker_reports(obs.job_id, float(t), f"a{len(trace.fired)}")
            jobs += 1
        elif out.action.kind == "recluster" and reclustering is not None:
            jobs += 1
            last = trace.reclustered[-1] if trace.reclustered else None
            if not reclustering.due(t, last):
                trace.recluster_skipped.append(t)
                reports = recluster_reports(obs.job_id, float(t), "skipped_interval")
            else:
                t1 = time.perf_counter()
                book, _ = reclustering.refit({refs.lang: x[lo:t]}, refs.x_pool, len(trace.reclustered) + 1)
                (ref, baseline), ref_id = refs.rebase(book), f"r{len(trace.references)}"
                trace.recluster_s.append(time.perf_counter() - t1)
                trace.reclustered.append(t)
                trace.codebooks.append((t, book))
                trace.references.append((t, ref))
                restart = t
                reports = recluster_reports(obs.job_id, float(t), "reclustered")
        if on_check is not None:
            on_check()
    trace.check_s = spent / max(1, trace.n_checks)
    return trace


__all__ = ["Trace", "batches", "ready_threshold", "recluster_reports", "replay", "worker_reports"]
