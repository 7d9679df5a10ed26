"""One update job, end to end (§3.3.3): data plan, ECDA training from theta_prev, registry write, gate, promotion.

The registry is written only after training finished (weights, anchors, Fisher and the eq. 3 reference rows,
``compass/drift/reference_rows.py``); its temp-dir + rename keeps a killed worker from leaving a
partial version. The gate compares NLLs of the current adapter (theta_prev, scored before training) and of the
candidate on the adaptation set and the retention set of the data plan (``compass/adapt/plan.py``; the job report's
``plan`` lists the ids of every training and gate row).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis
from safetensors.torch import load as st_load

from compass.adapt import ECDAConfig, gate, load_checkpoint, save_checkpoint
from compass.adapt.plan import PlanSettings, UpdatePlan, WindowRow, plan_update, window_rows
from compass.adapt.update import (
    ANCHORS_FILE,
    FISHER_FILE,
    TARGET_HOLDOUT_FILE,
    digest,
    nll,
    read_anchors,
    train_update,
)
from compass.data import read_records
from compass.drift.explain import name_selection
from compass.drift.reference_rows import REFERENCE_ROWS_FILE
from compass.languages import LanguagesConfig
from compass.registry import AdapterManifest, AdapterRegistry, new_version
from daemon.worker.model import ModelHost, WorkerError, adapter_state, train_config
from infra.messages import Event, UpdateJob
from infra.reference import set_reference
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)
PLAN_FILE = "plan.json"  # the version's data plan: ids of every training, replay and gate row


@dataclass
class JobContext:
    """What every job of a worker process shares: config, clients, the loaded model, caches."""

    config: ServiceConfig
    languages: LanguagesConfig
    client: redis.Redis | None
    host: ModelHost
    embedder: Any
    emit: Callable[[Event], None] = lambda event: None
    registry: AdapterRegistry = None  # type: ignore[assignment]
    _pool: dict[str, tuple[list, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = AdapterRegistry(self.config.adapters.registry)

    @property
    def prefix(self) -> str:
        return self.config.redis.key_prefix

    @property
    def work_dir(self) -> Path:
        return Path(self.config.worker.work_dir)

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.work_dir / "checkpoints" / job_id

    def pool(self, path: Path | None) -> tuple[list, np.ndarray]:
        """D_aux and its embeddings, read and embedded once per process."""
        if path is None:
            return [], np.zeros((0, 0), np.float32)
        key = f"{path}:{path.stat().st_mtime_ns}"
        if key not in self._pool:
            records = read_records(path)
            self._pool = {key: (records, self.embed([r.text for r in records]))}
        return self._pool[key]

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.embedder.encode(texts), dtype=np.float32) if texts else np.zeros((0, 0), np.float32)


def _labels(ctx: JobContext, codebook: Any) -> dict | None:
    """The codebook's cluster labels, or None (none stored; a damaged file is logged, the job goes on)."""
    from infra.codebook import read_labels

    if codebook is None:
        return None
    try:
        return read_labels(ctx.config.consumer.codebook_dir, codebook.version)
    except Exception as e:
        log.warning("codebook %s: labels not read (%s); the report names clusters by id", codebook.version, e)
        return None


def write_report(work_dir: Path, report: dict[str, Any]) -> Path:
    path = Path(work_dir) / "reports" / f"{report['job_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def base_report(job_id: str, lang: str, kind: str, reason: str, started_at: float) -> dict[str, Any]:
    return {"job_id": job_id, "language": lang, "kind": kind, "reason": reason, "started_at": started_at,
            "finished_at": None, "version": None, "parent": None, "promoted": False, "outcome": "failed",
            "error": None, "selection": None, "train": None, "gate": None, "p_ref": None}


def load_target(config: ServiceConfig, lang: str) -> list:
    if config.worker.targets_dir is None:
        raise WorkerError("The 'worker.targets_dir' setting must name the directory of <lang>.jsonl target data. "
                          "Got None. Fix: set worker.targets_dir in the service config.")
    path = Path(config.worker.targets_dir) / f"{lang}.jsonl"
    if not path.is_file():
        raise WorkerError(f"The target data D_t of {lang!r} must be in {path}. The file does not exist. Fix: write "
                          f"the language's target records there (compass.data records format).")
    return read_records(path)


def recent_texts(ctx: JobContext, lang: str, snapshot: dict[str, Any]) -> list[WindowRow]:
    """The frozen window's queries (ids from the snapshot; texts and responses from the recent list), oldest
    first; a row with a response is labelled (a selection candidate, compass/adapt/plan.py)."""
    from infra.window import WindowStore

    if not ctx.config.consumer.store_texts:
        raise WorkerError(f"{lang}: the recent window has query ids only (consumer.store_texts is false), and "
                          "reselection needs their texts. Fix: set consumer.store_texts: true, or run "
                          "`compass adapt` with a proxy file instead.")
    c = ctx.config.consumer
    store = WindowStore(ctx.client, ctx.prefix, store_texts=c.store_texts, recent_max=c.recent_max,
                        recent_ttl_s=c.recent_ttl_s)
    wanted = set(snapshot.get("ids") or [])
    out, seen = [], set()
    for qid, text, response in store.recent_rows(lang):
        if qid in wanted and qid not in seen and text:
            out.append(WindowRow(qid, text, response))
            seen.add(qid)
    return out


@dataclass
class PlannedUpdate:
    """A data plan with what it was built from: the parent version, its weights, anchors and config."""

    plan: UpdatePlan
    parent: str | None
    tensors: dict | None
    prev_anchors: list[tuple[str, str]]
    parent_config: dict[str, Any]
    centroids: np.ndarray
    pool: list


def gate_file_rows(config: ServiceConfig, lang: str) -> list:
    """The optional per-language retention gate file (worker.gate.retention_dir/<lang>.jsonl), scored, never
    trained on; [] when not configured or absent."""
    d = config.worker.gate.retention_dir
    path = Path(d) / f"{lang}.jsonl" if d is not None else None
    return read_records(path) if path is not None and path.is_file() else []


def clustering_config(config: ServiceConfig) -> Any:
    """worker.selection as compass.select.clusters.ClusteringConfig (validates the params)."""
    from compass.select.clusters import ClusteringConfig

    sel = config.worker.selection
    return ClusteringConfig(clusterer=sel.clusterer, params=dict(sel.params), seed=config.worker.train.seed)


def build_plan(
    ctx: JobContext,
    lang: str,
    *,
    target: list,
    recent: list,
    codebook: Any,
    window_counts: np.ndarray | None,
    pool_path: Path | None,
    use_current: bool = True,
) -> PlannedUpdate:
    """The update's data plan (compass/adapt/plan.py) from the registry's parent, the codebook and the inputs."""
    wcfg = ctx.config.worker
    settings = ctx.languages.get(lang)
    pool, X_pool = ctx.pool(pool_path)
    X_t = ctx.embed([r.text for r in target])
    d = X_t.shape[1]
    rows = window_rows(recent)
    X_r = ctx.embed([r.text for r in rows])  # empty parts: plan_update gives them shape (0, d)
    if codebook is not None:
        codebook.check_model(ctx.embedder.model_id)
        centroids = np.asarray(codebook.clusterer.centroids_, dtype=np.float32)
        assign = codebook.assign
    else:  # no codebook yet: one noise bucket, K = 0
        centroids = np.zeros((0, d), np.float32)

        def assign(X: np.ndarray) -> np.ndarray:
            return np.zeros(len(X), np.int64)
    bt, br, bp = (assign(X) if len(X) else np.zeros(0, np.int64) for X in (X_t, X_r, X_pool))

    parent = ctx.registry.current(lang) if use_current else None
    tensors, prev_anchors, parent_config, held = None, [], {}, None
    if parent is not None:
        tensors, parent_config, _ = ctx.registry.read_version(lang, parent)
        files = ctx.registry.files(lang, parent)
        if ANCHORS_FILE in files:
            prev_anchors = read_anchors(ctx.registry.read_file(lang, parent, ANCHORS_FILE))
        if TARGET_HOLDOUT_FILE in files:  # split once at bootstrap: every later cycle holds out the same rows
            held = json.loads(ctx.registry.read_file(lang, parent, TARGET_HOLDOUT_FILE))
    plan = plan_update(
        lang, target, X_t, bt, rows, X_r, br, pool, X_pool, bp, centroids,
        settings=PlanSettings(budget=settings.budget, holdout_fraction=wcfg.gate.holdout_fraction,
                              train_on_queries=wcfg.train_on_queries,
                              holdout_from_targets=wcfg.gate.holdout_from_targets,
                              max_examples=wcfg.train.max_examples, seed=wcfg.train.seed),
        clustering=clustering_config(ctx.config), window_counts=window_counts, prev_anchors=prev_anchors,
        gate_rows=gate_file_rows(ctx.config, lang),
        # a stored split is kept while the setting is on; 0 trains D_t whole whatever an earlier cycle held out
        targets_held_out=[] if wcfg.gate.holdout_from_targets == 0 else held,
    )
    plan.data["parent"] = parent
    plan.data["replay"] = [i for i, _ in prev_anchors]  # B_anchor of theta_prev, replayed by L_DAR (§3.3.3)
    return PlannedUpdate(plan, parent, tensors, prev_anchors, parent_config, centroids, pool)


def train_and_register(
    ctx: JobContext,
    lang: str,
    *,
    job_id: str,
    target: list,
    recent: list,
    codebook: Any,
    window_counts: np.ndarray | None,
    report: dict[str, Any],
    pool_path: Path | None,
    initial: bool = False,
    use_current: bool = True,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Plan, train, score, write and (when the gate passes) promote; fills and returns ``report``."""
    wcfg = ctx.config.worker
    settings = ctx.languages.get(lang)
    tcfg = train_config(wcfg.train, settings.adapters.kind)
    planned = build_plan(ctx, lang, target=target, recent=recent, codebook=codebook, window_counts=window_counts,
                         pool_path=pool_path, use_current=use_current)
    plan, parent, tensors, pool = planned.plan, planned.parent, planned.tensors, planned.pool
    centroids, parent_config = planned.centroids, planned.parent_config
    prev_anchors = [t for _, t in planned.prev_anchors]
    fisher = None
    report["parent"] = parent
    report["selection"] = name_selection(plan.selection, _labels(ctx, codebook))  # which clusters were filled
    report["plan"] = plan.data
    for w in plan.data["warnings"]:
        log.warning("%s: %s", lang, w)
    adaptation = plan.adaptation or plan.retention
    # adapters.kind changed (dora <-> lora): theta_prev has another shape, so the new kind starts fresh without
    # ECDA; the gate still compares it with the parent, scored in the parent's own kind.
    switched = parent is not None and bool(parent_config.get("use_dora", True)) != tcfg.use_dora
    if switched:
        log.info("%s: adapters.kind is now %s; the parent %s is of the other kind, training a fresh adapter",
                 lang, settings.adapters.kind, parent)
        model = ctx.host.install(lang, replace(tcfg, use_dora=not tcfg.use_dora), tensors)
        cur_a = nll(model, adaptation, ctx.host.tokenizer, tcfg)
        cur_r = nll(model, plan.retention, ctx.host.tokenizer, tcfg)
        model = ctx.host.install(lang, tcfg, None)
    else:
        model = ctx.host.install(lang, tcfg, tensors)
        cur_a = nll(model, adaptation, ctx.host.tokenizer, tcfg) if parent is not None else None
        cur_r = nll(model, plan.retention, ctx.host.tokenizer, tcfg) if parent is not None else None
    if parent is not None and not switched and FISHER_FILE in ctx.registry.files(lang, parent) and prev_anchors:
        from compass.adapt import adapter_parameters

        raw = st_load(ctx.registry.read_file(lang, parent, FISHER_FILE))
        names = set(adapter_parameters(model, lang))
        fisher = raw if set(raw) == names else None  # another layout (e.g. other rank): recompute at theta_prev

    ckpt_dir = ctx.checkpoint_dir(job_id)
    resume = load_checkpoint(ckpt_dir)
    if resume is not None:
        log.info("%s: job %s resumes from its checkpoint at step %d", lang, job_id, resume.step)
    e = wcfg.ecda
    ecda_on = parent is not None and not switched
    result = train_update(
        model, lang, plan, ctx.host.tokenizer, tcfg, centroids,
        ecda=ECDAConfig(beta=e.beta, lam=e.lam, anchor_fraction=e.anchor_fraction,
                        anchor_batch_size=e.anchor_batch_size) if ecda_on else None,
        prev_anchor_texts=prev_anchors if ecda_on else (), fisher=fisher, anchor_fraction=e.anchor_fraction,
        progress=progress, checkpoint_every=wcfg.checkpoint_every,
        on_checkpoint=lambda st: save_checkpoint(ckpt_dir, st), resume=resume, should_stop=should_stop,
    )
    tr = result.train
    report["train"] = {"steps": tr.steps, "epochs": tr.epochs, "train_loss": tr.train_loss, "val_loss": tr.val_loss,
                       "seconds_per_step": tr.seconds_per_step, "n_train": len(plan.train),
                       "n_anchors": len(result.anchor_ids), "resumed_from_step": resume.step if resume else None,
                       # whether the step used the ECDA loss (§3.3.3): not for a first version or a kind switch
                       "ecda": ecda_on, "kind": settings.adapters.kind}
    cand_a = nll(model, adaptation, ctx.host.tokenizer, tcfg)
    cand_r = nll(model, plan.retention, ctx.host.tokenizer, tcfg)
    g = gate(cur_a, cand_a, cur_r, cand_r, margin=wcfg.gate.retention_margin,
             min_improvement=wcfg.gate.min_improvement)
    gate_dict = g.to_dict()
    if initial:
        gate_dict.update(passed=True, outcome="pass", reasons=["initial adaptation"])
    report["gate"] = gate_dict
    report["p_ref"] = plan.p_ref.tolist()

    weights, adapter_config = adapter_state(model, lang)
    version = new_version()
    metrics = {n: float(v) for n, v in gate_dict.items()
               if n in ("adaptation_current", "adaptation_candidate", "retention_current", "retention_candidate",
                        "adaptation_change", "retention_change") and v is not None and math.isfinite(v)}
    manifest = AdapterManifest(
        language=lang, version=version, base_model_id=ctx.host.base_model_id,
        codebook_version=codebook.version if codebook is not None else "none", parent=parent,
        p_ref=plan.p_ref.tolist(), anchor_ids=result.anchor_ids, fisher_file=FISHER_FILE,
        data_hashes={"target": digest([r.id for r in target]), "pool": digest([r.id for r in pool]),
                     "recent": digest([r.id for r in window_rows(recent)])},
        metrics=metrics, kind=plan.kind,
    )
    # the eq. 3 rows travel with the version, so a re-clustering can recompute P_ref on its new codebook
    extra = {**result.extra_files(), REFERENCE_ROWS_FILE: plan.reference_rows.to_bytes(),
             TARGET_HOLDOUT_FILE: json.dumps(plan.target_holdout, ensure_ascii=False).encode("utf-8"),
             PLAN_FILE: json.dumps(plan.data, ensure_ascii=False).encode("utf-8")}
    ctx.registry.write_version(lang, weights, adapter_config, manifest, extra_files=extra)
    report["version"] = version
    if gate_dict["passed"]:
        ctx.registry.promote(lang, version, gate=gate_dict)
        if ctx.client is not None and codebook is not None:
            set_reference(ctx.client, lang, codebook_version=codebook.version, adapter_version=version,
                          counts=plan.counts, prefix=ctx.prefix)
        report.update(promoted=True, outcome="promoted")
        ctx.emit(Event("adapter_promoted", lang, time.time(), job_id,
                       {"adapter_version": version, "parent": parent, "gate": gate_dict}))
    else:
        report.update(promoted=False, outcome="rejected")
        ctx.emit(Event("adapter_rejected", lang, time.time(), job_id,
                       {"adapter_version": version, "reasons": g.reasons, "gate": gate_dict}))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return report


def run_job(
    ctx: JobContext,
    job: UpdateJob,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one adapter_update job; returns its report (outcome promoted or rejected). Raises on failure
    (``Interrupted`` when asked to stop); the caller retries, dead-letters and writes failed reports."""
    from infra.codebook import CodebookStore

    report = base_report(job.job_id, job.language, "update", job.reason, time.time())
    if job.kind != "adapter_update":
        raise WorkerError(f"job {job.job_id}: kind {job.kind!r} is not an adapter update; the worker runs "
                          "recluster jobs with daemon/worker/recluster.run_recluster")
    if ctx.client is None:
        raise WorkerError("run_job needs a Redis client (the job's snapshot and recent queries live there)")
    raw = ctx.client.get(job.snapshot_key)
    if raw is None:
        raise WorkerError(f"job {job.job_id}: snapshot {job.snapshot_key} is missing (expired after "
                          "daemon.snapshot_ttl_s?); the daemon will trigger again on drift")
    snapshot = json.loads(raw)
    lang = job.language
    recent = recent_texts(ctx, lang, snapshot)
    if len(snapshot.get("ids") or []) and not recent:
        raise WorkerError(f"job {job.job_id}: none of the snapshot's {len(snapshot['ids'])} query texts is in "
                          f"the recent list of {lang!r} (expired after consumer.recent_ttl_s?)")
    target = load_target(ctx.config, lang)
    codebook = CodebookStore(ctx.config.consumer.codebook_dir, ctx.client, ctx.prefix).load()
    counts = snapshot.get("counts")
    window_counts = np.asarray(counts, dtype=np.float64) if counts else None
    if snapshot.get("codebook_version") and codebook.version.split(".")[0] != str(snapshot["codebook_version"]).split(
            ".")[0]:
        window_counts = None  # another lineage: its bucket ids mean nothing here; count the recent texts instead
    train_and_register(ctx, lang, job_id=job.job_id, target=target, recent=recent, codebook=codebook,
                       window_counts=window_counts, report=report, pool_path=ctx.config.worker.pool,
                       should_stop=should_stop, progress=progress)
    report["finished_at"] = time.time()
    write_report(ctx.work_dir, report)
    return report
