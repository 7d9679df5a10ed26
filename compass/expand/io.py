"""Save and load an upcycled (and grafted) model: safetensors weights, the dense config, and a manifest.

The directory holds ``model.safetensors`` (no pickle), ``config.json`` (the dense model's config: the MoE layout
is rebuilt from the manifest's spec, so plain transformers never sees unknown config fields), the tokenizer if
given, and ``expand_manifest.json``. Tied tensors are stored once: safetensors refuses tensors that share
storage, so every alias after the first is dropped and listed in the manifest, and re-tied on load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compass.expand.errors import ExpandError
from compass.expand.upcycle import UpcycleSpec, get_spec, language_experts, upcycle

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MANIFEST = "expand_manifest.json"
FORMAT_VERSION = 1
PORTABLE_ATTN = ("eager", "sdpa")


def total_parameters(model: nn.Module) -> int:
    """Every parameter once (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def active_parameters(model: nn.Module, spec: UpcycleSpec | None = None) -> int:
    """Parameters one token goes through: all but the experts it is not routed to.

    Hard routing uses one expert per token; top-k routing ``spec.top_k``. A dense model's count is its total.
    """
    spec = spec or get_spec(model)
    total = total_parameters(model)
    if spec is None:
        return total
    active_k = 1 if spec.mode == "hard" else spec.top_k
    idle = 0
    for _, m in language_experts(model):
        per_expert = sum(p.numel() for p in m.experts[0].parameters())
        idle += (len(m.experts) - active_k) * per_expert
    return total - idle


def _dedupe(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep the first key of every storage; return (unique tensors, {dropped alias: kept key})."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for k, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ident in seen and t.numel() > 0:
            tied[k] = seen[ident]
            continue
        seen[ident] = k
        t = t.detach()
        # safetensors needs each tensor to own exactly its bytes: copy views into a larger storage, and only those
        # (cloning every tensor would double the host memory a large model needs to be saved).
        if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.contiguous().clone()
        out[k] = t
    return out, tied


def save_expanded(model: nn.Module, spec: UpcycleSpec, out_dir: str | Path, manifest_extra: dict | None = None, *,
                  tokenizer: Any = None, method: str = "param-delta", base_id: str | None = None,
                  post_id: str | None = None) -> Path:
    """Write ``model`` (upcycled per ``spec``) to ``out_dir``; returns the directory. See the module docstring."""
    from safetensors.torch import save_file

    if not language_experts(model):
        raise ExpandError(f"save_expanded needs an upcycled model; {type(model).__name__} has no LanguageExperts; "
                          "call upcycle(model, langs) first or save a dense model with save_pretrained")
    kept = get_spec(model)
    if kept is not None and kept != spec:
        raise ExpandError(f"spec must be the one the model was upcycled with; got {spec}, model has {kept}; "
                          "pass get_spec(model)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, tied = _dedupe(model.state_dict())
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    model.config.to_json_file(str(out / CONFIG))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    dtype = next(iter(model.parameters())).dtype
    manifest = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "base_id": base_id,
        "post_id": post_id,
        "langs": list(spec.langs),
        "spec": spec.to_dict(),
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "tied": tied,
        "parameters": {"total": total_parameters(model), "active_per_token": active_parameters(model, spec)},
        "extra": dict(manifest_extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an expanded model directory, checked for the fields ``load_expanded`` needs."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise ExpandError(f"{Path(path)} must contain {MANIFEST}; it does not; pass a directory written by "
                          "save_expanded")
    manifest = json.loads(p.read_text())
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExpandError(f"{p}: format_version must be {FORMAT_VERSION}; got {version!r}; re-save the model with "
                          "this compass version")
    if "spec" not in manifest:
        raise ExpandError(f"{p}: a manifest must have a 'spec'; it has {sorted(manifest)}; re-save the model")
    return manifest


def load_expanded(path: str | Path, *, device: str | torch.device | None = None,
                  attn_implementation: str | None = None) -> tuple[nn.Module, UpcycleSpec, dict[str, Any]]:
    """Rebuild the dense model from ``config.json``, upcycle it with the manifest's spec, load the weights strictly
    (only the recorded tied aliases may be absent) and re-tie. Returns ``(model in eval mode, spec, manifest)``.

    ``attn_implementation`` None reuses the saved one when it is portable ("eager"/"sdpa"), so the reloaded model
    computes the same logits bit for bit; kernels that need a GPU (flash attention) fall back to the default."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    manifest = read_manifest(path)
    spec = UpcycleSpec.from_dict(manifest["spec"])
    config = AutoConfig.from_pretrained(str(path))
    dtype = getattr(torch, manifest.get("dtype") or "float32")
    attn = attn_implementation or manifest.get("attn_implementation")
    kwargs = {"attn_implementation": attn} if attn in PORTABLE_ATTN or attn_implementation else {}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    if type(model).__name__ != spec.arch:
        raise ExpandError(f"config.json must build the spec's architecture {spec.arch}; it builds "
                          f"{type(model).__name__}; keep config.json and {MANIFEST} from the same save")
    rebuilt = upcycle(model, spec.langs, layers=spec.layers, mode=spec.mode, top_k=spec.top_k)
    if rebuilt != spec:
        raise ExpandError(f"re-upcycling must reproduce the saved spec {spec}; got {rebuilt}; the manifest's langs "
                          "are not in compass's normalised form: re-save the model")
    state = load_file(str(path / WEIGHTS), device=str(device) if device is not None else "cpu")
    result = model.load_state_dict(state, strict=False)
    tied = set(manifest.get("tied") or {})
    missing = sorted(set(result.missing_keys) - tied)
    if missing or result.unexpected_keys:
        raise ExpandError(f"{path / WEIGHTS} must hold exactly the model's tensors; missing {missing[:5]}, "
                          f"unexpected {list(result.unexpected_keys)[:5]}; re-save with save_expanded")
    model.tie_weights()
    for alias, kept in (manifest.get("tied") or {}).items():
        sd = model.state_dict()
        if alias in sd and sd[alias].data_ptr() != sd[kept].data_ptr():
            raise ExpandError(f"{alias} must be re-tied to {kept} on load; it was not (config.tie_word_embeddings="
                              f"{getattr(config, 'tie_word_embeddings', None)}); keep config.json from the same save")
    if device is not None:
        model.to(device)
    model.eval()
    return model, spec, manifest
