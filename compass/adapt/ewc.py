"""Elastic Weight Consolidation restricted to one language's adapter (§3.3.3, Kirkpatrick et al. 2017):

    L_EWC = lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2

theta runs over the adapter's parameters only (lora_A, lora_B, DoRA magnitude); F is the diagonal of the empirical
Fisher information, estimated on the anchor buffer B_anchor at theta_prev (the adapter before this update).

Two forms of the same term: ``ewc_penalty`` (an autograd expression, used by the two-pass reference step) and
``FusedEWC`` (value under no_grad plus its analytic gradient lambda * F * (theta - theta_prev) added straight into
``p.grad``, used by the single-pass training step: no graph, a handful of multi-tensor kernels per step).
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


class FusedEWC:
    """L_EWC of §3.3.3 without autograd, for the single-pass step (compass/adapt/train.py).

    ``add_grad_()`` adds d L_EWC / d theta_j = lambda * F_j * (theta_j - theta_j_prev) to ``p.grad`` (call it after
    the loss backward and before gradient clipping, so the clipped gradient is that of the total loss) and returns
    lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2, computed in float32 like ``ewc_penalty``. theta_prev and F are
    copied once, as float32 lists in the parameters' order, so a step costs a few ``torch._foreach_*`` kernels
    instead of a graph over hundreds of small tensors (benchmarks/ecda_step.py)."""

    def __init__(
        self, params: Mapping[str, Tensor], prev: Mapping[str, Tensor], fisher: Mapping[str, Tensor], lam: float
    ) -> None:
        missing = sorted((set(params) - set(prev)) | (set(params) - set(fisher)))
        if missing:
            raise bad_param("prev/fisher", "FusedEWC", "entries for every adapter parameter", missing[:3])
        if not params:
            raise bad_param("params", "FusedEWC", "a non-empty mapping of adapter parameters", {})
        self.lam = float(lam)
        self.params = list(params.values())
        self.prev = [prev[n].detach().to(p.device, torch.float32).clone() for n, p in params.items()]
        # lambda/2 * sum F d^2 = lambda/2 * sum_tensors ||sqrt(F) d||^2: one foreach norm gives every tensor's sum
        self.f = [fisher[n].detach().to(p.device, torch.float32).clone() for n, p in params.items()]
        self.sqrt_f = torch._foreach_sqrt(torch._foreach_clamp_min(self.f, 0.0))
        self.fp32 = all(p.dtype == torch.float32 for p in self.params)

    @torch.no_grad()
    def value(self) -> Tensor:
        """lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2 (no gradient)."""
        return self._displacement()[1]

    @torch.no_grad()
    def add_grad_(self) -> Tensor:
        """Add lambda * F * (theta - theta_prev) to every ``p.grad`` (creating it where None); return the value."""
        d, val = self._displacement()
        torch._foreach_mul_(d, self.f)  # F * (theta - theta_prev), the gradient over lambda
        if self.fp32 and all(p.grad is not None for p in self.params):
            torch._foreach_add_([p.grad for p in self.params], d, alpha=self.lam)
            return val
        for p, g in zip(self.params, d, strict=True):
            g = (self.lam * g).to(p.dtype)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
        return val

    def _displacement(self) -> tuple[list[Tensor], Tensor]:
        """(theta - theta_prev per tensor, the penalty's value)."""
        theta = self.params if self.fp32 else [p.detach().float() for p in self.params]
        d = torch._foreach_sub(theta, self.prev)
        norms = torch._foreach_norm(torch._foreach_mul(d, self.sqrt_f))
        return d, 0.5 * self.lam * torch.stack(norms).square().sum()
