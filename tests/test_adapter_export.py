"""`compass adapters export`: a plain-LoRA version exported in peft's layout passes vLLM's adapter rules and loads
back in peft with the registry's logits; a DoRA version is refused with the fix; --merge writes a full model that
from_pretrained loads with the merged logits. Also the per-language `adapters.kind` setting that picks LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tinylm import make_tiny_lm
from typer.testing import CliRunner

from compass.adapt import TrainConfig, add_language_adapter, load_base
from compass.languages import load_languages
from compass.registry import AdapterManifest, AdapterRegistry, new_version
from compass.registry.export import ExportError, export_peft
from daemon.cli import app
from daemon.worker.model import adapter_state, train_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "birds sing in the morning light"]
IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 3]])
TARGETS = ("q_proj", "v_proj")
runner = CliRunner()


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("lm"), TEXTS * 3, seed=0, hidden=16)


def _adapter(lm: Path, use_dora: bool, seed: int = 1):
    """A language adapter whose factors (and DoRA magnitude) are seeded noise: a fresh one is the identity."""
    cfg = TrainConfig(rank=4, alpha=8, dropout=0.0, target_modules=TARGETS, use_dora=use_dora)
    model = add_language_adapter(load_base(lm), "sw", cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _store(reg: AdapterRegistry, model, promote: bool = True) -> str:
    tensors, config = adapter_state(model, "sw")
    v = new_version()
    reg.write_version("sw", tensors, config, AdapterManifest(
        language="sw", version=v, base_model_id="tiny", codebook_version="cb1", p_ref=[1.0], anchor_ids=[],
        data_hashes={}, metrics={}))
    if promote:
        reg.promote("sw", v, {"outcome": "pass"})
    return v


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _export(tmp_path: Path, *args: str):
    return runner.invoke(app, ["adapters", "export", "sw", "-r", str(tmp_path / "reg"), *args])


def vllm_accepts(adapter_dir: Path, max_lora_rank: int = 16) -> list[str]:
    """The checks vLLM runs when it loads a LoRA directory, re-stated (vllm does not install here; see the report).

    Source: vllm-project/vllm, vLLM 0.34.0 wheel, ``vllm/lora/peft_helper.py`` (PEFTHelper: required fields r,
    lora_alpha, target_modules in ``from_dict``; ``__post_init__`` r > 0 and integer rank_pattern values;
    ``_validate_features`` rejects modules_to_save other than classifier/score, use_dora ("vLLM does not yet
    support DoRA"), lora_bias, string init_lora_weights other than gaussian/eva/orthogonal/mica/lora_ga,
    alora_invocation_tokens, layer_replication, use_bdlora, use_qalora; ``validate_legal`` rejects r above
    max_lora_rank (default 16) and bias != "none"), the same rules as at commit
    e745bafffc44744aa601169f8c6f325e47ca7cd5 of that file; and ``vllm/lora/utils.py`` ``parse_fine_tuned_lora_name``
    (a weight is ``base_model.model.<module>.lora_A.weight`` or ``.lora_B.weight``). Files: adapter_config.json and
    adapter_model.safetensors (``vllm/lora/lora_model.py``, ``from_local_checkpoint``)."""
    errors = []
    c = json.loads((adapter_dir / "adapter_config.json").read_text())
    missing = {"r", "lora_alpha", "target_modules"} - set(c)
    if missing:
        return [f"Missing required configuration fields: {missing}"]
    if not isinstance(c["r"], int) or c["r"] <= 0:
        errors.append(f"LoRA rank `r` must be a positive integer, got {c['r']}.")
    if any(not isinstance(v, int) or v <= 0 for v in (c.get("rank_pattern") or {}).values()):
        errors.append("rank_pattern values must be positive integers")
    if not isinstance(c["lora_alpha"], int | float):
        errors.append(f"lora_alpha {c['lora_alpha']!r} is not a number")
    if [m for m in c.get("modules_to_save") or [] if m not in ("classifier", "score")]:
        errors.append("vLLM only supports modules_to_save being either None or ['classifier', 'score']")
    if c.get("use_dora"):
        errors.append("vLLM does not yet support DoRA.")
    if c.get("lora_bias"):
        errors.append("vLLM does not support LoRA bias (lora_bias).")
    init = c.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in ("gaussian", "eva", "orthogonal", "mica", "lora_ga"):
        errors.append(f"vLLM does not support init_lora_weights={init!r}.")
    for key in ("alora_invocation_tokens", "layer_replication", "use_bdlora", "use_qalora"):
        if c.get(key):
            errors.append(f"vLLM does not support {key}.")
    if max([c["r"], *(c.get("rank_pattern") or {}).values()]) > max_lora_rank:
        errors.append(f"LoRA rank {c['r']} is greater than max_lora_rank {max_lora_rank}.")
    if c.get("bias", "none") != "none":
        errors.append("Adapter bias is not supported.")
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            parts = name.split(".")
            if parts[:2] != ["base_model", "model"] or parts[-1] != "weight" or parts[-2] not in ("lora_A", "lora_B"):
                errors.append(f"{name} is unsupported LoRA weight")
    return errors


def test_lora_export_has_peft_layout_and_passes_vllm_rules(tmp_path, lm):
    reg = AdapterRegistry(tmp_path / "reg")
    _store(reg, _adapter(lm, use_dora=False))
    r = _export(tmp_path, "--format", "peft", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    c = json.loads((out / "adapter_config.json").read_text())
    assert (c["r"], c["lora_alpha"], sorted(c["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    assert (c["use_dora"], c["modules_to_save"], c["bias"], c["peft_type"]) == (False, None, "none", "LORA")
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        names = sorted(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert names == [f"base_model.model.model.layers.0.self_attn.{m}.lora_{ab}.weight"
                     for m in ("q_proj", "v_proj") for ab in ("A", "B")]
    assert not (out / "adapter_model.bin").exists()  # no pickle
    assert vllm_accepts(out) == []
    # the rule checker itself refuses what vLLM refuses
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes((out / "adapter_model.safetensors").read_bytes())
    (bad / "adapter_config.json").write_text(json.dumps({**c, "use_dora": True, "modules_to_save": ["lm_head"],
                                                         "bias": "all", "r": 32}))
    assert vllm_accepts(bad) == [
        "vLLM only supports modules_to_save being either None or ['classifier', 'score']",
        "vLLM does not yet support DoRA.", "LoRA rank 32 is greater than max_lora_rank 16.",
        "Adapter bias is not supported."]


def test_export_loads_back_in_peft_with_the_registry_logits(tmp_path, lm):
    from peft import PeftModel

    reg = AdapterRegistry(tmp_path / "reg")
    trained = _adapter(lm, use_dora=False)
    _store(reg, trained)
    out = export_peft(reg, "sw", tmp_path / "out")
    loaded = PeftModel.from_pretrained(load_base(lm), out).eval()
    expected = _logits(trained)
    assert not torch.equal(expected, _logits(load_base(lm)))  # the adapter changes the output
    assert torch.equal(_logits(loaded), expected)


def test_default_version_is_the_promoted_one_and_unknowns_name_the_choices(tmp_path, lm):
    reg = AdapterRegistry(tmp_path / "reg")
    v1 = _store(reg, _adapter(lm, use_dora=False, seed=1))
    v2 = _store(reg, _adapter(lm, use_dora=False, seed=2), promote=False)
    export_peft(reg, "sw", tmp_path / "cur")
    export_peft(reg, "sw", tmp_path / "v2", version=v2)
    for d, v in ((tmp_path / "cur", v1), (tmp_path / "v2", v2)):
        tensors = reg.read_version("sw", v)[0]
        with safe_open(str(d / "adapter_model.safetensors"), framework="pt") as f:
            assert all(torch.equal(f.get_tensor(k), t) for k, t in tensors.items())
    r = _export(tmp_path, "--version", "nope", "--out", str(tmp_path / "x"))
    assert r.exit_code == 1
    assert f"--version 'nope' is not a version of 'sw'; use one of {sorted([v1, v2])}" in r.output
    with pytest.raises(ExportError, match=r"language 'fr' has no adapter versions .*languages with adapters: \['sw'\]"):
        export_peft(reg, "fr", tmp_path / "y")
    with pytest.raises(ExportError, match="exists and is not an empty directory"):
        export_peft(reg, "sw", tmp_path / "cur")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_dora_export_is_refused_before_writing_with_the_fix(tmp_path, lm):
    reg = AdapterRegistry(tmp_path / "reg")
    v = _store(reg, _adapter(lm, use_dora=True))
    r = _export(tmp_path, "--format", "peft", "--out", str(tmp_path / "out"))
    assert r.exit_code == 1
    msg = " ".join(r.output.split())
    assert f"sw/{v} cannot be exported with --format peft: use_dora is true" in msg
    assert "Fix: train sw with `adapters.kind: lora` (configs/languages.yaml, languages.sw)" in msg
    assert "or pass --merge to write the merged full weights" in msg
    assert not (tmp_path / "out").exists()
    r = _export(tmp_path, "--format", "onnx", "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and "supported: peft" in " ".join(r.output.split())


def test_merge_writes_a_model_from_pretrained_loads_with_the_merged_logits(tmp_path, lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reg = AdapterRegistry(tmp_path / "reg")
    dora = _adapter(lm, use_dora=True)
    _store(reg, dora)
    r = _export(tmp_path, "--merge", "--model", str(lm), "--out", str(tmp_path / "merged"))
    assert r.exit_code == 0, r.output
    out = tmp_path / "merged"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    merged = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged), _logits(dora), atol=1e-5, rtol=1e-5)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok("the cat")["input_ids"] == AutoTokenizer.from_pretrained(lm)("the cat")["input_ids"]


def test_adapters_kind_per_language_trains_plain_lora(tmp_path, lm):
    from compass.adapt_settings import TrainSettings

    (tmp_path / "langs.yaml").write_text("defaults: {}\nlanguages:\n  sw: {adapters: {kind: lora}}\n  en: {}\n")
    langs = load_languages(tmp_path / "langs.yaml")
    assert (langs.get("sw").adapters.kind, langs.get("en").adapters.kind) == ("lora", "dora")
    (tmp_path / "bad.yaml").write_text("languages:\n  sw: {adapters: {kind: qlora}}\n")
    with pytest.raises(ValueError, match=r"languages\.sw\.adapters\.kind: got 'qlora'; Input should be 'dora' or "
                                         r"'lora'"):
        load_languages(tmp_path / "bad.yaml")
    s = TrainSettings(rank=4, alpha=8, target_modules=list(TARGETS))
    assert (train_config(s, "lora").use_dora, train_config(s).use_dora) == (False, True)
    model = add_language_adapter(load_base(lm), "sw", train_config(s, "lora"))
    tensors, config = adapter_state(model, "sw")
    assert config["use_dora"] is False
    assert sorted(k.rsplit(".", 2)[-2] for k in tensors) == ["lora_A", "lora_A", "lora_B", "lora_B"]
