"""Time of one optimizer step of an adapter update (§3.3.3 ECDA vs a plain DoRA step), variants interleaved.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ecda_step.py [--model tiny|smollm2] [--device cpu|cuda]
        [--batch-size 8] [--seq-len 64] [--rounds 30] [--threads N] [--out benchmarks/results/ecda_step]

Variants, each a full step (zero_grad, forward/backward, EWC, grad clipping, AdamW step) on the same DoRA adapter:
  a  plain       L_task only (a DoRA step without ECDA)
  b  two-pass    compass.adapt.train.ecda_step_loss + backward: task batch and a full batch_size anchor batch in two
                 passes, L_EWC through autograd (the step before issue 15)
  c  single      compass.adapt.train.ecda_step_backward: task rows + the default anchor micro-batch
                 (ceil(|B_anchor| / steps_per_epoch) rows) in one weighted pass, FusedEWC gradient (what
                 train_adapter runs)
  d  single-full the same with a full batch_size anchor batch (isolates the anchor-row saving from the fusion)
  e  single-ag   as c, but L_EWC as an autograd term (ewc_penalty) in the same backward: the alternative to FusedEWC
Data: random token rows, lengths uniform in [seq_len/2, seq_len] (right padding as in training); |D_new| = --n-train
rows, |B_anchor| = 5% of them (App. D.3), so steps_per_epoch = ceil(n_train / batch_size). The Fisher is random
positive (the step's cost does not depend on its values). Every round runs each variant once on the same batches, in
a seeded shuffled order, after --warmup untimed rounds; the table gives per-variant medians and the median of the
per-round ratios to (a), so ratios come from one run and are robust to other load on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compass.adapt import (  # noqa: E402
    ECDAConfig,
    TrainConfig,
    adapter_parameters,
    add_language_adapter,
    causal_lm_nll,
    ewc_penalty,
    load_base,
    packaged_model,
    snapshot,
)
from compass.adapt.ewc import FusedEWC  # noqa: E402
from compass.adapt.loss import stack_batches, target_tokens, weighted_lm_nll  # noqa: E402
from compass.adapt.train import (  # noqa: E402
    AnchorCycle,
    anchor_rows_per_step,
    collate,
    ecda_step_backward,
    ecda_step_loss,
)

VARIANTS = {"a": "plain DoRA step (L_task)", "b": "two-pass ECDA, full anchor batch",
            "c": "single-pass ECDA, default anchor micro-batch", "d": "single-pass ECDA, full anchor batch",
            "e": "single-pass, EWC via autograd (micro-batch)"}


def build_model(spec: str, device: str):
    """(model with a DoRA adapter 'xx', vocab size, description)."""
    if spec == "smollm2":
        d, gguf = packaged_model("smollm2")
        base = load_base(d, gguf_file=gguf, device=device)
        desc = "SmolLM2-135M-Instruct (packaged Q4_1 GGUF, dequantised fp32)"
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
        base = load_base(LlamaForCausalLM(cfg), device=device)
        desc = "tiny random llama (hidden 256, 4 layers, vocab 4096)"
    torch.manual_seed(1)
    model = add_language_adapter(base, "xx", TrainConfig())  # §4.3 defaults: DoRA r=16 on all 7 projections
    model.set_adapter("xx")
    model.train()
    return model, base.config.vocab_size, desc


def rows(n: int, seq_len: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(max(2, seq_len // 2), seq_len + 1, (n,), generator=g).tolist()
    return [torch.randint(1, vocab, (k,), generator=g).tolist() for k in lens]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=400, help="|D_new| rows (sets steps_per_epoch)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--variants", default="abcde", help="which of a-e to run (a is always run: the ratios' base)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ecda_step")
    a = ap.parse_args()
    keys = ["a"] + [k for k in VARIANTS if k != "a" and k in a.variants]
    if a.threads > 0:  # on a CPU shared with other jobs, fewer threads than cores spin less on contended barriers
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model, vocab, desc = build_model(a.model, a.device)
    params = adapter_parameters(model, "xx")
    with torch.no_grad():  # a previously trained adapter: lora_B off zero, theta != theta_prev
        g = torch.Generator().manual_seed(2)
        for p in params.values():
            p.add_(0.01 * torch.randn(p.shape, generator=g).to(dev))
    prev = {n: t + 0.001 for n, t in snapshot(params).items()}
    fisher = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)).to(dev) for n, p in params.items()}
    ecda = ECDAConfig()  # beta 0.1, lambda 2 (App. D.4)
    fused = FusedEWC(params, prev, fisher, ecda.lam)

    train = rows(a.n_train, a.seq_len, vocab, seed=10)
    anchors = rows(max(1, round(ecda.anchor_fraction * a.n_train)), a.seq_len, vocab, seed=11)
    steps_per_epoch = math.ceil(a.n_train / a.batch_size)
    micro = anchor_rows_per_step(len(anchors), steps_per_epoch, ecda.anchor_batch_size)
    full = min(a.batch_size, len(anchors))  # the old per-step anchor batch (a batch_size batch of the buffer)
    cyc_micro, cyc_full = AnchorCycle(len(anchors), micro, 0), AnchorCycle(len(anchors), full, 0)
    opts = {k: torch.optim.AdamW(list(params.values()), lr=1e-5, weight_decay=0.1) for k in keys}
    tensors = list(params.values())

    def run(key: str, task, anc_micro, anc_full) -> None:
        opt = opts[key]
        opt.zero_grad(set_to_none=True)
        if key == "a":
            causal_lm_nll(model, *task).backward()
        elif key == "b":
            ecda_step_loss(model, task, anc_full, params, prev, fisher, ecda)[0].backward()
        elif key in ("c", "d"):
            ecda_step_backward(model, task, anc_micro if key == "c" else anc_full, params, None, None, ecda, ewc=fused)
        else:  # one weighted pass like c, L_EWC as a flat autograd term in the same backward
            n = task[0].size(0)
            ids, mask = stack_batches(task, anc_micro)
            tok = target_tokens(ids, mask)
            w = torch.cat([torch.ones_like(tok[:n]) / tok[:n].sum(), torch.ones_like(tok[n:]) * ecda.beta
                           / tok[n:].sum()])
            (weighted_lm_nll(model, ids, mask, w)[0] + ewc_penalty(params, prev, fisher, ecda.lam)).backward()
        torch.nn.utils.clip_grad_norm_(tensors, 1.0)
        opt.step()
        if a.device == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {k: [] for k in keys}
    order = list(keys)
    shuffle = random.Random(0)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for r in range(a.warmup + a.rounds):
        task = collate([train[(r * a.batch_size + j) % len(train)] for j in range(a.batch_size)], 0, dev)
        anc_micro = collate([anchors[i] for i in cyc_micro.take()], 0, dev)
        anc_full = collate([anchors[i] for i in cyc_full.take()], 0, dev)
        shuffle.shuffle(order)
        for key in order:
            t0 = time.perf_counter()
            run(key, task, anc_micro, anc_full)
            if r >= a.warmup:
                times[key].append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    # L_EWC alone, both forms, interleaved: FusedEWC.add_grad_ vs ewc_penalty(...).backward() (grads exist, as after
    # the loss backward)
    ewc_t: dict[str, list[float]] = {"fused": [], "autograd": []}
    for _ in range(5 + 3 * a.rounds):
        for kind in ("fused", "autograd"):
            t0 = time.perf_counter()
            if kind == "fused":
                fused.add_grad_()
            else:
                ewc_penalty(params, prev, fisher, ecda.lam).backward()
            if a.device == "cuda":
                torch.cuda.synchronize()
            ewc_t[kind].append(time.perf_counter() - t0)
    ewc_med = {k: statistics.median(v[5:]) for k, v in ewc_t.items()}
    load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median(t / base for t, base in zip(times[k], times["a"], strict=True)) for k in keys}
    head = (f"{desc}; device {a.device}, torch threads {torch.get_num_threads()}, batch {a.batch_size} x <= "
            f"{a.seq_len} tokens, |D_new| {a.n_train} ({steps_per_epoch} steps/epoch), |B_anchor| {len(anchors)}, "
            f"anchor rows/step: micro {micro}, full {full}; {a.rounds} rounds (+{a.warmup} warm-up), "
            f"load avg {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(head)
    print(f"{'variant':<48} {'median ms':>10} {'ratio med/med':>14} {'median ratio':>13}")
    for k in keys:
        name = VARIANTS[k]
        print(f"{k} {name:<46} {med[k] * 1e3:>10.1f} {med[k] / med['a']:>14.3f} {ratio[k]:>13.3f}")
    print(f"L_EWC alone over {len(params)} adapter tensors: FusedEWC.add_grad_ {ewc_med['fused'] * 1e3:.2f} ms, "
          f"ewc_penalty + backward {ewc_med['autograd'] * 1e3:.2f} ms (medians of {3 * a.rounds})")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{a.model}-{a.device}-bs{a.batch_size}-t{torch.get_num_threads()}.json"
    doc = {"model": desc, "device": a.device, "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "batch_size": a.batch_size, "seq_len": a.seq_len,
           "n_train": a.n_train, "steps_per_epoch": steps_per_epoch, "anchors": len(anchors),
           "anchor_rows_micro": micro, "anchor_rows_full": full, "rounds": a.rounds, "warmup": a.warmup,
           "load_avg_before": load_before, "load_avg_after": load_after, "wall_s": wall,
           "variants": {k: VARIANTS[k] for k in keys},
           "median_s": med, "ratio_of_medians": {k: med[k] / med["a"] for k in keys},
           "median_of_round_ratios": ratio, "ewc_alone_median_s": ewc_med, "adapter_tensors": len(params),
           "times_s": times}
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
