"""Export a registry version for servers outside compass (vLLM, SGLang, TGI, plain transformers).

Two outputs:

* ``export_peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` exactly as ``peft`` saves a LoRA
  (``PeftModel.save_pretrained``), which is the layout vLLM's ``--lora-modules`` and SGLang's ``--lora-paths`` load.
  Those servers refuse DoRA (vLLM's PEFTHelper: "vLLM does not yet support DoRA"), ``modules_to_save`` and adapter
  biases, so such a version is refused here, before anything is written, with the fix.
* ``export_merged``: the adapter merged into the base weights (``merge_and_unload``) and saved as a full model
  directory (safetensors) with the tokenizer: any server loads it, DoRA included, at one model per language.

Pure: no Kafka, no Redis; torch/peft/transformers are imported by the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from compass.registry.manifest import RegistryError
from compass.registry.store import CONFIG, WEIGHTS, AdapterRegistry

FORMATS = ("peft",)
# peft's names of the two low-rank factors; vLLM's parse_fine_tuned_lora_name accepts "<module>.lora_A.weight".
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


class ExportError(RegistryError):
    """A version cannot be exported as asked; the message names what and the fix."""


def resolve_version(registry: AdapterRegistry, lang: str, version: str | None) -> str:
    """``version`` checked against the language's versions, or the language's current (promoted) one."""
    versions = registry.versions(lang)
    if not versions:
        raise ExportError(f"language {lang!r} has no adapter versions in {registry.url}; languages with adapters: "
                          f"{registry.languages()}")
    if version is None:
        current = registry.current(lang)
        if current is None:
            raise ExportError(f"language {lang!r} has no promoted version yet; name one with --version, one of "
                              f"{versions}")
        return current
    if version not in versions:
        raise ExportError(f"--version {version!r} is not a version of {lang!r}; use one of {versions}")
    return version


def peft_problems(adapter_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Why a LoRA server would refuse this adapter (empty when it loads): the features vLLM's PEFTHelper rejects
    (vllm/lora/peft_helper.py ``_validate_features`` and ``validate_legal``) and tensor names its
    ``parse_fine_tuned_lora_name`` cannot map."""
    c = adapter_config
    out = []
    if c.get("peft_type", "LORA") != "LORA":
        out.append(f"peft_type is {c.get('peft_type')!r}, not 'LORA'")
    if c.get("use_dora") or any("lora_magnitude_vector" in k for k in tensors):
        out.append("use_dora is true (a DoRA adapter; vLLM: 'does not yet support DoRA')")
    if c.get("modules_to_save"):
        out.append(f"modules_to_save is {c['modules_to_save']!r} (vLLM only supports None)")
    if c.get("bias", "none") != "none" or c.get("lora_bias"):
        out.append(f"bias is {c.get('bias')!r} / lora_bias {c.get('lora_bias')!r} (vLLM: adapter bias unsupported)")
    if c.get("layer_replication"):
        out.append("layer_replication is set (vLLM does not support it)")
    r, alpha = c.get("r"), c.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        out.append(f"r is {r!r}, not a positive integer")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        out.append(f"lora_alpha is {alpha!r}, not a positive number")
    tm = c.get("target_modules")
    if not tm or not (isinstance(tm, str) or (isinstance(tm, list) and all(isinstance(m, str) for m in tm))):
        out.append(f"target_modules is {tm!r}, not a module name list or pattern")
    bad = [k for k in tensors if not (k.startswith("base_model.model.") and k.endswith(_LORA_SUFFIXES))]
    if bad and not any("lora_magnitude_vector" in k for k in bad):  # DoRA is reported above
        out.append(f"tensors {bad[:3]} are not named base_model.model.<module>.lora_A|lora_B.weight")
    return out


def export_peft(registry: AdapterRegistry, lang: str, out: str | Path, version: str | None = None) -> Path:
    """Write ``lang``'s adapter (``version``, default the current one) as a peft LoRA directory ``out``; returns it.

    Refused, with nothing written, when a LoRA server would refuse the adapter (DoRA above all)."""
    version = resolve_version(registry, lang, version)
    tensors, config, _ = registry.read_version(lang, version)
    problems = peft_problems(config, tensors)
    if problems:
        dora = config.get("use_dora") or any("lora_magnitude_vector" in k for k in tensors)
        fix = (f"train {lang} with `adapters.kind: lora` (configs/languages.yaml, languages.{lang}) so its next "
               "version is a plain LoRA" if dora else "retrain it as a plain LoRA")
        raise ExportError(f"{lang}/{version} cannot be exported with --format peft: {'; '.join(problems)}. Fix: "
                          f"{fix}, or pass --merge to write the merged full weights (a model directory any server "
                          "loads)")
    out = _fresh_dir(out)
    # inference_mode: how peft saves a trained adapter; the rest is what LoRA servers read (PEFTHelper fields)
    cfg = {**config, "inference_mode": True, "use_dora": False, "modules_to_save": None, "bias": "none"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def export_merged(registry: AdapterRegistry, lang: str, out: str | Path, base: Any, tokenizer: Any = None,
                  version: str | None = None, gguf_file: str | None = None) -> Path:
    """Merge ``lang``'s adapter (DoRA or LoRA) into ``base`` and save the full model (safetensors) plus the
    tokenizer into ``out``: a model directory ``AutoModelForCausalLM.from_pretrained`` (or any server) loads.

    ``base`` is the base model directory (``gguf_file`` inside it, as in the service config) or a model object;
    ``tokenizer`` defaults to the directory's. The base object, when given, is left unchanged (a copy is merged)."""
    import copy

    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

    from compass.adapt import load_base, load_tokenizer

    version = resolve_version(registry, lang, version)
    tensors, config, _ = registry.read_version(lang, version)
    if isinstance(base, torch.nn.Module):
        model = copy.deepcopy(base)
    else:
        model = load_base(base, gguf_file=gguf_file)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(base, gguf_file)
    if tokenizer is None:
        raise ExportError("export_merged needs the tokenizer when base is a model object; pass tokenizer=")
    out = _fresh_dir(out)  # checked before the (slow) merge; removed again if the merge fails
    try:
        pcfg = PeftConfig.from_peft_type(**{**config, "inference_mode": True})
        peft_model = get_peft_model(model, pcfg)
        result = set_peft_model_state_dict(peft_model, tensors)
        unexpected = list(getattr(result, "unexpected_keys", []))
        if unexpected:
            raise ExportError(f"{lang}/{version} does not fit this base model (tensors {unexpected[:3]} have no "
                              f"module); pass the base model it was trained on (manifest base_model_id)")
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    except BaseException:
        for p in sorted(out.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        out.rmdir()
        raise
    return out


def _fresh_dir(out: str | Path) -> Path:
    """``out`` created (parents too); an existing non-empty directory is refused rather than mixed into."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {str(out)!r} exists and is not an empty directory; name a new directory or "
                          "remove it first")
    out.mkdir(parents=True, exist_ok=True)
    return out

