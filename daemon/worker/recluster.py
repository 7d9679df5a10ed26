"""A ``recluster`` job (paper §6.1): re-fit the codebook on recent traffic, re-reference every language, switch once.

Clusters fitted once go stale as traffic moves to topics they never saw; the daemon notices (noise or far share)
and enqueues a ``recluster`` job. Here, under the global lease ``{prefix}:recluster:lock`` (one re-fit at a time;
the worker postpones a job while another holds it) and outside ``daemon.recluster_min_interval_s`` of the last one
(else outcome ``skipped_interval``):

  1. sample   the enabled languages' recent window queries (their ``recent`` lists) and the auxiliary pool:
              at most ``daemon.recluster_max_rows`` rows, the pool at most ``recluster_pool_share`` of them, the
              rest balanced over the languages (compass/cluster/refit.py ``balanced_sample``)
  2. fit      embed, fit ``daemon.recluster_clusterer`` (kmeans, K by silhouette unless ``recluster_k``) and label:
              the same ``fit_codebook`` as ``compass codebook build``; stored with lineage (parent, origin: reason,
              job_id, rows per language and from the pool) WITHOUT moving the pointer
  3. P_ref    per language that has a reference or an adapter: eq. 3 on the new codebook from its current adapter
              version's stored training rows, else stand-ins (daemon/worker/rereference.py)
  4. switch   every reference and the codebook pointer in one step (infra/reference.py ``switch_codebook``), after
              the plan is staged under ``{prefix}:recluster:staged:<job_id>``: a retried job that finds it finishes
              the same switch instead of fitting again

A failure (or a kill) before step 4 leaves the old codebook and references current; the worker retries the job like
an update job. Consumers then load the new codebook (a new lineage: their windows restart) and the daemon re-arms
each language on its new reference. ``compass codebook build --from-windows`` runs ``recluster`` in process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from compass.adapt import Interrupted
from compass.cluster.codebook import Codebook
from compass.cluster.refit import balanced_sample, fit_codebook, pool_rows
from daemon.worker.model import WorkerError
from daemon.worker.pipeline import JobContext, base_report, write_report
from daemon.worker.rereference import rereference
from infra.codebook import CodebookNotFound, CodebookStore
from infra.keys import Keys
from infra.lease import Lease
from infra.messages import Event, UpdateJob
from infra.reference import Reference, switch_codebook
from infra.window import WindowStore

log = logging.getLogger(__name__)

RECLUSTERED, SKIPPED_INTERVAL = "reclustered", "skipped_interval"
STAGED_TTL_S = 7 * 86400  # a staged switch outlives any retry backoff


def recluster_lease(ctx: JobContext, owner: str) -> Lease:
    """The global re-fit lease (at most one re-clustering at a time, whoever runs it)."""
    return Lease(ctx.client, Keys(ctx.prefix).recluster_lock(), owner, ctx.config.worker.lock_ttl_ms)


def run_recluster(ctx: JobContext, job: UpdateJob, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The worker's ``recluster`` job (module docstring); the caller holds ``recluster_lease``. Returns the report
    (outcome ``reclustered`` or ``skipped_interval``); raises on failure (``Interrupted`` when asked to stop)."""
    return recluster(ctx, job_id=job.job_id, language=job.language, reason=job.reason, should_stop=should_stop)


def recluster(ctx: JobContext, *, job_id: str, language: str, reason: str, check_interval: bool = True,
              should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; ``check_interval`` False ignores the minimum interval (an operator's
    ``compass codebook build --from-windows``). Writes and returns the job report."""
    if ctx.client is None:
        raise WorkerError("a re-fit needs a Redis client (windows, references and the codebook pointer live there)")
    keys, d = Keys(ctx.prefix), ctx.config.daemon
    store = CodebookStore(ctx.config.consumer.codebook_dir, ctx.client, ctx.prefix)
    report = base_report(job_id, language, "recluster", reason, time.time())
    staged = ctx.client.get(keys.recluster_staged(job_id))
    if staged is not None:  # an earlier attempt got as far as step 4: finish that switch, do not fit again
        plan = json.loads(staged)
        log.info("recluster %s: finishing the staged switch to codebook %s", job_id, plan["new_version"])
        return _switch(ctx, store, keys, report, plan, [Reference(**r) for r in plan.pop("references")])
    last = ctx.client.get(keys.recluster_last())
    waited = time.time() - float(last) if last is not None else None
    if check_interval and waited is not None and waited < d.recluster_min_interval_s:
        report.update(outcome=SKIPPED_INTERVAL, finished_at=time.time(),
                      error=None, recluster={"last_s_ago": waited, "min_interval_s": d.recluster_min_interval_s})
        log.info("recluster %s skipped: the last re-fit was %.0f s ago (daemon.recluster_min_interval_s %g)",
                 job_id, waited, d.recluster_min_interval_s)
        write_report(ctx.work_dir, report)
        return report

    old = _current(store)
    texts, X, n_window, n_pool = _sample(ctx)
    _check_stop(should_stop)
    cb = ctx.config.codebook
    fit = fit_codebook([t for _, t in texts], X, d.recluster_clusterer, k=d.recluster_k, seed=d.recluster_seed,
                       store_examples=cb.store_examples, min_docs=cb.label_min_docs, n_terms=cb.label_terms,
                       n_examples=cb.examples)
    _check_stop(should_stop)
    origin = {"reason": reason, "job_id": job_id, "n_window": n_window, "n_pool": n_pool}
    new = store.publish(fit.clusterer, ctx.embedder.model_id, parent=old.version if old else None, revision=False,
                        X_fit=X, labels=fit.named, origin=origin, make_current=False)
    refs, per_lang, skipped = rereference(ctx, job_id, old, new, texts, X)
    _check_stop(should_stop)
    plan = {"old_version": old.version if old else None, "new_version": new.version,
            "old_k": old.n_clusters if old else None, "new_k": new.n_clusters, "n_window": n_window,
            "n_pool": n_pool, "n_noise": fit.n_noise, "languages": per_lang, "skipped": skipped}
    ctx.client.set(keys.recluster_staged(job_id), json.dumps({**plan, "references": [asdict(r) for r in refs]}),
                   ex=STAGED_TTL_S)
    return _switch(ctx, store, keys, report, plan, refs)


def _switch(ctx: JobContext, store: CodebookStore, keys: Keys, report: dict[str, Any], plan: dict[str, Any],
            refs: list[Reference]) -> dict[str, Any]:
    """Step 4, then the event and the report."""
    job_id = report["job_id"]
    switch_codebook(store, plan["new_version"], refs, also={keys.recluster_last(): repr(time.time())},
                    drop=[keys.recluster_staged(job_id)])
    ctx.emit(Event("recluster_finished", report["language"], time.time(), job_id, plan))
    report.update(outcome=RECLUSTERED, finished_at=time.time(), recluster=plan)
    log.info("recluster %s: codebook %s (K %s) -> %s (K %s); %d language(s) re-referenced%s", job_id,
             plan["old_version"], plan["old_k"], plan["new_version"], plan["new_k"], len(refs),
             f", skipped {plan['skipped']}" if plan["skipped"] else "")
    write_report(ctx.work_dir, report)
    return report


def _current(store: CodebookStore) -> Codebook | None:
    try:
        return store.load()
    except CodebookNotFound:
        return None


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Interrupted(0)  # nothing is switched yet: the job stays pending and starts over


def _sample(ctx: JobContext) -> tuple[list[tuple[str, str]], np.ndarray, dict[str, int], int]:
    """Step 1: the sampled (lang, text) rows, their embeddings (window rows first, then pool rows), the rows taken
    per language and from the pool."""
    d, c = ctx.config.daemon, ctx.config.consumer
    if not c.store_texts:
        raise WorkerError("a re-fit clusters the recent window queries, but consumer.store_texts is false (ids "
                          "only). Fix: set consumer.store_texts: true, or fit by hand with `compass codebook build "
                          "RECORDS`")
    windows = WindowStore(ctx.client, ctx.prefix, store_texts=True, recent_max=c.recent_max,
                          recent_ttl_s=c.recent_ttl_s)
    recent: dict[str, list[str]] = {}
    for lang in ctx.languages.enabled:
        seen: dict[str, str] = {}
        for qid, text in windows.recent(lang):
            if text:
                seen[qid] = text  # a re-sent id keeps its newest text, once
        recent[lang] = list(seen.values())
    pool, X_pool = ctx.pool(ctx.config.worker.pool)
    n_pool = pool_rows(len(pool), d.recluster_max_rows, d.recluster_pool_share)
    picks = balanced_sample({lang: len(t) for lang, t in recent.items()}, d.recluster_max_rows - n_pool,
                            d.recluster_seed)
    texts = [(lang, recent[lang][i]) for lang in sorted(picks) for i in picks[lang]]
    pool_idx = np.sort(np.random.default_rng(d.recluster_seed).choice(len(pool), n_pool, replace=False)) \
        if n_pool else np.zeros(0, np.int64)
    if len(texts) + n_pool < 2:
        raise WorkerError(f"a re-fit needs at least 2 texts; the windows of {sorted(recent)} hold {len(texts)} and "
                          f"the pool (worker.pool) {len(pool)}. Fix: let traffic arrive, or set worker.pool")
    X_win = ctx.embed([t for _, t in texts])
    parts = [X for X in (X_win, X_pool[pool_idx] if n_pool else None) if X is not None and X.size]
    X = np.concatenate(parts).astype(np.float32, copy=False)
    texts += [("pool", pool[i].text) for i in pool_idx]
    return texts, X, {lang: len(idx) for lang, idx in picks.items()}, n_pool
