"""The base model of a worker process: loaded once, one adapter (DoRA or LoRA) per language swapped in per job.

The base weights are frozen at load and never written: a job only replaces the adapter named after its language
(fresh for a first version, else theta_prev from the registry).
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from compass.adapt import TrainConfig, add_language_adapter, load_base, load_tokenizer, resolve_device
from compass.adapt_settings import TrainSettings
from compass.errors import CompassError
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)
# peft injects adapter layers into the base model in place: a base model handed to a second host (the demo runs
# `adapt_language` then a Worker on one model) must reuse the PeftModel that already wraps it.
_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class WorkerError(CompassError, RuntimeError):
    """A job cannot run; the message names what is missing and the fix."""


def train_config(s: TrainSettings, kind: str = "dora") -> TrainConfig:
    """The update's TrainConfig: ``worker.train`` plus the language's ``adapters.kind`` (dora or lora)."""
    if kind not in ("dora", "lora"):
        raise WorkerError(f"The 'adapters.kind' setting of a language must be 'dora' or 'lora'. Got {kind!r} instead.")
    tm = s.target_modules if isinstance(s.target_modules, str) else tuple(s.target_modules)
    return TrainConfig(rank=s.rank, alpha=s.alpha, target_modules=tm, lr=s.lr, weight_decay=s.weight_decay,
                       max_epochs=s.max_epochs, batch_size=s.batch_size, max_length=s.max_length, seed=s.seed,
                       use_dora=kind == "dora")


class ModelHost:
    """The process's base model (+ adapters) and tokenizer. ``model``/``tokenizer`` may be given (tests, demo)."""

    def __init__(self, config: ServiceConfig, model: Any = None, tokenizer: Any = None):
        mcfg = config.model
        self.device = resolve_device(mcfg.device)
        if model is None:
            if mcfg.path is None:
                raise WorkerError("The 'model.path' setting of the service config must name the base model "
                                  "directory. Got None. Fix: set model.path (compass.adapt.packaged_model('smollm2') "
                                  "gives the packaged SmolLM2's directory and GGUF file).")
            model = load_base(mcfg.path, dtype=getattr(torch, mcfg.dtype), gguf_file=mcfg.gguf_file)
            self.base_model_id = f"{mcfg.path.name}/{mcfg.gguf_file}" if mcfg.gguf_file else mcfg.path.name
        else:
            self.base_model_id = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "in-memory")
        if tokenizer is None:
            if mcfg.path is None:
                raise WorkerError("a tokenizer is needed: set model.path or pass tokenizer=")
            tokenizer = load_tokenizer(mcfg.path, mcfg.gguf_file)
        model = _WRAPPED.get(model, model)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer

    def install(self, lang: str, cfg: TrainConfig, tensors: dict[str, torch.Tensor] | None) -> PeftModel:
        """Replace the adapter ``lang`` by a fresh one (seeded init), loaded with ``tensors`` when given."""
        if isinstance(self.model, PeftModel) and lang in self.model.peft_config:
            self.model.delete_adapter(lang)
        torch.manual_seed(cfg.seed)
        base = self.model
        self.model = add_language_adapter(self.model, lang, cfg).to(self.device)
        if base is not self.model:
            _WRAPPED[base] = self.model
        if tensors is not None:
            result = set_peft_model_state_dict(self.model, {k: v.to(self.device) for k, v in tensors.items()},
                                               adapter_name=lang)
            missing = [k for k in getattr(result, "unexpected_keys", []) if lang in k]
            if missing:
                raise WorkerError(f"adapter {lang!r}: stored tensors do not fit the model ({missing[:2]}); the "
                                  "worker.train settings (rank, target_modules) must match the stored version")
        self.model.set_adapter(lang)
        self.model.eval()  # scoring and serving run without dropout; train_adapter switches to train mode itself
        return self.model


def adapter_state(model: PeftModel, lang: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The adapter's tensors (PEFT's file layout) and its config as PEFT saves it."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=lang).items()}
    config = json.loads(json.dumps(model.peft_config[lang].to_dict(), default=sorted))
    return tensors, config
