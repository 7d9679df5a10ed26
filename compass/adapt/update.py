"""One adapter update as data plan + training (§3.2.4, §3.3.3, App. D.3). Pure: no Kafka, no Redis.

The data plan (which rows train, which rows judge, with their ids) is ``compass/adapt/plan.py``'s ``plan_update``.
Training (``train_update``): ECDA from theta_prev when a previous adapter and its anchors exist, plain DoRA
fine-tuning otherwise; then the new B_anchor (``select_anchors`` under the new P_ref, among the cycle's own rows:
``UpdatePlan.anchor_rows``) and its diagonal Fisher at the new weights, which the next cycle uses as theta_prev's
Fisher.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from compass.adapt.anchors import select_anchors
from compass.adapt.checkpoint import TrainState
from compass.adapt.config import ECDAConfig, TrainConfig
from compass.adapt.ewc import diagonal_fisher
from compass.adapt.model import adapter_parameters
from compass.adapt.plan import Example, PlanSettings, UpdatePlan, WindowRow, plan_update, record_text, target_holdout
from compass.adapt.train import TrainResult, _batches, _pad_id, encode, evaluate, train_adapter

ANCHORS_FILE = "anchors.jsonl"
FISHER_FILE = "fisher.safetensors"
TARGET_HOLDOUT_FILE = "gate_targets.json"  # D_t ids held out for the retention gate, split once (plan.py)

__all__ = ["ANCHORS_FILE", "FISHER_FILE", "TARGET_HOLDOUT_FILE", "Example", "PlanSettings", "UpdatePlan",
           "UpdateResult", "WindowRow", "digest", "nll", "plan_update", "read_anchors", "record_text",
           "target_holdout", "train_update"]


def digest(ids: Sequence[str]) -> str:
    """sha256 of a list of ids (the manifest's data_hashes)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\n")
    return h.hexdigest()


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
    pick = plan.anchor_rows  # the cycle's own rows (S, window); D_t is trained whole every cycle anyway
    rows = select_anchors(plan.train_X[pick], plan.train_labels[pick], centroids, plan.p_ref[:k], anchor_fraction,
                          len(plan.train))
    anchors = [plan.train[i] for i in pick[rows].tolist()]
    texts = [a.text for a in anchors]
    seqs = [s for s in encode(texts, tokenizer, cfg.max_length) if len(s) >= 2]
    params = adapter_parameters(model, lang)
    device = next(iter(params.values())).device
    fisher_new = diagonal_fisher(model, _batches(seqs, cfg.batch_size, _pad_id(tokenizer), device, None), params) \
        if seqs else {n: torch.zeros_like(p) for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(False)
    return UpdateResult(result, [a.id for a in anchors], texts, fisher_new)
