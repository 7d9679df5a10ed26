"""Merging baselines that PARAM-Delta is compared against: task arithmetic and TIES-Merging.

TIES-Merging (Yadav et al., 2023, "Resolving Interference When Merging Models"), per tensor:

1. task vectors τ_i = θ_i − θ_base, each scaled by its weight w_i (default 1);
2. trim: keep each τ_i's ``ceil(density * numel)`` largest-magnitude entries, zero the rest (ties in magnitude
   are broken by ``torch.topk``);
3. elect: the sign per entry is the sign of Σ_i trimmed τ_i (the "mass" rule: the larger total magnitude wins);
4. disjoint mean: average, per entry, only the trimmed τ_i that are non-zero and agree with the elected sign
   (weighted: Σ w_i τ_i / Σ w_i over those; entries with none, or an elected sign of 0, get 0);
5. θ = θ_base + scale · merged.

Trimming is per tensor (as in mergekit), not over the concatenation of all parameters as in the paper: the
same top-k fraction per matrix, and it avoids flattening a whole model into one vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from compass.expand.errors import ExpandError

State = Mapping[str, torch.Tensor]


def task_arithmetic(cpt_state: State, delta: State, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """θ_cpt + scale · Δ_post for every key of ``cpt_state``; keys without a delta (e.g. routers) are copied.

    Every delta key must be in ``cpt_state`` with the same shape (expand a dense delta first for an MoE state).
    The sum is done in float32 and cast back to the CPT tensor's dtype.
    """
    missing = [k for k in delta if k not in cpt_state]
    if missing:
        raise ExpandError(f"every delta key must be in the CPT state; {len(missing)} are not, first {missing[:5]}; "
                          "expand the delta with expand_delta(delta, spec) for an upcycled model")
    shapes = [f"{k}: cpt {tuple(cpt_state[k].shape)} vs delta {tuple(delta[k].shape)}"
              for k in delta if cpt_state[k].shape != delta[k].shape]
    if shapes:
        raise ExpandError(f"delta tensors must have the CPT tensors' shapes; {len(shapes)} differ, first "
                          f"{shapes[:3]}; compute the delta from models of the same size")
    out: dict[str, torch.Tensor] = {}
    for k, t in cpt_state.items():
        if k in delta and t.is_floating_point():
            out[k] = (t.float() + scale * delta[k].to(t.device).float()).to(t.dtype)
        else:
            out[k] = t.clone()
    return out


def _trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    n = tau.numel()
    k = min(n, math.ceil(density * n))
    if k >= n:
        return tau
    flat = tau.flatten()
    keep = flat.abs().topk(k).indices
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[keep] = True
    return torch.where(mask, flat, torch.zeros_like(flat)).view_as(tau)


def ties_merge(base_state: State, states: Sequence[State], density: float = 0.2,
               weights: Sequence[float] | None = None, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """TIES-Merging of ``states`` onto ``base_state`` (see the module docstring); returns a new state dict."""
    if not states:
        raise ExpandError("ties_merge needs at least one state to merge; got none; pass [post_state, ...]")
    if not 0.0 < density <= 1.0:
        raise ExpandError(f"density must be in (0, 1]; got {density}; use e.g. 0.2 (keep the top 20%)")
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    if len(w) != len(states):
        raise ExpandError(f"weights must have one entry per state ({len(states)}); got {len(w)}; "
                          "pass one weight per model or None")
    for i, s in enumerate(states):
        if set(s) != set(base_state):
            diff = sorted(set(s) ^ set(base_state))
            raise ExpandError(f"state {i} must have the base state's keys; differing keys {diff[:5]}; merge "
                              "models of the same architecture")
        bad = [k for k in base_state if s[k].shape != base_state[k].shape]
        if bad:
            raise ExpandError(f"state {i} must have the base state's shapes; {bad[:3]} differ; merge models of "
                              "the same size")
    out: dict[str, torch.Tensor] = {}
    for k, base in base_state.items():
        if not base.is_floating_point():
            out[k] = base.clone()
            continue
        b = base.float()
        taus = torch.stack([_trim(wi * (s[k].to(base.device).float() - b), density)
                            for wi, s in zip(w, states, strict=True)])
        sign = torch.sign(taus.sum(dim=0))
        agree = (torch.sign(taus) == sign) & (taus != 0)
        wt = torch.tensor(w, dtype=torch.float32, device=b.device).view(-1, *([1] * b.dim()))
        num = (taus * agree).sum(dim=0)
        den = (wt * agree).sum(dim=0)
        merged = torch.where(den != 0, num / den.where(den != 0, torch.ones_like(den)), torch.zeros_like(num))
        out[k] = (b + scale * merged).to(base.dtype)
    return out
