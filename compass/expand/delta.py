"""The post-training delta Δ_post = θ_post − θ_base, and its expansion onto the upcycled MoE layout."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from compass.expand.errors import ExpandError
from compass.expand.upcycle import UpcycleSpec

# A dense MLP weight of decoder layer i: the keys upcycling turns into per-expert keys.
_MLP_KEY = re.compile(
    r"^(?P<pre>(?:.*\.)?layers\.(?P<layer>\d+)\.mlp)\.(?P<rest>(?:gate|up|down)_proj\.(?:weight|bias))$"
)
_CONFIG_DIMS = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads")


def _first(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return f"{items[:n]}{more}"


def param_delta(base_state: Mapping[str, torch.Tensor], post_state: Mapping[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """θ_post − θ_base for every key; both state dicts must have the same keys and shapes (checked first).

    Floating tensors are subtracted in float32 (a bf16 difference of close weights loses most of its bits);
    non-floating tensors (integer buffers) get a zero delta of their own dtype.
    """
    only_base = sorted(set(base_state) - set(post_state))
    only_post = sorted(set(post_state) - set(base_state))
    if only_base or only_post:
        raise ExpandError(f"base and post state dicts must have the same keys; only in base: {_first(only_base)}, "
                          f"only in post: {_first(only_post)}; load both with the same architecture (dense, "
                          "not upcycled; PEFT adapters merged with post_state_from_peft)")
    shapes = [f"{k}: base {tuple(base_state[k].shape)} vs post {tuple(post_state[k].shape)}"
              for k in base_state if base_state[k].shape != post_state[k].shape]
    if shapes:
        raise ExpandError(f"base and post tensors must have the same shapes; {len(shapes)} differ, first "
                          f"{_first(shapes, 3)}; use a post-trained model of the same base (same config dims)")
    out: dict[str, torch.Tensor] = {}
    for k, b in base_state.items():
        p = post_state[k]
        if b.is_floating_point():
            out[k] = p.detach().float() - b.detach().float().to(p.device)
        else:
            out[k] = torch.zeros_like(b)
    return out


def _dims(model: nn.Module) -> dict[str, object]:
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return {f: getattr(text, f, None) for f in _CONFIG_DIMS}


def check_compatible(base_model: nn.Module, post_model: nn.Module) -> None:
    """Raise ``ExpandError`` unless both models share architecture class and config dimensions."""
    a, b = type(base_model).__name__, type(post_model).__name__
    if a != b:
        raise ExpandError(f"base and post models must have the same architecture class; got base {a}, post {b}; "
                          "use the post-trained (instruct) release of the same base family")
    da, db = _dims(base_model), _dims(post_model)
    for field in _CONFIG_DIMS:
        if da[field] != db[field]:
            raise ExpandError(f"config.{field} must match between base and post; got base {da[field]}, post "
                              f"{db[field]}; use the post-trained model built from this base (same size)")


def post_state_from_peft(base_model: nn.Module, adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """θ_post of a PEFT adapter: load it onto a copy of ``base_model``, merge, and return the merged state dict.

    ``base_model`` itself is not modified; Δ_post of the adapter is then ``param_delta(base, this)``.
    """
    from peft import PeftModel  # lazy: peft is heavy and only this function needs it

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExpandError(f"adapter_dir must hold a PEFT adapter (adapter_config.json); got {adapter_dir}; "
                          "pass the directory written by save_pretrained of a PeftModel")
    work = copy.deepcopy(base_model)
    merged = PeftModel.from_pretrained(work, str(adapter_dir)).merge_and_unload()
    return {k: v.detach() for k, v in merged.state_dict().items()}


def expand_delta(delta: Mapping[str, torch.Tensor], spec: UpcycleSpec) -> dict[str, torch.Tensor]:
    """Map a dense delta onto the upcycled layout of ``spec``.

    Every dense MLP key ``…layers.{i}.mlp.{gate,up,down}_proj.weight`` of an upcycled layer becomes one key per
    expert, ``…layers.{i}.mlp.experts.{j}.{…}.weight`` (base included, all sharing the same delta tensor);
    every other (shared) key is kept as is. Routers get no delta.
    """
    upcycled = set(spec.layers)
    n = len(spec.expert_names) or len(spec.langs) + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in delta.items():
        if ".mlp.experts." in key or ".mlp.router." in key:
            raise ExpandError(f"expand_delta needs a dense delta; got the already expanded key {key!r}; pass "
                              "param_delta(base_state, post_state) of the dense models")
        m = _MLP_KEY.match(key)
        if m and int(m["layer"]) in upcycled:
            for j in range(n):
                out[f"{m['pre']}.experts.{j}.{m['rest']}"] = value
        else:
            out[key] = value
    return out
