"""One adapter update as data plan + training (§3.2.4, §3.3.3, App. D.3). Pure: no Kafka, no Redis.

Plan (``plan_update``):
  held out   ``holdout_fraction`` of the recent window E_t (the adaptation set), and a seeded fixed share of D_t
             (the same rows every cycle: "earlier data") that, with the previous version's anchor texts, forms the
             retention set; neither is trained on.
  S          COMPASS selection from the pool D_aux (§3.2), labels from the current codebook, E_t = the window's
             training part, budget B from the language's settings (|S| = B * |D_t|).
  D_new      D_t (training part, always) ∪ S ∪ the window's training part, capped at ``max_examples`` (seeded).
  P_ref      eq. 3 over the codebook's buckets (clusters, then noise): the window's counts + S's counts.
  rows       ``reference_rows``: the rows behind eq. 3's numerators, stored with the version so P_ref can be
             recomputed on another codebook (``compass/drift/reference_rows.py``):
               "window"   every recent row (weight 1; all of them, not only the kept part, since n_eval counts all),
               "target"   every D_t row instead, when D_t stood in for E_t (no usage proxy; weight 1),
               "selected" each distinct selected pool row, weight = its repetition count.
             With ``window_counts=None`` a recount of these rows on the same buckets equals ``counts`` exactly.
             With ``window_counts`` given, n_eval is the frozen window's counts but the rows are the recent texts
             the worker still had (some may have expired from the recent list), so a recount on the SAME codebook
             may differ from ``counts``; it is the best stand-in for that window that exists after the cycle.
Training (``train_update``): ECDA from theta_prev when a previous adapter and its anchors exist, plain DoRA
fine-tuning otherwise; then the new B_anchor (``select_anchors`` under the new P_ref) and its diagonal Fisher at
the new weights, which the next cycle uses as theta_prev's Fisher.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from compass.adapt.anchors import select_anchors
from compass.adapt.checkpoint import TrainState
from compass.adapt.config import AdaptError, ECDAConfig, TrainConfig
from compass.adapt.ewc import diagonal_fisher
from compass.adapt.model import adapter_parameters
from compass.adapt.train import TrainResult, _batches, _pad_id, encode, evaluate, train_adapter
from compass.drift import reference_distribution
from compass.drift.reference_rows import ReferenceRows
from compass.embed import l2_normalize

ANCHORS_FILE = "anchors.jsonl"
FISHER_FILE = "fisher.safetensors"
_STREAM_HOLDOUT, _STREAM_RETENTION, _STREAM_CAP = 11, 12, 13


@dataclass(frozen=True)
class Example:
    id: str
    text: str  # what is trained on ("prompt\nresponse" for instruction data)
    source: str  # "target", "selected" or "recent"


@dataclass
class UpdatePlan:
    train: list[Example]  # D_new
    train_X: np.ndarray  # (n, d) embeddings of D_new's rows (anchor selection)
    train_labels: np.ndarray  # (n,) cluster ids, -1 = noise
    adaptation: list[str]  # held-out recent window texts
    retention: list[str]  # held-out D_t texts + previous anchors
    counts: np.ndarray  # (K+1,) eq. 3 numerators: window counts + selected per bucket
    p_ref: np.ndarray  # (K+1,)
    reference_rows: ReferenceRows  # the rows behind ``counts`` (module docstring), for P_ref on another codebook
    selection: dict[str, Any] = field(default_factory=dict)  # the job report's "selection" object
    kind: str = "compass"  # "target_only" when there was no usage proxy


def record_text(record: Any) -> str:
    """Training text of a compass.data.Record: the query, then its response on the next line when there is one."""
    response = getattr(record, "response", None)
    return f"{record.text}\n{response}" if response else record.text


def digest(ids: Sequence[str]) -> str:
    """sha256 of a list of ids (the manifest's data_hashes)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\n")
    return h.hexdigest()


def _noise_to_minus_one(buckets: np.ndarray, k: int) -> np.ndarray:
    b = np.asarray(buckets, dtype=np.int64)
    return np.where(b >= k, -1, b)


def _unit_rows(ids: Sequence[str], source: str, X: np.ndarray, weights: np.ndarray, dim: int) -> ReferenceRows:
    """``ReferenceRows`` of one source; rows re-normalised so a stored row assigns like the one that was counted."""
    x = l2_normalize(np.asarray(X, dtype=np.float32)) if len(ids) else np.zeros((0, dim), np.float32)
    return ReferenceRows(tuple(ids), (source,) * len(ids), np.asarray(weights, np.float64), x)


def _split(n: int, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row indices, sorted; at least one held out and one kept when n >= 2."""
    if n < 2:
        return np.arange(n), np.zeros(0, np.int64)
    n_out = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def plan_update(
    lang: str,
    target: Sequence[Any],
    X_target: np.ndarray,
    target_buckets: np.ndarray,
    recent: Sequence[tuple[str, str]],
    X_recent: np.ndarray,
    recent_buckets: np.ndarray,
    pool: Sequence[Any],
    X_pool: np.ndarray,
    pool_buckets: np.ndarray,
    centroids: np.ndarray,
    *,
    budget: float,
    holdout_fraction: float = 0.2,
    retention_fraction: float = 0.1,
    window_counts: np.ndarray | None = None,
    prev_anchor_texts: Sequence[str] = (),
    max_examples: int | None = None,
    seed: int = 0,
    method: str = "compass",
) -> UpdatePlan:
    """The data of one update (module docstring). Buckets are codebook bucket ids (noise = K, as
    ``Codebook.assign``); ``window_counts`` (K+1) are the frozen window's, else the recent rows' buckets count."""
    from compass.select import SelectionConfig, select

    if len(target) < 2:
        raise AdaptError(f"The target data D_t of {lang!r} must hold at least 2 records (one is held out for the "
                         f"retention check). Got {len(target)}. Fix: add records to the language's targets file.")
    k = int(np.asarray(centroids).shape[0])
    t_keep, t_out = _split(len(target), retention_fraction, 0, _STREAM_RETENTION)  # fixed: same rows every cycle
    r_keep, r_out = _split(len(recent), holdout_fraction, seed, _STREAM_HOLDOUT)
    t_lab = _noise_to_minus_one(target_buckets, k)
    r_lab = _noise_to_minus_one(recent_buckets, k)
    p_lab = _noise_to_minus_one(pool_buckets, k)
    size = k + 1
    sel_counts = np.zeros(size, np.int64)
    rows, reps = np.zeros(0, np.int64), np.zeros(0, np.int64)
    summary: dict[str, Any] = {"method": method, "budget": budget, "n_target": len(target), "n_recent": len(recent),
                               "n_pool": len(pool), "n_selected": 0, "clusters": [], "source_languages": {},
                               "shortfall_clusters": []}
    kind = "compass" if len(r_keep) else "target_only"
    if len(r_keep) and len(pool):
        sel = select(X_target[t_keep], X_recent[r_keep], X_pool, SelectionConfig(budget=budget, method=method,
                     seed=seed), labels=(t_lab[t_keep], r_lab[r_keep], p_lab, centroids),
                     pool_langs=[p.lang for p in pool], target_lang=lang)
        rows, reps, sel_counts = sel.pool_indices, sel.counts, sel.selected_per_cluster
        st = sel.stats
        summary["clusters"] = [
            {"cluster": c, "n_t": int(st.n_t[c]), "n_eval": int(st.n_eval[c]), "n_aux": int(st.n_aux[c]),
             "w_tilde": float(st.w_tilde[c]), "quota": int(sel.quotas[c]), "final_quota": int(sel.final_quotas[c]),
             "selected": int(sel_counts[c])}
            for c in range(size)
        ]
        langs: Counter[str] = Counter()
        for i, c in zip(rows.tolist(), reps.tolist(), strict=True):
            langs[pool[i].lang] += c
        summary.update(n_selected=int(reps.sum()), source_languages=dict(langs.most_common()),
                       shortfall_clusters=[int(c) for c in sel.shortfall_clusters])

    items: list[tuple[Example, np.ndarray, int]] = []
    items += [(Example(target[i].id, record_text(target[i]), "target"), X_target[i], int(t_lab[i])) for i in t_keep]
    for i, c in zip(rows.tolist(), reps.tolist(), strict=True):
        items += [(Example(pool[i].id, record_text(pool[i]), "selected"), X_pool[i], int(p_lab[i]))] * c
    items += [(Example(recent[i][0], recent[i][1], "recent"), X_recent[i], int(r_lab[i])) for i in r_keep]
    if max_examples is not None and len(items) > max_examples:
        keep = np.sort(np.random.default_rng([seed, _STREAM_CAP]).permutation(len(items))[:max_examples])
        items = [items[i] for i in keep]

    if window_counts is not None and len(window_counts) == size:
        n_eval = np.asarray(window_counts, dtype=np.float64)
    else:
        n_eval = np.bincount(np.where(r_lab < 0, k, r_lab), minlength=size).astype(np.float64)
    dim = int(np.asarray(X_target).shape[1])
    usage = _unit_rows([r[0] for r in recent], "window", X_recent, np.ones(len(recent)), dim)
    if n_eval.sum() == 0:  # no usage proxy: D_t's own distribution stands in for E_t
        n_eval = np.bincount(np.where(t_lab < 0, k, t_lab), minlength=size).astype(np.float64)
        usage = _unit_rows([r.id for r in target], "target", X_target, np.ones(len(target)), dim)
    selected = _unit_rows([pool[i].id for i in rows.tolist()], "selected", np.asarray(X_pool)[rows], reps, dim)
    counts = n_eval + sel_counts.astype(np.float64)
    return UpdatePlan(
        train=[e for e, _, _ in items],
        train_X=np.stack([x for _, x, _ in items]).astype(np.float32),
        train_labels=np.asarray([lab for _, _, lab in items], np.int64),
        adaptation=[recent[i][1] for i in r_out],
        retention=[record_text(target[i]) for i in t_out] + list(prev_anchor_texts),
        counts=counts,
        p_ref=reference_distribution(n_eval, sel_counts.astype(np.float64)),  # eq. 3
        reference_rows=ReferenceRows.concat([usage, selected], dim),
        selection=summary,
        kind=kind,
    )


def nll(model: Any, texts: Sequence[str], tokenizer: Any, cfg: TrainConfig) -> float | None:
    """Token-weighted NLL of ``texts`` under the model's active adapter (None when nothing is scorable)."""
    seqs = [s for s in encode(list(texts), tokenizer, cfg.max_length) if len(s) >= 2]
    if not seqs:
        return None
    device = next(model.parameters()).device
    return evaluate(model, _batches(seqs, cfg.batch_size, _pad_id(tokenizer), device, None))


@dataclass
class UpdateResult:
    train: TrainResult
    anchor_ids: list[str]
    anchor_texts: list[str]
    fisher: dict[str, torch.Tensor]

    def extra_files(self) -> dict[str, bytes]:
        """Files stored beside the weights: the anchors (ids + texts) and the Fisher at the new weights."""
        lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in zip(self.anchor_ids,
                                                                                    self.anchor_texts, strict=True)]
        fisher = {n: f.detach().contiguous().cpu() for n, f in self.fisher.items()}
        return {ANCHORS_FILE: ("\n".join(lines) + "\n").encode("utf-8"), FISHER_FILE: st_save(fisher)}


def read_anchors(data: bytes) -> list[tuple[str, str]]:
    """(id, text) pairs of an ``anchors.jsonl`` file."""
    out = []
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            out.append((str(obj["id"]), str(obj["text"])))
    return out


def train_update(
    model: Any,
    lang: str,
    plan: UpdatePlan,
    tokenizer: Any,
    cfg: TrainConfig,
    centroids: np.ndarray,
    *,
    ecda: ECDAConfig | None = None,
    prev_anchor_texts: Sequence[str] = (),
    fisher: dict[str, torch.Tensor] | None = None,
    anchor_fraction: float = 0.05,
    progress: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    resume: TrainState | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> UpdateResult:
    """Train the adapter ``lang`` (holding theta_prev, or fresh for a first version) on the plan's D_new, then
    choose the new anchors and their Fisher. ECDA applies only with ``ecda`` and previous anchors."""
    use_ecda = ecda is not None and len(prev_anchor_texts) > 0
    result = train_adapter(
        model, lang, [e.text for e in plan.train], tokenizer, cfg,
        ecda=ecda if use_ecda else None, anchors_texts=list(prev_anchor_texts) if use_ecda else None,
        fisher=fisher if use_ecda else None, progress=progress, checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint, resume=resume, should_stop=should_stop,
    )
    k = int(np.asarray(centroids).shape[0])
    rows = select_anchors(plan.train_X, plan.train_labels, centroids, plan.p_ref[:k], anchor_fraction,
                          len(plan.train))
    anchors = [plan.train[i] for i in rows.tolist()]
    texts = [a.text for a in anchors]
    seqs = [s for s in encode(texts, tokenizer, cfg.max_length) if len(s) >= 2]
    params = adapter_parameters(model, lang)
    device = next(iter(params.values())).device
    fisher_new = diagonal_fisher(model, _batches(seqs, cfg.batch_size, _pad_id(tokenizer), device, None), params) \
        if seqs else {n: torch.zeros_like(p) for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(False)
    return UpdateResult(result, [a.id for a in anchors], texts, fisher_new)
