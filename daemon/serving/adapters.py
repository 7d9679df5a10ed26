"""Registry version <-> adapter inside one peft model. Every version gets its own adapter name, so a newly
promoted version loads beside the one still serving requests (§3.2.5: "swapping in a small set of weight delta
matrices")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedModel

from compass.errors import CompassError


class AdapterLoadError(CompassError, RuntimeError):
    """A registry version could not be loaded into the serving model; the message names the version and why."""


def adapter_name(lang: str, version: str) -> str:
    """``<lang>@<version>``; '.' (allowed in versions) is not allowed in torch module names, so it becomes '_'."""
    return f"{lang}@{version}".replace(".", "_")


def peft_config(adapter_config: Mapping[str, Any], where: str) -> PeftConfig:
    """The stored ``adapter_config.json`` as a peft config in inference mode (dropout off, nothing trainable)."""
    try:
        cfg = PeftConfig.from_peft_type(**json.loads(json.dumps(dict(adapter_config))))
    except (TypeError, ValueError, KeyError) as e:
        raise AdapterLoadError(f"{where}: adapter_config.json is not a peft config ({e}); re-export the adapter "
                               "with peft_model.peft_config[name].to_dict()") from None
    cfg.inference_mode = True
    return cfg


def load_into(model: PreTrainedModel | PeftModel, name: str, tensors: Mapping[str, torch.Tensor],
              adapter_config: Mapping[str, Any], where: str) -> PeftModel:
    """Add adapter ``name`` with ``tensors`` to ``model`` (wrapping a plain model the first time); returns the
    peft model. A version whose tensors do not fit is removed again and reported: nothing half-loaded serves."""
    cfg = peft_config(adapter_config, where)
    try:
        if isinstance(model, PeftModel):
            model.add_adapter(name, cfg)
            peft = model
        else:
            peft = get_peft_model(model, cfg, adapter_name=name)
    except (ValueError, KeyError) as e:
        raise AdapterLoadError(f"{where}: cannot attach the adapter to the base model ({e}); was it trained on "
                               "this base model (model.path)?") from None
    try:
        result = set_peft_model_state_dict(peft, dict(tensors), adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}" in k]
        if missing or result.unexpected_keys:
            raise AdapterLoadError(f"{where}: weights do not match the adapter config (missing {missing[:3]}, "
                                   f"unexpected {list(result.unexpected_keys)[:3]}); re-export the version")
    except (RuntimeError, ValueError) as e:  # shape mismatches
        _drop(peft, name)
        if isinstance(e, AdapterLoadError):
            raise
        raise AdapterLoadError(f"{where}: weights do not fit the base model ({e}); was it trained on this "
                               "base model (model.path)?") from None
    peft.eval()
    return peft


def _drop(peft: PeftModel, name: str) -> None:
    if name in peft.peft_config and len(peft.peft_config) > 1:
        peft.delete_adapter(name)


def read_peft_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and ``adapter_config.json`` of a PEFT adapter directory (``save_pretrained``'s layout:
    ``adapter_model.safetensors``, or the older ``adapter_model.bin``), on the server's file system."""
    d = Path(path)
    if not d.is_dir():
        raise AdapterLoadError(f"lora_path {str(path)!r} is not a directory on the server; give the directory "
                               "peft's save_pretrained wrote (adapter_config.json + adapter_model.safetensors)")
    cfg_file = d / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterLoadError(f"lora_path {str(path)!r} has no adapter_config.json; is it a PEFT adapter "
                               "directory (peft_model.save_pretrained(dir))?")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise AdapterLoadError(f"{cfg_file}: not readable JSON ({e}); re-export the adapter") from None
    if (d / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(d / "adapter_model.safetensors"))
    elif (d / "adapter_model.bin").is_file():
        tensors = torch.load(d / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise AdapterLoadError(f"lora_path {str(path)!r} has neither adapter_model.safetensors nor "
                               "adapter_model.bin; save the adapter with peft's save_pretrained")
    return tensors, config
