"""ECDA adapter update (§3.3.3, §4.3, App. D.3-D.4) on a tiny random llama, CPU, seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from compass.adapt import (
    AdaptError,
    ECDAConfig,
    TrainConfig,
    adapter_parameters,
    add_language_adapter,
    anchor_budget,
    base_parameters,
    causal_lm_nll,
    diagonal_fisher,
    ecda_loss,
    ecda_step_loss,
    ewc_penalty,
    load_base,
    select_anchors,
    snapshot,
    train_adapter,
)

VOCAB = 64


def tiny_base(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return load_base(LlamaForCausalLM(cfg))


def tiny_peft(langs=("fr", "de"), seed: int = 0, cfg: TrainConfig | None = None):
    cfg = cfg or TrainConfig(rank=4, alpha=8, dropout=0.0)
    model = tiny_base(seed)
    for lang in langs:
        model = add_language_adapter(model, lang, cfg)
    return model


def perturb(params, seed: int = 1, scale: float = 0.3) -> None:
    """Move lora_B off its zero init so every adapter tensor gets gradient (a 'previously trained' adapter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn(p.shape, generator=g))


def seqs(n: int, length: int, seed: int, lo: int = 1, hi: int = VOCAB) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, length), generator=g).tolist()


# ---------------------------------------------------------------- EWC (§3.3.3)


def test_ewc_zero_at_prev_and_quadratic():
    g = torch.Generator().manual_seed(0)
    prev = {"a": torch.randint(-8, 8, (3, 4), generator=g) / 8.0, "b": torch.randint(-8, 8, (5,), generator=g) / 8.0}
    fisher = {k: torch.rand(v.shape, generator=g) for k, v in prev.items()}
    d = {k: torch.randint(-4, 5, v.shape, generator=g) / 16.0 for k, v in prev.items()}
    assert float(ewc_penalty(prev, prev, fisher, lam=2.0)) == 0.0
    one = ewc_penalty({k: prev[k] + d[k] for k in prev}, prev, fisher, lam=2.0)
    two = ewc_penalty({k: prev[k] + 2 * d[k] for k in prev}, prev, fisher, lam=2.0)
    assert float(one) > 0
    assert float(two) / float(one) == 4.0
    hand = 0.5 * 2.0 * sum(float((fisher[k] * d[k] ** 2).sum()) for k in prev)
    assert float(one) == pytest.approx(hand, rel=1e-6)


def test_ewc_penalty_missing_entries_named():
    p = {"a": torch.zeros(2)}
    with pytest.raises(AdaptError, match="prev/fisher"):
        ewc_penalty(p, {}, {"a": torch.ones(2)}, lam=1.0)


def test_fisher_covers_only_this_adapter_nonnegative_and_matches_hand_computation():
    model = tiny_peft()
    fr = adapter_parameters(model, "fr")
    de = adapter_parameters(model, "de")
    assert fr and not set(fr) & set(de)
    assert not set(fr) & set(base_parameters(model))
    perturb(fr)
    model.set_adapter("fr")
    ids = torch.tensor(seqs(2, 6, seed=3))
    mask = torch.ones_like(ids)
    fisher = diagonal_fisher(model, [(ids, mask)], fr)
    assert set(fisher) == set(fr)
    assert all(all(seg != "de" for seg in k.split(".")) for k in fisher)
    assert all(bool((f >= 0).all()) for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    # hand: mean over the 2 examples of squared per-example gradients
    model.eval()
    names, tensors = list(fr), list(fr.values())
    hand = {n: torch.zeros_like(t) for n, t in fr.items()}
    for i in range(2):
        nll = causal_lm_nll(model, ids[i : i + 1], mask[i : i + 1])
        for n, gr in zip(names, torch.autograd.grad(nll, tensors), strict=True):
            hand[n] += gr**2 / 2
    for n in fr:
        torch.testing.assert_close(fisher[n], hand[n], rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- loss assembly


def test_ecda_loss_matches_hand_assembly():
    ecda = ECDAConfig()
    assert (ecda.beta, ecda.lam, ecda.anchor_fraction) == (0.1, 2.0, 0.05)  # App. D.3, D.4
    prev = {"w": torch.tensor([0.0, 1.0])}
    now = {"w": torch.tensor([0.5, 2.0])}
    fisher = {"w": torch.tensor([1.0, 2.0])}
    ewc = ewc_penalty(now, prev, fisher, ecda.lam)  # 2/2 * (1*0.25 + 2*1) = 2.25
    assert float(ewc) == pytest.approx(2.25)
    total = ecda_loss(torch.tensor(1.5), torch.tensor(0.7), ewc, ecda.beta)
    assert float(total) == pytest.approx(1.5 + 0.1 * 0.7 + 2.25)
    assert float(ecda_loss(torch.tensor(1.5), None, None, 0.1)) == 1.5


def test_training_step_loss_equals_hand_assembly_of_its_parts():
    model = tiny_peft()
    fr = adapter_parameters(model, "fr")
    perturb(fr)
    model.set_adapter("fr")
    model.eval()
    prev = snapshot(fr)
    anchor = (torch.tensor(seqs(2, 5, seed=7)), torch.ones(2, 5, dtype=torch.long))
    fisher = diagonal_fisher(model, [anchor], fr)
    perturb(fr, seed=5, scale=0.05)  # theta != theta_prev so the EWC term is non-zero
    batch = (torch.tensor(seqs(3, 6, seed=8)), torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 6]))
    ecda = ECDAConfig(beta=0.3, lam=5.0)
    total, parts = ecda_step_loss(model, batch, anchor, fr, prev, fisher, ecda)
    total, parts = total.detach(), {k: v.detach() for k, v in parts.items()}
    with torch.no_grad():
        task = causal_lm_nll(model, *batch)
        dar = causal_lm_nll(model, *anchor)
        ewc = 5.0 / 2 * sum((fisher[n] * (fr[n] - prev[n]) ** 2).sum() for n in fr)
    assert float(parts["task"]) == pytest.approx(float(task), rel=1e-6)
    assert float(parts["dar"]) == pytest.approx(float(dar), rel=1e-6)
    assert float(parts["ewc"]) == pytest.approx(float(ewc), rel=1e-5) and float(ewc) > 0
    assert float(total) == pytest.approx(float(task) + 0.3 * float(dar) + float(ewc), rel=1e-6)


def test_nll_masks_padding():
    model = tiny_peft(langs=("fr",))
    model.eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    padded = causal_lm_nll(model, ids, torch.tensor([[1, 1, 1, 0, 0]]))
    plain = causal_lm_nll(model, ids[:, :3], torch.ones(1, 3, dtype=torch.long))
    assert float(padded) == pytest.approx(float(plain), rel=1e-5)


# ---------------------------------------------------------------- training


def test_base_weights_bit_identical_after_update_and_adapter_changed():
    model = tiny_peft()
    base_before = snapshot(base_parameters(model))
    de_before = snapshot(adapter_parameters(model, "de"))
    fr_before = snapshot(adapter_parameters(model, "fr"))
    cfg = TrainConfig(rank=4, alpha=8, lr=1e-2, batch_size=4, max_epochs=2, val_fraction=0.0)
    res = train_adapter(model, "fr", seqs(8, 10, seed=1), None, cfg)
    assert res.steps == 4 and res.epochs == 2 and res.seconds_per_step > 0
    for n, t in base_parameters(model).items():
        assert torch.equal(t, base_before[n]), n
    for n, t in adapter_parameters(model, "de").items():
        assert torch.equal(t, de_before[n]), n
    fr_after = adapter_parameters(model, "fr")
    assert any(not torch.equal(fr_after[n], fr_before[n]) for n in fr_after)


def test_ecda_training_with_anchors_and_text_tokenizer_keeps_base():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]"] + [f"w{i}" for i in range(20)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    texts = [" ".join(f"w{(i * 3 + j) % 20}" for j in range(8)) for i in range(12)]
    anchors = [" ".join(f"w{(i + j) % 20}" for j in range(6)) for i in range(2)]
    model = tiny_peft()
    perturb(adapter_parameters(model, "fr"))
    base_before = snapshot(base_parameters(model))
    cfg = TrainConfig(rank=4, alpha=8, lr=5e-3, batch_size=4, max_epochs=2, val_fraction=0.25)
    steps = []
    res = train_adapter(
        model, "fr", texts, tokenizer, cfg, ecda=ECDAConfig(), anchors_texts=anchors, progress=steps.append
    )
    assert res.steps == 2 * math.ceil(9 / 4) and len(res.val_loss) == res.epochs
    assert all(math.isfinite(x) for x in res.train_loss + res.val_loss)
    assert sum(e["event"] == "step" for e in steps) == res.steps
    for n, t in base_parameters(model).items():
        assert torch.equal(t, base_before[n]), n


def test_ecda_without_anchors_is_refused():
    model = tiny_peft(langs=("fr",))
    with pytest.raises(AdaptError, match="anchors_texts"):
        train_adapter(model, "fr", seqs(4, 5, seed=1), None, TrainConfig(rank=4), ecda=ECDAConfig())


def test_lr_schedule_warmup_then_cosine():
    model = tiny_peft(langs=("fr",))
    lr = 1e-2
    cfg = TrainConfig(rank=4, alpha=8, lr=lr, batch_size=2, max_epochs=2, warmup_ratio=0.25, val_fraction=0.0)
    res = train_adapter(model, "fr", seqs(8, 6, seed=2), None, cfg)
    total, warm = 8, 2  # 4 steps/epoch * 2 epochs; ceil(0.25 * 8)
    expected = [
        lr * k / warm if k < warm else lr * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))
        for k in range(total)
    ]
    assert res.lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert res.lrs[0] == 0.0 and res.lrs[warm] == pytest.approx(lr)


def test_early_stopping_restores_best_epoch_weights():
    model = tiny_peft(langs=("fr",))
    fr = adapter_parameters(model, "fr")
    perturb(fr)
    at_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def record(event):
        if event["event"] == "epoch":
            at_epoch[event["epoch"]] = snapshot(fr)

    train = [[3, 4] * 6 for _ in range(8)]  # the model learns "3 4 3 4 ..."
    val = [[5, 6] * 6 for _ in range(4)]  # ... which makes a different pattern less likely
    cfg = TrainConfig(rank=4, alpha=8, lr=3e-2, batch_size=4, max_epochs=3, patience=1, warmup_ratio=0.0)
    res = train_adapter(model, "fr", train, None, cfg, val_texts=val, progress=record)
    assert res.best_epoch == int(np.argmin(res.val_loss)) + 1
    assert res.best_epoch < res.epochs  # stopped after a worse epoch
    for n, t in fr.items():
        assert torch.equal(t, at_epoch[res.best_epoch][n]), n


# ---------------------------------------------------------------- model / config


def test_adapter_per_language_and_duplicates_refused():
    model = tiny_peft(langs=("fr",))
    model = add_language_adapter(model, "pt-BR", TrainConfig(rank=4))
    assert set(model.peft_config) == {"fr", "pt-BR"}
    assert all(c.use_dora for c in model.peft_config.values())
    with pytest.raises(AdaptError, match="already has one"):
        add_language_adapter(model, "fr", TrainConfig(rank=4))
    with pytest.raises(AdaptError, match="'lang'"):
        adapter_parameters(model, "xx")


def test_bad_target_modules_named():
    with pytest.raises(AdaptError, match="target_modules"):
        add_language_adapter(tiny_base(), "fr", TrainConfig(target_modules=("no_such_proj",)))


def test_load_base_rejects_missing_path(tmp_path):
    with pytest.raises(AdaptError, match="path_or_model"):
        load_base(tmp_path / "nope")


def test_config_defaults_and_validation():
    c = TrainConfig()
    assert (c.rank, c.lr, c.betas, c.weight_decay, c.grad_clip, c.warmup_ratio, c.max_epochs) == (
        16, 2e-4, (0.9, 0.999), 0.1, 1.0, 0.1, 3,
    )  # fmt: skip
    with pytest.raises(AdaptError, match=r"'rank'.*Got 0"):
        TrainConfig(rank=0)
    with pytest.raises(AdaptError, match="'warmup_ratio'"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(AdaptError, match="'lam'"):
        ECDAConfig(lam=-1)
    with pytest.raises(AdaptError, match="'anchor_fraction'"):
        ECDAConfig(anchor_fraction=0)


# ---------------------------------------------------------------- anchors (App. D.3)


def test_select_anchors_exact_indices():
    # cluster 0: centroid (1, 0); cluster 1: (0, 1); cluster 2: (-1, 0); row 9 is noise
    X = np.array(
        [
            [1.0, 0.30],  # 0  c0, cos .958
            [1.0, 0.05],  # 1  c0, cos .999  <- nearest
            [1.0, -0.10],  # 2  c0, cos .995
            [0.20, 1.0],  # 3  c1, cos .981
            [0.01, 1.0],  # 4  c1, cos 1.00  <- nearest
            [-1.0, 0.0],  # 5  c2
            [-1.0, 0.1],  # 6  c2
            [1.0, 0.0],  # 7  c0, cos 1 (exact)
            [0.0, 1.0],  # 8  c1, cos 1 (exact)
            [1.0, 0.0],  # 9  noise
        ]
    )
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 0, 1, -1])
    C = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p = np.array([0.6, 0.3, 0.1])
    # budget round(0.05 * 60) = 3; exact shares 1.8/.9/.3 -> floors 1/0/0 -> remainders to c1 (.9), c0 (.8): 2/1/0
    idx = select_anchors(X, labels, C, p, fraction=0.05, n_total=60)
    assert idx.tolist() == [7, 1, 8]
    # budget 1 goes to the densest cluster; tiny data still gets one anchor
    assert select_anchors(X, labels, C, p, fraction=0.05, n_total=4).tolist() == [7]
    # capacity: cluster 0 holds 4 rows; a budget of 8 with all mass there overflows down the ranking
    p2 = np.array([1.0, 0.0, 0.0])
    assert select_anchors(X, labels, C, p2, fraction=1.0, n_total=8).tolist() == [7, 1, 2, 0, 8, 4, 3, 5]
    assert anchor_budget(0.05, 0, 10) == 0 and anchor_budget(0.05, 100, 3) == 3
    assert select_anchors(X, labels, C, p, fraction=0.05, n_total=0).size == 0


def test_select_anchors_validation():
    X = np.zeros((3, 2))
    with pytest.raises(AdaptError, match="'p_ref'"):
        select_anchors(X, np.array([0, 0, 1]), np.ones((2, 2)), np.array([1.0]), 0.05, 10)
    with pytest.raises(AdaptError, match="'labels'"):
        select_anchors(X, np.array([0, 0, 5]), np.ones((2, 2)), np.array([0.5, 0.5]), 0.05, 10)
