"""Incremental fine-tuning of one language's DoRA adapter (§3.3.3 update step, §4.3 training setup).

AdamW on the adapter's parameters only, linear warm-up over ``warmup_ratio`` of the steps then cosine decay to 0
(``transformers.get_cosine_schedule_with_warmup``), global-norm gradient clipping, at most ``max_epochs`` epochs with
early stopping on the validation task loss (the best epoch's adapter weights are restored). With ``ecda`` each step
minimises the ECDA objective of §3.3.3,

    L_total = L_task(D_new) + beta * L_DAR(B_anchor) + L_EWC,   L_EWC = lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2

on a task batch of D_new and an anchor micro-batch of B_anchor, with F the Fisher on B_anchor at theta_prev.

Single pass (``ecda_step_backward``, what ``train_adapter`` runs): the task batch and the anchor micro-batch are one
right-padded batch, one forward/backward, each target token weighted 1/N_task (task rows) or beta/N_anchor (anchor
rows), so the loss and its gradient are those of mean_task + beta * mean_anchor; L_EWC is not in the graph: its value
is computed under no_grad and its analytic gradient lambda * F * (theta - theta_prev) is added to ``p.grad`` after
the backward, before clipping (``compass.adapt.ewc.FusedEWC``). ``ecda_step_loss`` keeps the two-pass form (task and
anchor batches in separate passes, L_EWC through autograd) as the reference the tests compare against.

Anchor micro-batch: §3.3.3 defines L_DAR as the task loss on the buffer B_anchor, i.e. its mean over the buffer,
without saying how much of it each step sees. A full ``batch_size`` of anchors per step doubled the cost of a step
while B_anchor is small (|B_anchor| = 5% of the data, App. D.3), so by default each step takes
ceil(|B_anchor| / steps_per_epoch) anchor rows (at least 1; ``ECDAConfig.anchor_batch_size`` overrides it): the
buffer is passed over once per epoch, the same number of passes as D_new. Rows come from a fresh seeded permutation
of the buffer per pass (``AnchorCycle``), so every row is seen equally often and each step's L_DAR is an unbiased
estimate of the buffer mean; with beta = 0 no anchor rows are run at all. The cycle's position is part of the
checkpoint, so a resumed run draws the same anchor rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import get_cosine_schedule_with_warmup

from compass.adapt.checkpoint import Interrupted, TrainState
from compass.adapt.config import AdaptError, ECDAConfig, TrainConfig, bad_param
from compass.adapt.ewc import Batch, FusedEWC, diagonal_fisher, ewc_penalty, snapshot
from compass.adapt.loss import causal_lm_nll, ecda_loss, stack_batches, target_tokens, weighted_lm_nll
from compass.adapt.model import adapter_parameters

Examples = Sequence[str] | Sequence[Sequence[int]]  # plain texts (need a tokenizer) or token ids


@dataclass
class TrainResult:
    steps: int  # optimizer steps taken
    epochs: int  # epochs run (early stopping may end before max_epochs)
    train_loss: list[float]  # per epoch: mean total (ECDA) loss of its steps
    val_loss: list[float]  # per epoch: validation task loss (empty without a validation split)
    best_epoch: int  # 1-based epoch whose adapter weights the model now holds
    seconds_per_step: float  # wall time of the optimisation steps (no evaluation, no Fisher) / steps
    lrs: list[float] = field(default_factory=list)  # learning rate used at each step


def encode(items: Examples, tokenizer: Any | None, max_length: int) -> list[list[int]]:
    """Token ids per example, truncated to ``max_length``. Texts are tokenised as they are (instruction data is
    trained on its "prompt\\nresponse" text); id sequences pass through."""
    out: list[list[int]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if tokenizer is None:
                raise bad_param("tokenizer", "train_adapter", "a tokenizer when examples are texts", None)
            ids = tokenizer(item, truncation=True, max_length=max_length)["input_ids"]
        else:
            ids = [int(t) for t in item]
        if any(t < 0 for t in ids):
            raise bad_param(f"examples[{i}]", "train_adapter", "non-negative token ids", ids[:8])
        out.append(list(ids[:max_length]))
    return out


def collate(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | None = None) -> Batch:
    """Right-padded (input_ids, attention_mask); padding is masked out of the loss (labels -100)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer: Any | None) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if v is not None:
            return int(v)
    return 0


def _batches(seqs: list[list[int]], bs: int, pad_id: int, device, gen: torch.Generator | None) -> list[Batch]:
    order = torch.randperm(len(seqs), generator=gen).tolist() if gen is not None else list(range(len(seqs)))
    return [collate([seqs[j] for j in order[i : i + bs]], pad_id, device) for i in range(0, len(order), bs)]


def ecda_step_loss(
    model: nn.Module,
    batch: Batch,
    anchor_batch: Batch | None,
    params: Mapping[str, Tensor],
    prev: Mapping[str, Tensor] | None,
    fisher: Mapping[str, Tensor] | None,
    ecda: ECDAConfig | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step's objective and its parts {'task', 'dar', 'ewc'} (§3.3.3). Without ``ecda`` it is L_task alone."""
    task = causal_lm_nll(model, *batch)
    parts = {"task": task}
    if ecda is None:
        return task, parts
    dar = causal_lm_nll(model, *anchor_batch) if anchor_batch is not None else None
    ewc = ewc_penalty(params, prev, fisher, ecda.lam) if prev is not None and fisher is not None else None
    if dar is not None:
        parts["dar"] = dar
    if ewc is not None:
        parts["ewc"] = ewc
    return ecda_loss(task, dar, ewc, ecda.beta), parts


def ecda_step_backward(
    model: nn.Module,
    batch: Batch,
    anchor_batch: Batch | None,
    params: Mapping[str, Tensor],
    prev: Mapping[str, Tensor] | None,
    fisher: Mapping[str, Tensor] | None,
    ecda: ECDAConfig | None,
    *,
    ewc: FusedEWC | None = None,
    pad_id: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The single-pass step: accumulates the gradient of the §3.3.3 objective into ``p.grad`` (zero it first) and
    returns (the objective, its parts {'task', 'dar', 'ewc'}), detached; same values and gradients as
    ``ecda_step_loss`` followed by ``backward()``. Task and anchor rows go through the model as one batch with
    per-token weights 1/N_task and beta/N_anchor; L_EWC's gradient is added analytically after the backward (pass
    ``ewc``, built once per training, or ``prev``/``fisher`` to build one here). With beta = 0 the anchor rows are
    skipped (their term is 0) and there is no 'dar' part. Without ``ecda`` it is L_task alone."""
    if ecda is None or anchor_batch is None or ecda.beta == 0:
        task = causal_lm_nll(model, *batch)
        task.backward()
        total, parts = task.detach(), {"task": task.detach()}
    else:
        n = batch[0].size(0)
        ids, mask = stack_batches(batch, anchor_batch, pad_id)
        tokens = target_tokens(ids, mask)
        n_task, n_anchor = tokens[:n].sum().clamp_min(1.0), tokens[n:].sum().clamp_min(1.0)
        ones = torch.ones_like(tokens)
        weights = torch.cat([ones[:n] / n_task, ones[n:] * (ecda.beta / n_anchor)])  # per row, i.e. per target token
        loss, per_row = weighted_lm_nll(model, ids, mask, weights)
        loss.backward()
        total = loss.detach()
        parts = {"task": per_row[:n].sum() / n_task, "dar": per_row[n:].sum() / n_anchor}
    if ecda is not None and (ewc is not None or (prev is not None and fisher is not None)):
        ewc = ewc if ewc is not None else FusedEWC(params, prev, fisher, ecda.lam)
        parts["ewc"] = ewc.add_grad_()
        total = total + parts["ewc"]
    return total, parts


def anchor_rows_per_step(n_anchors: int, steps_per_epoch: int, anchor_batch_size: int | None = None) -> int:
    """Anchor rows in each step: ``anchor_batch_size`` clamped to the buffer, or by default ceil(|B_anchor| /
    steps_per_epoch) (at least 1): one pass over B_anchor per epoch (module docstring)."""
    if n_anchors < 1 or steps_per_epoch < 1:
        raise bad_param("n_anchors/steps_per_epoch", "anchor_rows_per_step", "ints >= 1", (n_anchors, steps_per_epoch))
    if anchor_batch_size is not None:
        return min(anchor_batch_size, n_anchors)
    return max(1, math.ceil(n_anchors / steps_per_epoch))


class AnchorCycle:
    """Anchor row indices, ``rows`` per step, through a fresh seeded permutation of the buffer per pass: global draw
    i is row perm_{i // n}[i % n], so every row comes once per pass and a step may straddle two passes. ``cursor``
    (draws made) is all the state a resume needs."""

    def __init__(self, n: int, rows: int, seed: int, cursor: int = 0) -> None:
        self.n, self.rows, self.seed, self.cursor = n, rows, seed, cursor
        self._pass, self._perm = -1, []

    def _order(self, p: int) -> list[int]:
        if p != self._pass:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + p)  # one permutation per (seed, pass)
            self._pass, self._perm = p, torch.randperm(self.n, generator=gen).tolist()
        return self._perm

    def take(self) -> list[int]:
        """The next step's row indices; advances the cursor."""
        out = [self._order(i // self.n)[i % self.n] for i in range(self.cursor, self.cursor + self.rows)]
        self.cursor += self.rows
        return out


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Token-weighted mean next-token NLL over ``batches`` (eval mode)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0.0
    try:
        for ids, mask in batches:
            n = float((mask[:, 1:] * mask[:, :-1]).sum()) if mask is not None else float(ids.numel() - ids.size(0))
            total += float(causal_lm_nll(model, ids, mask)) * n
            count += n
    finally:
        model.train(was)
    return total / count if count else float("nan")


def _split(seqs: list[list[int]], frac: float, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    if frac <= 0 or len(seqs) < 2:
        return seqs, []
    n_val = min(len(seqs) - 1, max(1, round(frac * len(seqs))))
    perm = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed)).tolist()
    return [seqs[i] for i in perm[n_val:]], [seqs[i] for i in perm[:n_val]]


def train_adapter(
    model: PeftModel,
    lang: str,
    train_texts: Examples,
    tokenizer: Any | None,
    cfg: TrainConfig,
    *,
    ecda: ECDAConfig | None = None,
    anchors_texts: Examples | None = None,
    prev_state: Mapping[str, Tensor] | None = None,
    fisher: Mapping[str, Tensor] | None = None,
    val_texts: Examples | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    resume: TrainState | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune the adapter ``lang`` of ``model`` in place on ``train_texts`` (D_new); base weights stay frozen.

    Validation: ``val_texts`` if given, else ``cfg.val_fraction`` of ``train_texts`` held out (seeded); none at all
    (fraction 0 or a single example) disables early stopping. ECDA (``ecda`` given) needs ``anchors_texts``
    (B_anchor); ``prev_state`` (theta_prev) defaults to the adapter as it is now and ``fisher`` to the diagonal
    Fisher on the anchors at theta_prev. ``progress`` receives {'event': 'step'|'epoch', ...} dicts.
    Seeds torch's global RNG with ``cfg.seed`` (adapter dropout).

    Checkpoints: every ``checkpoint_every`` steps ``on_checkpoint`` receives a ``TrainState``; ``resume`` (one such
    state, e.g. from ``compass.adapt.checkpoint.load_checkpoint``) continues the same run with the same inputs and
    ends with the same weights as an uninterrupted run. ``should_stop`` is asked after every step; when it answers
    True the state goes to ``on_checkpoint`` and ``Interrupted`` is raised."""
    params = adapter_parameters(model, lang)
    model.set_adapter(lang)
    for p in params.values():
        p.requires_grad_(True)
    device = next(iter(params.values())).device
    pad_id = _pad_id(tokenizer)
    seqs = [s for s in encode(train_texts, tokenizer, cfg.max_length) if len(s) >= 2]
    if not seqs:
        raise bad_param("train_texts", "train_adapter", "at least one example of >= 2 tokens", len(train_texts))
    if val_texts is not None:
        train_seqs, val_seqs = seqs, [s for s in encode(val_texts, tokenizer, cfg.max_length) if len(s) >= 2]
    else:
        train_seqs, val_seqs = _split(seqs, cfg.val_fraction, cfg.seed)
    val_batches = _batches(val_seqs, cfg.batch_size, pad_id, device, None) if val_seqs else []

    anchor_seqs: list[list[int]] = []
    prev: dict[str, Tensor] | None = None
    if ecda is not None:
        anchor_seqs = [s for s in encode(anchors_texts or [], tokenizer, cfg.max_length) if len(s) >= 2]
        if not anchor_seqs:
            raise AdaptError(
                "The 'anchors_texts' parameter of train_adapter must hold the anchor buffer B_anchor when 'ecda' is "
                "given. Got none. Fix: pass the previous cycle's anchors, or ecda=None for a first training."
            )
        if resume is not None:  # theta_prev and F as the interrupted run had them (the adapter has moved since)
            prev_state = _group(resume.tensors, "prev.")
            fisher = _group(resume.tensors, "fisher.") or None
        prev = {n: t.to(device) for n, t in (prev_state or snapshot(params)).items()}
        if fisher is None:  # §3.3.3: F on B_anchor at theta_prev (the adapter before this update)
            fisher = diagonal_fisher(model, _batches(anchor_seqs, cfg.batch_size, pad_id, device, None), params)
        for name, given in (("prev_state", prev), ("fisher", fisher)):
            if set(given) != set(params):
                raise bad_param(name, "train_adapter", f"exactly the adapter parameters of {lang!r}", sorted(given)[:3])
        fisher = {n: f.to(device) for n, f in fisher.items()}

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(train_seqs) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.max_epochs
    warmup = math.ceil(cfg.warmup_ratio * total_steps)  # as transformers.TrainingArguments.get_warmup_steps
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total_steps)
    fused_ewc = FusedEWC(params, prev, fisher, ecda.lam) if ecda is not None else None
    cycle = None
    if ecda is not None and ecda.beta > 0:  # beta = 0: L_DAR has no weight, no anchor rows are run
        rows = anchor_rows_per_step(len(anchor_seqs), steps_per_epoch, ecda.anchor_batch_size)
        cycle = AnchorCycle(len(anchor_seqs), rows, cfg.seed)
        if resume is not None:  # older checkpoints have no cursor: it was one draw of `rows` per step
            cycle.cursor = int(resume.meta.get("anchor_cursor", resume.step * rows))

    result = TrainResult(steps=0, epochs=0, train_loss=[], val_loss=[], best_epoch=0, seconds_per_step=0.0)
    best_val, best_state, bad_epochs, step_time = math.inf, None, 0, 0.0
    start_epoch, skip, losses = 1, 0, []
    if resume is not None:
        start_epoch, skip, losses = resume.epoch, resume.position, list(resume.meta["losses"])
        best_val, best_state, bad_epochs, step_time = _restore(resume, params, opt, sched, gen, result, lang)
    was_training = model.training
    model.train()

    def state(epoch: int, position: int, gen_state: Tensor) -> TrainState:
        return _capture(params, opt, sched, prev, fisher, best_state, gen_state, result, epoch, position, losses,
                        best_val, bad_epochs, step_time, lang, anchor_cursor=cycle.cursor if cycle else 0)

    try:
        for epoch in range(start_epoch, cfg.max_epochs + 1):
            gen_state = gen.get_state()  # before this epoch's shuffle: a resume redraws the same order
            if epoch != start_epoch or resume is None:
                losses = []
            for position, batch in enumerate(_batches(train_seqs, cfg.batch_size, pad_id, device, gen)):
                if epoch == start_epoch and position < skip:
                    continue
                t0 = time.perf_counter()
                anchor = collate([anchor_seqs[i] for i in cycle.take()], pad_id, device) if cycle else None
                opt.zero_grad(set_to_none=True)
                loss, _ = ecda_step_backward(model, batch, anchor, params, prev, fisher, ecda, ewc=fused_ewc,
                                             pad_id=pad_id)
                torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
                result.lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
                step_time += time.perf_counter() - t0
                result.steps += 1
                losses.append(float(loss.detach()))
                if progress:
                    progress(
                        {
                            "event": "step",
                            "epoch": epoch,
                            "step": result.steps,
                            "loss": losses[-1],
                            "lr": result.lrs[-1],
                            "total_steps": total_steps,
                        }
                    )
                stop = should_stop is not None and should_stop()
                if on_checkpoint is not None and (stop or (checkpoint_every and result.steps % checkpoint_every == 0)):
                    on_checkpoint(state(epoch, position + 1, gen_state))
                if stop:
                    raise Interrupted(result.steps)
            result.epochs = epoch
            result.train_loss.append(sum(losses) / len(losses))
            stop = False
            if val_batches:
                v = evaluate(model, val_batches)
                result.val_loss.append(v)
                if v < best_val:
                    best_val, best_state, bad_epochs, result.best_epoch = v, snapshot(params), 0, epoch
                else:
                    bad_epochs += 1
                    stop = bad_epochs >= cfg.patience
            else:
                result.best_epoch = epoch
            if progress:
                progress(
                    {
                        "event": "epoch",
                        "epoch": epoch,
                        "train_loss": result.train_loss[-1],
                        "val_loss": result.val_loss[-1] if result.val_loss else None,
                    }
                )
            if stop:
                break
    finally:
        model.train(was_training)
    if best_state is not None and result.best_epoch != result.epochs:  # early stopping: back to the best epoch
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(best_state[n])
    result.seconds_per_step = step_time / max(result.steps, 1)
    return result


def _group(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _capture(params, opt, sched, prev, fisher, best_state, gen_state, result, epoch, position, losses, best_val,
             bad_epochs, step_time, lang, anchor_cursor: int = 0) -> TrainState:
    """The resumable state: tensors flattened by role (safetensors holds flat name -> tensor maps only)."""
    tensors: dict[str, Tensor] = {f"param.{n}": p.detach().clone() for n, p in params.items()}
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for key, value in st.items():
            tensors[f"opt.{idx}.{key}"] = value.detach().clone() if torch.is_tensor(value) else torch.tensor(value)
    for role, group in (("prev", prev), ("fisher", fisher), ("best", best_state)):
        for n, t in (group or {}).items():
            tensors[f"{role}.{n}"] = t.detach().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors["rng.epoch_gen"] = gen_state.clone()
    meta = {
        "lang": lang, "names": list(params), "losses": list(losses), "train_loss": list(result.train_loss),
        "val_loss": list(result.val_loss), "lrs": list(result.lrs), "best_epoch": result.best_epoch,
        "best_val": None if math.isinf(best_val) else best_val, "bad_epochs": bad_epochs, "step_time": step_time,
        "param_groups": opt_state["param_groups"], "sched_last_epoch": sched.last_epoch,
        "anchor_cursor": anchor_cursor,  # anchor rows drawn so far (AnchorCycle)
    }
    return TrainState(result.steps, epoch, position, tensors, meta)


def _restore(resume: TrainState, params, opt, sched, gen, result: TrainResult, lang: str):
    meta, tensors = resume.meta, resume.tensors
    if meta.get("lang") != lang or meta.get("names") != list(params):
        raise bad_param("resume", "train_adapter", f"a checkpoint of the adapter {lang!r} of this model",
                        meta.get("lang"))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param.{n}"])
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in _group(tensors, "opt.").items():
        idx, key = k.split(".", 1)
        state.setdefault(int(idx), {})[key] = v.to(next(iter(params.values())).device) if key != "step" else v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.last_epoch = meta["sched_last_epoch"]
    sched._last_lr = [g["lr"] for g in opt.param_groups]
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    gen.set_state(tensors["rng.epoch_gen"])
    result.steps, result.train_loss, result.val_loss = resume.step, list(meta["train_loss"]), list(meta["val_loss"])
    result.lrs, result.best_epoch, result.epochs = list(meta["lrs"]), meta["best_epoch"], resume.epoch - 1
    best = _group(tensors, "best.") or None
    best_val = math.inf if meta["best_val"] is None else meta["best_val"]
    return best_val, best, meta["bad_epochs"], meta["step_time"]
