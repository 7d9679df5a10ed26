"""Continued pre-training (CPT) on raw text, for an upcycled MoE (only the new languages' experts train) or for the
dense baseline (every parameter trains) — the same batches and step budget for both, so the comparison is fair.

Batches: one language per step, languages in a seeded round-robin order; each language walks through its texts in
seeded per-epoch permutations. The batch of step ``s`` is a pure function of (texts, seed, batch_size, s), so a
resumed run needs no sampler state and sees exactly the batches the uninterrupted run would have seen.

Checkpoints (no pickle): ``<checkpoint_dir>/ckpt-<step>/`` holds ``state.safetensors`` (trainable parameters, AdamW
moments, RNG states) and ``state.json`` (step, losses, optimizer param groups, the run's fingerprint). A checkpoint is
written into ``ckpt.tmp`` and renamed into place, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compass.expand.errors import ExpandError
from compass.expand.upcycle import freeze_all_but, language

_STATE_JSON = "state.json"
_STATE_TENSORS = "state.safetensors"


@dataclass
class CPTResult:
    """``steps`` optimizer steps done in all (resumed ones included); ``losses[lang]`` the training loss of each of
    that language's steps, in order; ``seconds_per_step`` over the steps this call ran (0.0 when it ran none)."""

    steps: int
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds_per_step: float = 0.0
    resumed_from: int = 0  # the checkpoint step this call started from (0: a fresh run)
    stopped: bool = False  # should_stop ended the run before ``steps``


def language_order(langs: Sequence[str], seed: int) -> list[str]:
    """The seeded round-robin order of languages: step ``s`` trains ``order[s % len(order)]``."""
    g = torch.Generator().manual_seed(seed)
    ordered = sorted(langs)
    return [ordered[i] for i in torch.randperm(len(ordered), generator=g).tolist()]


def batch_texts(texts: Sequence[str], k: int, batch_size: int, seed: int, lang: str) -> list[str]:
    """The ``k``-th batch (0-based) of one language: consecutive slices of seeded per-epoch permutations."""
    n = len(texts)
    out: list[str] = []
    pos = k * batch_size
    while len(out) < batch_size:
        epoch, i = divmod(pos, n)
        # one generator per (seed, language, epoch): any batch can be rebuilt without replaying earlier ones
        g = torch.Generator().manual_seed(_mix(seed, lang, epoch))
        perm = torch.randperm(n, generator=g).tolist()
        take = min(batch_size - len(out), n - i)
        out.extend(texts[j] for j in perm[i:i + take])
        pos += take
    return out


def _mix(seed: int, lang: str, epoch: int) -> int:
    h = seed * 1_000_003 + epoch * 7919
    for ch in lang:
        h = (h * 31 + ord(ch)) % (2**61 - 1)
    return h


def encode(tokenizer: Any, texts: Sequence[str], max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (padding masked out by the attention mask, not by the pad id, which may
    equal EOS)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    padding_side="right", return_tensors="pt")
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def continue_pretraining(
    model: nn.Module,
    texts_by_lang: Mapping[str, Sequence[str]],
    tokenizer: Any,
    *,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 8,
    max_length: int = 128,
    moe: bool,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> CPTResult:
    """Train ``model`` in place for ``steps`` AdamW steps on ``texts_by_lang`` (language -> raw texts).

    ``moe=True``: ``model`` is upcycled and every language of ``texts_by_lang`` has an expert; only those experts
    train and each batch is routed to its language's expert. ``moe=False``: every parameter trains.
    ``checkpoint_dir`` + ``checkpoint_every``: a checkpoint every N steps (and when ``should_stop(step)`` says so);
    with ``resume`` the latest checkpoint there is loaded first (its fingerprint must match this run's settings).
    ``progress`` gets ``{"event": "step", "step", "total_steps", "lang", "loss"}`` after each step.
    """
    _check_args(texts_by_lang, steps, lr, batch_size, max_length, checkpoint_every)
    langs = language_order(list(texts_by_lang), seed)
    if moe:
        freeze_all_but(model, langs)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ExpandError(f"continue_pretraining found no trainable parameter (moe={moe}, languages {langs}); "
                          "fix: with moe=True upcycle the model with these languages first")
    device = next(iter(params.values())).device
    opt = torch.optim.AdamW(list(params.values()), lr=lr)
    fingerprint = {"moe": moe, "langs": langs, "lr": lr, "batch_size": batch_size, "max_length": max_length,
                   "seed": seed, "params": list(params), "n_texts": {k: len(texts_by_lang[k]) for k in langs}}
    losses: dict[str, list[float]] = {k: [] for k in langs}
    start = 0
    if checkpoint_dir is not None and resume:
        state = _load_latest(Path(checkpoint_dir))
        if state is not None:
            start = _restore(state, params, opt, fingerprint, losses, Path(checkpoint_dir))
    if start == 0:  # dropout (if any) draws from the global RNG; a resumed run restores it from the checkpoint
        torch.manual_seed(seed)
    model.train()
    step, ran, t0 = start, 0, time.perf_counter()
    stopped = False
    while step < steps:
        lang = langs[step % len(langs)]
        k = step // len(langs)  # this language's k-th batch
        batch = encode(tokenizer, batch_texts(texts_by_lang[lang], k, batch_size, seed, lang), max_length, device)
        opt.zero_grad(set_to_none=True)
        if moe:
            with language(model, lang):
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        step += 1
        ran += 1
        losses[lang].append(float(loss.detach()))
        if progress is not None:
            progress({"event": "step", "step": step, "total_steps": steps, "lang": lang, "loss": losses[lang][-1]})
        stop = should_stop is not None and should_stop(step)
        if checkpoint_dir is not None and checkpoint_every and (step % checkpoint_every == 0 or stop):
            _save(Path(checkpoint_dir), step, params, opt, fingerprint, losses)
        if stop and step < steps:
            stopped = True
            break
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spent = time.perf_counter() - t0
    return CPTResult(step, losses, spent / ran if ran else 0.0, resumed_from=start, stopped=stopped)


def _check_args(texts_by_lang: Mapping[str, Sequence[str]], steps: int, lr: float, batch_size: int,
                max_length: int, checkpoint_every: int | None) -> None:
    if not texts_by_lang:
        raise ExpandError("continue_pretraining: texts_by_lang is empty; fix: pass at least one language's texts")
    empty = sorted(k for k, v in texts_by_lang.items() if not v)
    if empty:
        raise ExpandError(f"continue_pretraining: no texts for {empty}; fix: add data for them or drop them")
    for name, value, ok in (("steps", steps, isinstance(steps, int) and steps >= 0),
                            ("lr", lr, lr > 0), ("batch_size", batch_size, batch_size >= 1),
                            ("max_length", max_length, max_length >= 2),
                            ("checkpoint_every", checkpoint_every, checkpoint_every is None or checkpoint_every >= 1)):
        if not ok:
            raise ExpandError(f"continue_pretraining: {name} must be positive (steps >= 0, max_length >= 2); "
                              f"got {value!r}")


def _save(root: Path, step: int, params: Mapping[str, nn.Parameter], opt: torch.optim.Optimizer,
          fingerprint: dict, losses: Mapping[str, list[float]]) -> Path:
    """Write ``ckpt.tmp`` then rename it to ``ckpt-<step>``; older checkpoints go once the new one is in place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "ckpt.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in params.items()}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{i}.{key}"] = t.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / _STATE_TENSORS))
    doc = {"step": step, "losses": losses, "param_groups": sd["param_groups"], "fingerprint": fingerprint}
    (tmp / _STATE_JSON).write_text(json.dumps(doc), encoding="utf-8")
    final = root / f"ckpt-{step:08d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in root.glob("ckpt-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _load_latest(root: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    dirs = sorted(d for d in root.glob("ckpt-*") if d.is_dir() and (d / _STATE_JSON).is_file())
    if not dirs:
        return None
    d = dirs[-1]
    try:
        doc = json.loads((d / _STATE_JSON).read_text(encoding="utf-8"))
        return doc, load_file(str(d / _STATE_TENSORS))
    except (OSError, ValueError) as e:
        raise ExpandError(f"checkpoint {d} is unreadable ({e}); fix: delete {root} to start afresh") from None


def _restore(state: tuple[dict, dict[str, torch.Tensor]], params: Mapping[str, nn.Parameter],
             opt: torch.optim.Optimizer, fingerprint: dict, losses: dict[str, list[float]], root: Path) -> int:
    doc, tensors = state
    saved = doc.get("fingerprint", {})
    diff = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
    if diff:
        shown = {k: (saved.get(k), fingerprint[k]) for k in diff if k != "params"}
        raise ExpandError(f"checkpoint in {root} was written by a run with other settings {diff} "
                          f"(saved, now): {shown}; fix: rerun with the same settings, or delete {root} to start "
                          "afresh")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param.{n}"].to(p.device, p.dtype))
    device = next(iter(params.values())).device
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = t if name == "step" else t.to(device)
    opt.load_state_dict({"state": opt_state, "param_groups": doc["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    for k, v in doc.get("losses", {}).items():
        losses[k] = list(v)
    return int(doc["step"])
