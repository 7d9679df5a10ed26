"""The single-pass ECDA step (§3.3.3, issue 15): task and anchor rows in one weighted forward/backward plus the
analytic EWC gradient give the same loss and gradients as the two-pass reference; the anchor micro-batch per step;
bit-exact resume with ECDA. Tiny random llamas, CPU, seeded, dropout 0 / eval mode for the equality checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from compass.adapt import (
    AdaptError,
    ECDAConfig,
    Interrupted,
    TrainConfig,
    adapter_parameters,
    add_language_adapter,
    causal_lm_nll,
    diagonal_fisher,
    ewc_penalty,
    load_base,
    snapshot,
    train_adapter,
)
from compass.adapt.ewc import FusedEWC
from compass.adapt.loss import stack_batches, target_tokens, weighted_lm_nll
from compass.adapt.train import AnchorCycle, anchor_rows_per_step, ecda_step_backward, ecda_step_loss

VOCAB = 48


def tiny_peft(layers: int = 2, seed: int = 0, lang: str = "fr"):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return add_language_adapter(load_base(LlamaForCausalLM(cfg)), lang, TrainConfig(rank=4, alpha=8, dropout=0.0))


def perturb(params, seed: int = 1, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn(p.shape, generator=g))


def padded_batch(lengths: list[int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows of the given lengths (pad id 0, random ids elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def setup(seed: int = 0):
    """An adapter moved off theta_prev (so every term, EWC included, is non-zero), its Fisher on anchors."""
    model = tiny_peft(seed=seed)
    fr = adapter_parameters(model, "fr")
    perturb(fr)
    model.set_adapter("fr")
    model.eval()
    prev = snapshot(fr)
    fisher = diagonal_fisher(model, [padded_batch([5, 7], 7, seed=11)], fr)
    perturb(fr, seed=5, scale=0.05)
    return model, fr, prev, fisher


def grads_of(params) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in params.items()}


def zero(params) -> None:
    for p in params.values():
        p.grad = None


def two_pass(model, fr, batch, anchor, prev, fisher, ecda):
    zero(fr)
    total, parts = ecda_step_loss(model, batch, anchor, fr, prev, fisher, ecda)
    total.backward()
    return total.detach(), {k: v.detach() for k, v in parts.items()}, grads_of(fr)


def single_pass(model, fr, batch, anchor, prev, fisher, ecda, **kw):
    zero(fr)
    total, parts = ecda_step_backward(model, batch, anchor, fr, prev, fisher, ecda, **kw)
    return total, parts, grads_of(fr)


def assert_same_grads(a: dict, b: dict) -> None:
    assert set(a) == set(b) and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-7, msg=n)
    assert sum(float(g.abs().sum()) for g in a.values()) > 0


# ---------------------------------------------------------------- loss and gradient equality


@pytest.mark.parametrize(
    ("task_lengths", "task_width", "anchor_lengths", "anchor_width"),
    [
        ([6, 4, 6], 6, [9, 5], 9),  # anchors longer: task rows get extra right padding
        ([8, 3, 8, 7], 8, [4], 4),  # anchors shorter: anchor rows get extra right padding
        ([5, 5], 5, [5, 5, 5], 5),  # same width, no padding anywhere
    ],
)
def test_single_pass_equals_two_pass_loss_parts_and_every_gradient(task_lengths, task_width, anchor_lengths,
                                                                   anchor_width):
    model, fr, prev, fisher = setup()
    batch = padded_batch(task_lengths, task_width, seed=8)
    anchor = padded_batch(anchor_lengths, anchor_width, seed=9)
    ecda = ECDAConfig(beta=0.3, lam=5.0)
    ref_total, ref_parts, ref_grads = two_pass(model, fr, batch, anchor, prev, fisher, ecda)
    total, parts, grads = single_pass(model, fr, batch, anchor, prev, fisher, ecda)
    assert set(parts) == set(ref_parts) == {"task", "dar", "ewc"}
    assert float(ref_parts["ewc"]) > 0 and float(ref_parts["dar"]) > 0
    for k in ref_parts:
        assert torch.allclose(parts[k], ref_parts[k], rtol=1e-5), k
    assert torch.allclose(total, ref_total, rtol=1e-5)
    assert_same_grads(grads, ref_grads)


def test_prebuilt_fused_ewc_equals_building_it_per_call_and_grad_clipping_sees_the_total():
    model, fr, prev, fisher = setup(seed=3)
    batch, anchor = padded_batch([6, 6, 2], 6, seed=1), padded_batch([4, 3], 4, seed=2)
    ecda = ECDAConfig(beta=1.0, lam=3.0)
    _, _, ref = two_pass(model, fr, batch, anchor, prev, fisher, ecda)
    ref_norm = torch.nn.utils.clip_grad_norm_(list(fr.values()), 1.0)
    _, _, grads = single_pass(model, fr, batch, anchor, None, None, ecda, ewc=FusedEWC(fr, prev, fisher, ecda.lam))
    norm = torch.nn.utils.clip_grad_norm_(list(fr.values()), 1.0)
    assert_same_grads(grads, ref)
    assert torch.allclose(norm, ref_norm, rtol=1e-5)


def test_beta_zero_without_ewc_is_the_plain_task_loss():
    model, fr, _, _ = setup()
    batch, anchor = padded_batch([7, 5, 7], 7, seed=4), padded_batch([6], 6, seed=5)
    zero(fr)
    plain = causal_lm_nll(model, *batch)
    plain.backward()
    want = grads_of(fr)
    for ecda in (ECDAConfig(beta=0.0, lam=0.0), None):
        total, parts, grads = single_pass(model, fr, batch, anchor, None, None, ecda)
        assert set(parts) == {"task"}
        assert torch.equal(total, plain.detach())
        for n in want:
            assert torch.equal(grads[n], want[n]), n


def test_beta_zero_with_ewc_matches_two_pass():
    model, fr, prev, fisher = setup(seed=2)
    batch = padded_batch([7, 5], 7, seed=4)
    ecda = ECDAConfig(beta=0.0, lam=4.0)
    ref_total, ref_parts, ref_grads = two_pass(model, fr, batch, None, prev, fisher, ecda)
    total, parts, grads = single_pass(model, fr, batch, None, prev, fisher, ecda)
    assert torch.allclose(total, ref_total, rtol=1e-5) and torch.allclose(parts["ewc"], ref_parts["ewc"], rtol=1e-5)
    assert_same_grads(grads, ref_grads)


class TableLM(nn.Module):
    """logits[t] = W[input_ids[t]]: the NLL of each target token is -log_softmax(W[previous token])[token]."""

    def __init__(self, vocab: int = 5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.arange(vocab * vocab, dtype=torch.float32).reshape(vocab, vocab).sin())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.w[input_ids])


def test_per_token_weighting_by_hand():
    lm = TableLM()
    logp = torch.log_softmax(lm.w.detach(), dim=-1)

    def nll(prev: int, tok: int) -> float:
        return -float(logp[prev, tok])

    task = (torch.tensor([[1, 2, 3], [4, 1, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))  # 2 + 1 target tokens
    anchor = (torch.tensor([[2, 4, 4, 1]]), torch.tensor([[1, 1, 1, 1]]))  # 3 target tokens
    beta = 0.25
    task_mean = (nll(1, 2) + nll(2, 3) + nll(4, 1)) / 3
    anchor_mean = (nll(2, 4) + nll(4, 4) + nll(4, 1)) / 3
    ids, mask = stack_batches(task, anchor, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 0], [4, 1, 0, 0], [2, 4, 4, 1]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert target_tokens(ids, mask).tolist() == [2.0, 1.0, 3.0]
    loss, per_row = weighted_lm_nll(lm, ids, mask, torch.tensor([1 / 3, 1 / 3, beta / 3]))
    assert float(loss.detach()) == pytest.approx(task_mean + beta * anchor_mean, rel=1e-6)
    assert per_row.tolist() == pytest.approx([nll(1, 2) + nll(2, 3), nll(4, 1), 3 * anchor_mean], rel=1e-6)
    total, parts = ecda_step_backward(lm, task, anchor, {}, None, None, ECDAConfig(beta=beta, lam=0.0))
    assert float(parts["task"]) == pytest.approx(task_mean, rel=1e-6)
    assert float(parts["dar"]) == pytest.approx(anchor_mean, rel=1e-6)
    assert float(total) == pytest.approx(task_mean + beta * anchor_mean, rel=1e-6)
    with pytest.raises(AdaptError, match="row_weights"):
        weighted_lm_nll(lm, ids, mask, torch.ones(2))


def test_fused_ewc_value_and_gradient_by_hand():
    prev = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[2.0], [-1.0]])}
    now = {"a": torch.tensor([0.5, 2.0], requires_grad=True), "b": torch.tensor([[2.0], [0.0]], requires_grad=True)}
    fisher = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0], [0.5]])}
    lam = 2.0
    fused = FusedEWC(now, prev, fisher, lam)
    # lam/2 * (1*0.25 + 2*1 + 3*0 + 0.5*1) = 2.75
    assert float(fused.value()) == pytest.approx(2.75, rel=1e-6)
    assert float(ewc_penalty(now, prev, fisher, lam).detach()) == pytest.approx(2.75, rel=1e-6)
    now["a"].grad = torch.tensor([10.0, 10.0])  # accumulates onto an existing gradient; "b" has none yet
    assert float(fused.add_grad_()) == pytest.approx(2.75, rel=1e-6)
    assert now["a"].grad.tolist() == pytest.approx([10.0 + 2 * 1 * 0.5, 10.0 + 2 * 2 * 1.0])
    assert now["b"].grad.flatten().tolist() == pytest.approx([0.0, 2 * 0.5 * 1.0])
    with pytest.raises(AdaptError, match="prev/fisher"):
        FusedEWC(now, {}, fisher, lam)


# ---------------------------------------------------------------- anchor micro-batch


@pytest.mark.parametrize(
    ("n_anchors", "steps_per_epoch", "anchor_batch_size", "rows"),
    [
        (10, 5, None, 2),  # one pass per epoch: 10 / 5
        (11, 5, None, 3),  # ceil(11 / 5)
        (1, 100, None, 1),  # at least one row
        (3, 1, None, 3),  # one step per epoch takes the whole buffer
        (100, 8, None, 13),  # ceil(12.5)
        (5, 3, 2, 2),  # explicit size
        (5, 3, 50, 5),  # clamped to the buffer
    ],
)
def test_anchor_rows_per_step(n_anchors, steps_per_epoch, anchor_batch_size, rows):
    assert anchor_rows_per_step(n_anchors, steps_per_epoch, anchor_batch_size) == rows


def test_anchor_cycle_passes_over_every_row_once_per_pass_seeded_and_resumable():
    n, rows = 7, 3
    cycle = AnchorCycle(n, rows, seed=4)
    draws = [cycle.take() for _ in range(14)]  # 42 draws = 6 passes
    flat = [i for d in draws for i in d]
    assert all(len(d) == rows for d in draws)
    for p in range(6):
        assert sorted(flat[p * n : (p + 1) * n]) == list(range(n)), p
    assert flat[:n] != flat[n : 2 * n]  # a fresh permutation per pass
    again = AnchorCycle(n, rows, seed=4)
    assert [again.take() for _ in range(3)] == draws[:3]
    assert AnchorCycle(n, rows, seed=5).take() != draws[0] or AnchorCycle(n, rows, seed=6).take() != draws[0]
    resumed = AnchorCycle(n, rows, seed=4, cursor=5 * rows)
    assert [resumed.take() for _ in range(9)] == draws[5:]


def test_anchor_batch_size_validation_names_the_field():
    assert ECDAConfig().anchor_batch_size is None
    assert ECDAConfig(0.2, 1.0, 0.1, 4) == ECDAConfig(beta=0.2, lam=1.0, anchor_fraction=0.1, anchor_batch_size=4)
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(AdaptError, match=r"'anchor_batch_size' parameter of ECDAConfig must be an int >= 1"):
            ECDAConfig(anchor_batch_size=bad)


def seqs(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (int(k),), generator=g).tolist() for k in torch.randint(4, 10, (n,), generator=g)]


def test_train_adapter_takes_the_default_anchor_micro_batch_in_each_step(monkeypatch):
    import compass.adapt.train as train

    seen = []
    real = train.ecda_step_backward

    def spy(model, batch, anchor, *a, **kw):
        seen.append((batch[0].size(0), None if anchor is None else anchor[0].size(0)))
        return real(model, batch, anchor, *a, **kw)

    monkeypatch.setattr(train, "ecda_step_backward", spy)
    cfg = TrainConfig(rank=4, alpha=8, batch_size=4, max_epochs=2, val_fraction=0.0, dropout=0.0)
    model = tiny_peft(layers=1)
    res = train_adapter(model, "fr", seqs(16, 1), None, cfg, ecda=ECDAConfig(), anchors_texts=seqs(6, 2))
    assert res.steps == 8 and seen == [(4, 2)] * 8  # 4 steps per epoch, ceil(6 / 4) = 2 anchor rows each
    seen.clear()
    model = tiny_peft(layers=1)
    train_adapter(model, "fr", seqs(16, 1), None, cfg, ecda=ECDAConfig(anchor_batch_size=5), anchors_texts=seqs(6, 2))
    assert seen == [(4, 5)] * 8
    seen.clear()
    model = tiny_peft(layers=1)
    train_adapter(model, "fr", seqs(16, 1), None, cfg, ecda=ECDAConfig(beta=0.0), anchors_texts=seqs(6, 2))
    assert seen == [(4, None)] * 8  # beta = 0: no anchor rows run


@pytest.mark.parametrize("anchor_batch_size", [None, 3])
def test_ecda_resume_gives_the_uninterrupted_weights(tmp_path, anchor_batch_size):
    from compass.adapt import load_checkpoint, save_checkpoint

    cfg = TrainConfig(rank=4, alpha=8, lr=5e-3, batch_size=3, max_epochs=2, val_fraction=0.2, patience=5)
    ecda = ECDAConfig(beta=0.5, lam=2.0, anchor_batch_size=anchor_batch_size)
    texts, anchors = seqs(14, 3), seqs(5, 4)

    def fresh():
        model = tiny_peft(layers=1, seed=0)
        perturb(adapter_parameters(model, "fr"), scale=0.1)  # a previously trained adapter: non-zero EWC/Fisher
        return model

    model = fresh()
    full = train_adapter(model, "fr", texts, None, cfg, ecda=ecda, anchors_texts=anchors)
    want = snapshot(adapter_parameters(model, "fr"))
    calls = []
    model = fresh()
    with pytest.raises(Interrupted):
        train_adapter(model, "fr", texts, None, cfg, ecda=ecda, anchors_texts=anchors, checkpoint_every=2,
                      on_checkpoint=lambda st: save_checkpoint(tmp_path / "ck", st),
                      should_stop=lambda: calls.append(1) or len(calls) == 5)  # epoch 2, mid-epoch
    state = load_checkpoint(tmp_path / "ck")
    rows = anchor_rows_per_step(5, math.ceil(11 / 3), anchor_batch_size)
    assert (state.step, state.epoch) == (5, 2) and state.meta["anchor_cursor"] == 5 * rows
    model = fresh()
    resumed = train_adapter(model, "fr", texts, None, cfg, ecda=ecda, anchors_texts=anchors, resume=state)
    assert resumed.steps == full.steps == 8 and resumed.train_loss == full.train_loss
    for n, p in adapter_parameters(model, "fr").items():
        assert torch.equal(p.detach(), want[n]), n
