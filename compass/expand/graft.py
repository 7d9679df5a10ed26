"""Graft an (expanded) parameter delta onto a model in place: θ ← θ + scale · Δ."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from compass.expand.errors import ExpandError


def graft(model: nn.Module, expanded_delta: Mapping[str, torch.Tensor], scale: float = 1.0) -> int:
    """Add ``scale * expanded_delta[k]`` to the model's tensor ``k`` for every key; returns how many tensors changed.

    Every key is checked (present, same shape) before anything is modified, so a bad delta leaves the model as it
    was. Tied weights (e.g. ``lm_head.weight`` sharing ``embed_tokens.weight``) are one tensor: it receives the
    delta once, and the tied keys' deltas must agree. Non-floating tensors (integer buffers) are left alone.
    """
    targets = model.state_dict(keep_vars=True)
    missing = [k for k in expanded_delta if k not in targets]
    if missing:
        raise ExpandError(f"every delta key must exist in the model; {len(missing)} do not, first "
                          f"{missing[:5]}; expand the dense delta with expand_delta(delta, spec) for an upcycled "
                          "model, or graft a dense delta onto the dense model")
    shapes = [f"{k}: model {tuple(targets[k].shape)} vs delta {tuple(v.shape)}"
              for k, v in expanded_delta.items() if targets[k].shape != v.shape]
    if shapes:
        raise ExpandError(f"every delta tensor must have its model tensor's shape; {len(shapes)} differ, first "
                          f"{shapes[:3]}; compute the delta from models with this model's config")
    first_key: dict[int, str] = {}
    for k, v in expanded_delta.items():
        t = targets[k]
        if id(t) in first_key and not torch.equal(v, expanded_delta[first_key[id(t)]].to(v.device, v.dtype)):
            raise ExpandError(f"tied tensors must receive the same delta; {k} and {first_key[id(t)]} share storage "
                              "but their deltas differ; untie them in both models or drop one key from the delta")
        first_key.setdefault(id(t), k)
    changed = 0
    with torch.no_grad():
        for k in first_key.values():
            t = targets[k]
            if not t.is_floating_point():
                continue
            d = expanded_delta[k].to(device=t.device, dtype=torch.float32)
            # Add in float32 then round once, so a bf16 model does not lose the delta's small entries twice.
            t.copy_((t.float() + scale * d).to(t.dtype))
            changed += 1
    return changed
