"""compass.expand: upcycling to per-language experts, Δ_post grafting, merging baselines, save/load.

Tiny random Llama and Gemma-3 decoders built from configs (no download), float32, eval mode, seeded.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from compass.errors import CompassError
from compass.expand import (
    ExpandError,
    LanguageExperts,
    UpcycleSpec,
    active_parameters,
    check_compatible,
    expand_delta,
    expert_parameters,
    freeze_all_but,
    get_spec,
    graft,
    language,
    load_expanded,
    param_delta,
    post_state_from_peft,
    save_expanded,
    set_language,
    task_arithmetic,
    ties_merge,
    total_parameters,
    upcycle,
)

VOCAB = 64
LANGS = ["sw", "yo"]


def tiny_llama(seed: int = 0, hidden: int = 16, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def tiny_gemma3(seed: int = 0, hidden: int = 16, layers: int = 2) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                           sliding_window=4, max_position_embeddings=64, attn_implementation="eager")
    return Gemma3ForCausalLM(cfg).eval()  # ties embeddings by default: exercises the tied paths


BUILDERS = {"llama": tiny_llama, "gemma3": tiny_gemma3}


def ids(batch: int = 3, length: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, lang=None) -> torch.Tensor:
    if get_spec(model) is None:
        return model(input_ids=x).logits
    with language(model, lang):
        return model(input_ids=x).logits


@torch.no_grad()
def perturb(model: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """A stand-in for post-training: seeded noise on every parameter (tied ones once)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


# --- upcycling keeps the dense function -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_upcycle_reproduces_dense_logits_for_every_language(arch):
    dense = BUILDERS[arch]()
    x = ids()
    want = logits(dense, x)
    moe = copy.deepcopy(dense)
    spec = upcycle(moe, LANGS)
    assert spec.arch == type(dense).__name__ and spec.layers == (0, 1) and spec.expert_names == ("base", *LANGS)
    assert all(isinstance(layer.mlp, LanguageExperts) for layer in moe.model.layers)
    for lang in (None, "base", "en", "sw", "yo", "Swahili", "??"):
        assert torch.equal(logits(moe, x, lang), want), lang
    close(logits(moe, x, ["sw", "en", "yo"]), want)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_hard_routing_sends_each_row_through_its_language_expert(arch):
    dense = BUILDERS[arch]()
    moe = copy.deepcopy(dense)
    upcycle(moe, LANGS)
    with torch.no_grad():
        for p in expert_parameters(moe, "sw").values():
            p.add_(0.5)
    x = ids()
    base, sw = logits(dense, x), logits(moe, x, "sw")
    assert not torch.allclose(sw, base, atol=1e-3)
    assert torch.equal(logits(moe, x, "en"), base) and torch.equal(logits(moe, x, "yo"), base)
    mixed = logits(moe, x, ["sw", "en", "yo"])
    close(mixed[0], sw[0])
    close(mixed[1:], base[1:])


def test_generate_routes_a_mixed_batch_row_by_row_through_the_kv_cache():
    moe = tiny_gemma3()
    upcycle(moe, LANGS)
    with torch.no_grad():
        for p in expert_parameters(moe, "sw").values():
            p.add_(0.5)
    x = ids(batch=2, length=5)

    def gen(rows: torch.Tensor, lang) -> torch.Tensor:
        with language(moe, lang):
            return moe.generate(rows, attention_mask=torch.ones_like(rows), max_new_tokens=4, do_sample=False,
                                pad_token_id=0)

    both = gen(x, ["sw", "en"])
    assert torch.equal(both, torch.cat([gen(x[:1], "sw"), gen(x[1:], "en")]))
    assert not torch.equal(both[:1], gen(x[:1], "en"))  # the sw expert really changes the continuation


def test_topk_router_starts_as_the_dense_model_and_has_a_router():
    dense = tiny_llama()
    moe = copy.deepcopy(dense)
    spec = upcycle(moe, LANGS, mode="topk", top_k=2)
    assert spec.mode == "topk" and spec.top_k == 2
    assert moe.model.layers[0].mlp.router.weight.shape == (3, 16)
    x = ids()
    close(logits(moe, x), logits(dense, x), atol=1e-5)


def test_upcycle_subset_of_layers_and_parameter_counts():
    dense = tiny_llama()
    moe = copy.deepcopy(dense)
    spec = upcycle(moe, LANGS, layers=[1])
    assert spec.layers == (1,)
    assert not isinstance(moe.model.layers[0].mlp, LanguageExperts)
    mlp = sum(p.numel() for p in dense.model.layers[1].mlp.parameters())
    assert total_parameters(moe) == total_parameters(dense) + len(LANGS) * mlp
    assert active_parameters(moe, spec) == total_parameters(dense)  # hard routing: dense FLOPs
    assert set(expert_parameters(moe, "sw")) == {f"model.layers.1.mlp.experts.1.{p}_proj.weight"
                                                 for p in ("gate", "up", "down")}


# --- grafting Δ_post ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_graft_on_unchanged_upcycle_equals_dense_base_plus_delta(arch):
    base = BUILDERS[arch]()
    post = perturb(copy.deepcopy(base), seed=7)
    check_compatible(base, post)
    delta = param_delta(base.state_dict(), post.state_dict())
    dense = copy.deepcopy(base)
    graft(dense, delta)
    x = ids()
    want = logits(dense, x)
    close(want, logits(post, x), atol=1e-5)  # θ_base + (θ_post − θ_base) is θ_post up to rounding
    moe = copy.deepcopy(base)
    spec = upcycle(moe, LANGS)
    expanded = expand_delta(delta, spec)
    assert graft(moe, expanded) > 0
    for lang in (None, "en", "sw", "yo"):
        close(logits(moe, x, lang), want)
    close(logits(moe, x, ["yo", "sw", "en"]), want)


def test_expand_delta_maps_mlp_keys_to_every_expert_and_keeps_shared_keys():
    base = tiny_llama()
    delta = param_delta(base.state_dict(), perturb(copy.deepcopy(base), seed=3).state_dict())
    spec = upcycle(copy.deepcopy(base), LANGS, layers=[1])
    out = expand_delta(delta, spec)
    assert "model.layers.0.mlp.gate_proj.weight" in out  # layer 0 not upcycled: stays dense
    assert "model.layers.1.mlp.gate_proj.weight" not in out
    for j in range(3):
        assert torch.equal(out[f"model.layers.1.mlp.experts.{j}.down_proj.weight"],
                           delta["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(out["model.layers.1.self_attn.q_proj.weight"], delta["model.layers.1.self_attn.q_proj.weight"])
    assert len(out) == len(delta) + 3 * 2  # three MLP keys become three keys each
    assert not any("router" in k for k in out)


def test_graft_rejects_missing_or_misshapen_keys_without_changing_the_model():
    base = tiny_llama()
    moe = copy.deepcopy(base)
    upcycle(moe, LANGS)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    delta = param_delta(base.state_dict(), perturb(copy.deepcopy(base), seed=2).state_dict())
    with pytest.raises(ExpandError, match="expand_delta"):
        graft(moe, delta)  # dense MLP keys do not exist in the MoE
    bad = dict(expand_delta(delta, get_spec(moe)))
    bad["model.norm.weight"] = torch.zeros(3)
    with pytest.raises(ExpandError, match="shape"):
        graft(moe, bad)
    assert all(torch.equal(before[k], v) for k, v in moe.state_dict().items())


def test_post_state_from_peft_is_the_merged_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g))
    x = ids()
    with torch.no_grad():
        want = peft_model(input_ids=x).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    post = post_state_from_peft(base, tmp_path / "adapter")
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # base untouched
    delta = param_delta(base.state_dict(), post)
    changed = {k for k, v in delta.items() if v.abs().max() > 0}
    assert changed == {f"model.layers.{i}.self_attn.q_proj.weight" for i in range(2)}
    moe = copy.deepcopy(base)
    spec = upcycle(moe, LANGS)
    graft(moe, expand_delta(delta, spec))
    close(logits(moe, x, "sw"), want, atol=1e-5)


# --- CPT: only the language's experts train -------------------------------------------------------------------

def test_cpt_on_sw_touches_only_sw_experts_and_leaves_english_unchanged():
    torch.manual_seed(0)
    moe = tiny_llama()
    upcycle(moe, LANGS)
    x = ids(seed=4)
    en_before = logits(moe, x, "en")
    trainable = freeze_all_but(moe, ["sw"])
    sw_names = set(expert_parameters(moe, "sw"))
    assert set(trainable) == sw_names and len(sw_names) == 2 * 3
    moe.train()
    set_language(moe, "sw")
    moe(input_ids=x, labels=x).loss.backward()
    for name, p in moe.named_parameters():
        if name in sw_names:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or not p.grad.any(), name
    opt = torch.optim.SGD([p for p in moe.parameters() if p.requires_grad], lr=1.0)
    opt.step()
    moe.eval()
    assert torch.equal(logits(moe, x, "en"), en_before)
    assert torch.equal(logits(moe, x, "yo"), en_before)
    assert not torch.allclose(logits(moe, x, "sw"), en_before, atol=1e-4)


def test_language_context_restores_the_previous_route_and_per_row_length_is_checked():
    moe = tiny_llama()
    upcycle(moe, LANGS)
    set_language(moe, "yo")
    with language(moe, ["sw", "en"]):
        assert moe.model.layers[0].mlp.route == [1, 0]
        with pytest.raises(ExpandError, match="one entry per batch row"):
            moe(input_ids=ids(batch=3))
    assert moe.model.layers[0].mlp.route == 2


# --- save / load ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,layers,mode,top_k", [("llama", [1], "hard", 1), ("gemma3", None, "hard", 1),
                                                     ("gemma3", [0, 1], "topk", 2)])
def test_save_load_round_trip_gives_identical_logits(tmp_path, arch, layers, mode, top_k):
    base = BUILDERS[arch]()
    moe = copy.deepcopy(base)
    spec = upcycle(moe, LANGS, layers=layers, mode=mode, top_k=top_k)
    graft(moe, expand_delta(param_delta(base.state_dict(), perturb(copy.deepcopy(base), 9).state_dict()), spec))
    with torch.no_grad():
        for p in expert_parameters(moe, "yo").values():
            p.mul_(1.5)
        if mode == "topk":
            nn.init.normal_(moe.model.layers[0].mlp.router.weight, std=1.0)
    out = save_expanded(moe, spec, tmp_path / "m", {"run": "t1"}, base_id="tiny-base", post_id="tiny-post")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.glob("*.bin"))
    loaded, spec2, manifest = load_expanded(out)
    assert spec2 == spec and UpcycleSpec.from_dict(spec.to_dict()) == spec
    assert manifest == json.loads((out / "expand_manifest.json").read_text())
    assert manifest["extra"] == {"run": "t1"} and manifest["base_id"] == "tiny-base"
    assert manifest["langs"] == LANGS and manifest["method"] == "param-delta"
    assert manifest["parameters"] == {"total": total_parameters(moe), "active_per_token": active_parameters(moe)}
    if arch == "gemma3":
        assert manifest["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    x = ids()
    for lang in (None, "sw", "yo", ["yo", "en", "sw"]):
        assert torch.equal(logits(loaded, x, lang), logits(moe, x, lang)), lang


# --- errors ---------------------------------------------------------------------------------------------------

def test_param_delta_rejects_different_shapes_and_keys_naming_the_fix():
    small, big = tiny_llama(hidden=16), tiny_llama(hidden=32)
    with pytest.raises(ExpandError, match="same shapes") as e:
        param_delta(small.state_dict(), big.state_dict())
    assert "model.embed_tokens.weight: base (64, 16) vs post (64, 32)" in str(e.value)
    assert isinstance(e.value, CompassError) and isinstance(e.value, ValueError)
    moe = copy.deepcopy(small)
    upcycle(moe, LANGS)
    with pytest.raises(ExpandError, match="only in post: .*experts.*post_state_from_peft"):
        param_delta(small.state_dict(), moe.state_dict())


def test_check_compatible_names_the_field_and_both_values():
    with pytest.raises(ExpandError, match="got base LlamaForCausalLM, post Gemma3ForCausalLM; use"):
        check_compatible(tiny_llama(), tiny_gemma3())
    with pytest.raises(ExpandError, match=r"config.num_hidden_layers must match .*base 2, post 3; use"):
        check_compatible(tiny_llama(), tiny_llama(layers=3))


def test_unsupported_architecture_and_bad_arguments_are_refused():
    class TinyGPT(nn.Module):
        pass

    with pytest.raises(ExpandError, match=r"LlamaForCausalLM.*got TinyGPT"):
        upcycle(TinyGPT(), LANGS)
    model = tiny_llama()
    with pytest.raises(ExpandError, match="layers must be decoder layer indices in 0..1"):
        upcycle(model, LANGS, layers=[5])
    with pytest.raises(ExpandError, match="distinct"):
        upcycle(model, ["sw", "swa"])
    with pytest.raises(ExpandError, match="top_k must be in 1..3"):
        upcycle(model, LANGS, mode="topk", top_k=4)
    upcycle(model, LANGS)
    with pytest.raises(ExpandError, match="already upcycled"):
        upcycle(model, ["ha"])
    with pytest.raises(ExpandError, match=r"one of the model's experts \['base', 'sw', 'yo'\]; got 'ha'"):
        expert_parameters(model, "ha")
    with pytest.raises(ExpandError, match="must be upcycled first"):
        set_language(tiny_llama(), "sw")
    with pytest.raises(ExpandError, match=r"missing \['langs', 'layers', 'mode', 'top_k'\]"):
        UpcycleSpec.from_dict({"arch": "LlamaForCausalLM"})


def test_load_expanded_refuses_a_directory_without_manifest(tmp_path):
    with pytest.raises(ExpandError, match="expand_manifest.json.*save_expanded"):
        load_expanded(tmp_path)


# --- merging baselines ----------------------------------------------------------------------------------------

def test_task_arithmetic_exact():
    cpt = {"a": torch.tensor([1.0, 2.0]), "router": torch.tensor([5.0])}
    out = task_arithmetic(cpt, {"a": torch.tensor([0.5, -1.0])}, scale=2.0)
    assert torch.equal(out["a"], torch.tensor([2.0, 0.0])) and torch.equal(out["router"], torch.tensor([5.0]))
    with pytest.raises(ExpandError, match="expand_delta"):
        task_arithmetic(cpt, {"missing": torch.zeros(1)})


def test_ties_merge_hand_computed():
    base = {"w": torch.ones(5)}
    t1 = {"w": 1 + torch.tensor([3.0, -1.0, 0.5, 2.0, 0.2])}
    t2 = {"w": 1 + torch.tensor([-2.0, 4.0, -0.1, 1.0, 0.3])}
    # density 0.6 of 5 -> keep 3: τ1 -> [3,-1,0,2,0], τ2 -> [-2,4,0,1,0]; Σ = [1,3,0,3,0] -> signs [+,+,0,+,0];
    # disjoint means of agreeing entries: [3, 4, 0, (2+1)/2, 0].
    assert torch.equal(ties_merge(base, [t1, t2], density=0.6)["w"], torch.tensor([4.0, 5.0, 1.0, 2.5, 1.0]))
    # weights [1, 3]: τ2 -> [-6,12,0,3,0]; Σ = [-3,11,0,5,0]; entry 0 elects τ2: -6/3; entry 3: (2+3)/(1+3).
    got = ties_merge(base, [t1, t2], density=0.6, weights=[1.0, 3.0])["w"]
    assert torch.equal(got, torch.tensor([-1.0, 5.0, 1.0, 2.25, 1.0]))
    # density 1 with one model is the model itself.
    assert torch.equal(ties_merge(base, [t1], density=1.0)["w"], t1["w"])
    with pytest.raises(ExpandError, match="density must be in"):
        ties_merge(base, [t1], density=0.0)
