"""Elastic Weight Consolidation restricted to one language's adapter (§3.3.3, Kirkpatrick et al. 2017):

    L_EWC = lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2

theta runs over the adapter's parameters only (lora_A, lora_B, DoRA magnitude); F is the diagonal of the empirical
Fisher information, estimated on the anchor buffer B_anchor at theta_prev (the adapter before this update).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from compass.adapt.config import bad_param
from compass.adapt.loss import causal_lm_nll

Batch = tuple[Tensor, Tensor | None]  # (input_ids, attention_mask)


def snapshot(params: Mapping[str, nn.Parameter]) -> dict[str, Tensor]:
    """theta_prev: detached copies of the adapter tensors."""
    return {n: p.detach().clone() for n, p in params.items()}


def diagonal_fisher(
    model: nn.Module, batches: Iterable[Batch], params: Mapping[str, nn.Parameter]
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher at the current parameters (call it before the update, i.e. at theta_prev):

        F_j = (1/N) * sum_n (d NLL_n / d theta_j)^2

    with NLL_n the mean next-token NLL of anchor example n under its observed tokens ("empirical": the labels are
    the data, not samples from the model). One backward per example, the model in eval mode (no dropout), so the
    estimate is deterministic. Non-negative by construction; keys are exactly ``params``' names."""
    if not params:
        raise bad_param("params", "diagonal_fisher", "a non-empty mapping of adapter parameters", dict(params))
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    flags = {n: p.requires_grad for n, p in params.items()}
    names, tensors = list(params), list(params.values())
    n_examples = 0
    model.eval()
    try:
        for p in tensors:
            p.requires_grad_(True)
        for input_ids, attention_mask in batches:
            for i in range(input_ids.size(0)):
                mask = None if attention_mask is None else attention_mask[i : i + 1]
                nll = causal_lm_nll(model, input_ids[i : i + 1], mask)
                grads = torch.autograd.grad(nll, tensors, allow_unused=True)
                for name, g in zip(names, grads, strict=True):
                    if g is not None:
                        fisher[name] += g.detach().float() ** 2
                n_examples += 1
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    if n_examples == 0:
        raise bad_param("batches", "diagonal_fisher", "at least one anchor example", 0)
    return {n: f / n_examples for n, f in fisher.items()}


def ewc_penalty(
    params: Mapping[str, Tensor], prev: Mapping[str, Tensor], fisher: Mapping[str, Tensor], lam: float
) -> Tensor:
    """lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2 over the adapter parameters (§3.3.3). Exactly 0 at
    theta = theta_prev and quadratic in the displacement."""
    missing = sorted((set(params) - set(prev)) | (set(params) - set(fisher)))
    if missing:
        raise bad_param("prev/fisher", "ewc_penalty", "entries for every adapter parameter", missing[:3])
    if not params:
        raise bad_param("params", "ewc_penalty", "a non-empty mapping of adapter parameters", {})
    # One flat vector per operand: a DoRA adapter has hundreds of small tensors, and a per-tensor expression costs
    # several kernel launches each, every step (benchmarks/ewc_penalty.py).
    device = next(iter(params.values())).device
    theta = torch.cat([p.reshape(-1).float() for p in params.values()])
    theta_prev = torch.cat([prev[n].reshape(-1).to(device, torch.float32) for n in params])
    f = torch.cat([fisher[n].reshape(-1).to(device, torch.float32) for n in params])
    return 0.5 * lam * (f * (theta - theta_prev) ** 2).sum()
