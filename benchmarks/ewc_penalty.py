"""Time of the EWC penalty (§3.3.3) with its backward pass on a SmolLM2-135M-shaped DoRA adapter (30 layers x 7
projections: lora_A, lora_B and the magnitude vector each, ~630 tensors): the per-tensor expression it replaced vs
compass.adapt.ewc_penalty's flat vectors. Prints both and their ratio from one run, on the CPU and on CUDA if
present.  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ewc_penalty.py
"""

from __future__ import annotations

import time

import torch

from compass.adapt import ewc_penalty

# SmolLM2-135M: hidden 576, intermediate 1536, 9 heads x 64 (3 KV heads), 30 layers
SHAPES = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
          "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}


def adapter(rank: int, device: str) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(0)
    params, prev, fisher = {}, {}, {}
    for layer in range(30):
        for mod, (out, inp) in SHAPES.items():
            for part, shape in (("lora_A", (rank, inp)), ("lora_B", (out, rank)), ("lora_magnitude_vector", (out,))):
                name = f"layers.{layer}.{mod}.{part}"
                t = torch.randn(shape, generator=g)
                params[name] = t.clone().to(device).requires_grad_(True)
                prev[name] = (t + 0.01 * torch.randn(shape, generator=g)).to(device)
                fisher[name] = torch.rand(shape, generator=g).to(device)
    return params, prev, fisher


def per_tensor(params: dict, prev: dict, fisher: dict, lam: float) -> torch.Tensor:
    terms = [(fisher[n] * (p - prev[n]) ** 2).sum() for n, p in params.items()]
    return 0.5 * lam * torch.stack(terms).sum()


def timed(fn, params, prev, fisher, device: str, reps: int) -> float:
    for _ in range(3):  # warm-up
        fn(params, prev, fisher, 2.0).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn(params, prev, fisher, 2.0).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main() -> None:
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        params, prev, fisher = adapter(8, device)
        a = float(per_tensor(params, prev, fisher, 2.0).detach())
        b = float(ewc_penalty(params, prev, fisher, 2.0).detach())
        old = timed(per_tensor, params, prev, fisher, device, 20)
        new = timed(ewc_penalty, params, prev, fisher, device, 20)
        print(f"{device}: {len(params)} tensors; per-tensor {old * 1e3:.2f} ms, flat {new * 1e3:.2f} ms, "
              f"ratio {old / new:.1f}x (penalties {a:.6g} vs {b:.6g})")


if __name__ == "__main__":
    main()
