"""The adapter registry: bit-exact round trip, pointer only on promote, rollback, crash leftovers, bad names,
an fsspec root, and the `compass adapters` commands."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compass.registry import AdapterManifest, AdapterRegistry, RegistryError, new_version
from daemon.cli import app


def _manifest(version: str, lang: str = "sw", **kw) -> AdapterManifest:
    base = dict(language=lang, version=version, base_model_id="tiny-llama", codebook_version="cb1",
                p_ref=[0.25, 0.75], anchor_ids=["a1", "a2"], data_hashes={"train": "ab12"}, metrics={"ppl": 3.5})
    return AdapterManifest(**{**base, **kw})


def _write(reg: AdapterRegistry, version: str, lang: str = "sw", **kw) -> str:
    return reg.write_version(lang, {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, {"r": 4},
                             _manifest(version, lang, **kw))


@pytest.fixture
def reg(tmp_path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


def test_peft_dora_adapter_round_trips_bit_exactly(reg):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True))
    with torch.no_grad():  # lora_B starts at zero; make every tensor carry real bits
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    state = get_peft_model_state_dict(model)
    state["extra_bf16"] = torch.randn(3, 5).to(torch.bfloat16)
    adapter_config = model.peft_config["default"].to_dict()
    adapter_config = json.loads(json.dumps(adapter_config, default=sorted))  # sets -> lists, as PEFT saves it
    fisher = b"not-really-safetensors"
    v = new_version()
    m = _manifest(v, fisher_file="fisher.safetensors")
    assert reg.write_version("sw", state, adapter_config, m, extra_files={"fisher.safetensors": fisher}) == v

    tensors, config, manifest = reg.read_version("sw", v)
    assert any("lora_magnitude_vector" in k for k in tensors)  # DoRA's extra parameter made it through
    assert set(tensors) == set(state)
    for k, t in state.items():
        assert tensors[k].dtype == t.dtype and tensors[k].shape == t.shape
        assert torch.equal(tensors[k], t), k
    assert config == adapter_config
    assert manifest == m
    assert reg.read_file("sw", v, "fisher.safetensors") == fisher


def test_manifest_json_round_trip_and_validation():
    m = _manifest("v1", parent="v0", gate={"outcome": "pass", "reasons": []})
    assert AdapterManifest.from_json(m.to_json()) == m
    with pytest.raises(RegistryError, match="p_ref.*sums to"):
        _manifest("v1", p_ref=[0.5, 0.1])
    with pytest.raises(RegistryError, match="unknown field 'pickle'"):
        AdapterManifest.from_dict({**m.to_dict(), "pickle": 1})
    with pytest.raises(RegistryError, match="'metrics'"):
        _manifest("v1", metrics={"ppl": float("nan")})


def test_pointer_moves_only_on_promote_and_rolls_back(reg):
    assert reg.current("sw") is None
    v1 = _write(reg, "v1")
    v2 = _write(reg, "v2", parent="v1")
    v3 = _write(reg, "v3", parent="v2")
    assert reg.versions("sw") == [v1, v2, v3]
    assert reg.current("sw") is None  # writing never moves the pointer
    with pytest.raises(RegistryError, match="gate outcome is 'fail'"):
        reg.promote("sw", v1, {"outcome": "fail", "reasons": ["ppl up"]})
    assert reg.current("sw") is None
    for v in (v1, v2, v3):
        reg.promote("sw", v, {"outcome": "pass", "reasons": []})
    assert reg.current("sw") == v3
    assert reg.rollback("sw") == v2  # undo, repeatable
    assert reg.rollback("sw") == v1
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        reg.rollback("sw")
    assert reg.rollback("sw", to=v3) == v3
    assert reg.current("sw") == v3
    assert reg.rollback("sw") == v1  # undo of the explicit rollback
    assert [r["version"] for r in reg.history("sw")] == [v1, v2, v3, v2, v1, v3, v1]
    with pytest.raises(RegistryError, match="no complete version 'v9'"):
        reg.promote("sw", "v9", {"outcome": "pass"})
    assert reg.languages() == ["sw"]


def test_history_heals_when_killed_after_pointer_write(reg):
    v1, v2 = _write(reg, "v1"), _write(reg, "v2")
    reg.promote("sw", v1, {"outcome": "pass"})
    log_path = os.path.join(reg.root, "sw", "promotions.jsonl")
    before = Path(log_path).read_text()
    reg.promote("sw", v2, {"outcome": "pass"})
    Path(log_path).write_text(before)  # as if killed between the pointer write and the history write
    assert reg.current("sw") == v2
    assert [r["version"] for r in reg.history("sw")] == [v1, v2]
    assert reg.rollback("sw") == v1


def test_killed_writer_leaves_registry_consistent(reg):
    v1 = _write(reg, "v1")
    reg.promote("sw", v1, {"outcome": "pass"})
    # A writer killed before its rename: a temp dir with partial files, even a manifest.
    tmp = os.path.join(reg.root, "sw", ".tmp-v2-dead")
    os.makedirs(tmp)
    Path(tmp, "adapter_model.safetensors").write_bytes(b"\x00" * 7)
    Path(tmp, "manifest.json").write_text(_manifest("v2").to_json())
    # and a leftover pointer temp file
    Path(reg.root, "sw", "current.tmp-dead").write_text("{")
    assert reg.versions("sw") == [v1]
    assert reg.current("sw") == v1
    with pytest.raises(RegistryError):
        reg.promote("sw", "v2", {"outcome": "pass"})
    with pytest.raises(RegistryError):
        reg.promote("sw", ".tmp-v2-dead", {"outcome": "pass"})

    young = _write(reg, "v2")  # a later write succeeds; the leftover is young, so possibly live: kept
    assert os.path.isdir(tmp)
    old = time.time() - 2 * reg.stale_tmp_s
    os.utime(tmp, (old, old))
    _write(reg, "v3")
    assert not os.path.exists(tmp)  # a dead writer's leftover is swept by the next write
    assert reg.versions("sw") == [v1, young, "v3"]
    assert reg.current("sw") == v1


def test_versions_are_immutable(reg):
    _write(reg, "v1")
    with pytest.raises(RegistryError, match="already exists"):
        _write(reg, "v1")
    with pytest.raises(RegistryError, match="written under 'sw'"):
        reg.write_version("sw", {"w": torch.zeros(1)}, {}, _manifest("v2", lang="yo"))
    with pytest.raises(RegistryError, match="fisher_file"):
        _write(reg, "v2", fisher_file="fisher.safetensors")
    with pytest.raises(RegistryError, match="parent 'nope'"):
        _write(reg, "v2", parent="nope")


BAD_LANGS = ["../sw", "sw/..", "..", ".", "", "/etc", "sw/x", "swa", "SW", "pt-BR", "sw\x00", " sw"]
BAD_VERSIONS = ["..", ".", "../v1", "v1/..", "a/b", "/abs", "", ".tmp-v1", ".hidden", "v..1", "v 1", "v1\n",
                "x" * 129, "v1\\..\\x", None, 3]


@pytest.mark.parametrize("lang", BAD_LANGS)
def test_bad_language_rejected(reg, lang):
    with pytest.raises(RegistryError, match="language") as e:
        reg.versions(lang)
    assert isinstance(e.value, ValueError)
    with pytest.raises(RegistryError):
        reg.current(lang)


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_version_rejected(reg, version):
    with pytest.raises(RegistryError, match="version"):
        reg.read_version("sw", version)
    with pytest.raises(RegistryError, match="version"):
        _manifest(version)


def test_fsspec_memory_root():
    url = f"memory://compass-test-{uuid.uuid4().hex}/adapters"
    reg = AdapterRegistry(url)
    assert reg.languages() == [] and reg.versions("sw") == []
    t = {"w": torch.randn(4, 4, dtype=torch.float16)}
    v = reg.write_version("sw", t, {"r": 2}, _manifest("v1"))
    _write(reg, "v2")
    # No atomic directory rename on object stores: a directory without manifest.json is incomplete.
    reg.fs.pipe_file(f"{reg.root}/sw/versions/v3/adapter_model.safetensors", b"partial")
    assert reg.versions("sw") == [v, "v2"]
    tensors, config, _ = reg.read_version("sw", v)
    assert torch.equal(tensors["w"], t["w"]) and config == {"r": 2}
    _write(reg, "v3")  # a retry overwrites the incomplete one
    assert reg.versions("sw") == [v, "v2", "v3"]
    reg.promote("sw", "v2", {"outcome": "pass"})
    reg.promote("sw", "v3", {"outcome": "pass"})
    assert AdapterRegistry(url).current("sw") == "v3"  # single-object PUT: another reader sees the new pointer
    assert reg.rollback("sw") == "v2"
    assert reg.languages() == ["sw"]


def test_cli_list_show_promote_rollback(reg):
    runner = CliRunner()
    root = ["--registry", reg.url]
    _write(reg, "v1")
    _write(reg, "v2", parent="v1")
    reg.promote("sw", "v1", {"outcome": "pass"})

    r = runner.invoke(app, ["adapters", "list", *root])
    assert r.exit_code == 0, r.output
    assert "sw\tcurrent=v1\tversions=2" in r.output
    r = runner.invoke(app, ["adapters", "list", "sw", *root])
    assert r.exit_code == 0, r.output
    assert "* v1" in r.output and "  v2\tparent=v1" in r.output

    r = runner.invoke(app, ["adapters", "promote", "sw", "v2", "--reason", "hotfix", *root])
    assert r.exit_code == 0, r.output
    assert "v1 -> v2 (manual)" in r.output
    shown = json.loads(runner.invoke(app, ["adapters", "show", "sw", *root]).output)
    assert shown["version"] == "v2" and shown["current"] is True and shown["parent"] == "v1"
    assert shown["promotions"][0]["gate"]["outcome"] == "manual"
    assert shown["promotions"][0]["gate"]["reasons"] == ["hotfix"]
    assert "adapter_model.safetensors" in shown["files"] and shown["tensors"] == 1

    r = runner.invoke(app, ["adapters", "rollback", "sw", *root])
    assert r.exit_code == 0, r.output
    assert reg.current("sw") == "v1"
    r = runner.invoke(app, ["adapters", "rollback", "sw", "--to", "v2", *root])
    assert r.exit_code == 0, r.output
    assert reg.current("sw") == "v2"

    r = runner.invoke(app, ["adapters", "promote", "sw", "../v1", "--reason", "x", *root])
    assert isinstance(r.exception, RegistryError)
    r = runner.invoke(app, ["adapters", "show", "yo", *root])
    assert r.exit_code == 1 and "nothing promoted yet" in r.output
