"""``compass expand``: serve a language no adapter serves well by expanding the base model (issue 18, PARAM-Delta).

Methods, all with the same CPT data, batches and step budget:
  paramdelta       upcycle θ_base into per-language MLP experts, CPT only the new languages' experts, graft the
                   MoE-expanded Δ_post = θ_post − θ_base (compass.expand);
  dense-cpt        CPT of every parameter of the dense θ_base (no alignment transfer);
  task-arithmetic  dense CPT, then + Δ_post;
  ties             TIES merge of the dense CPT model and θ_post (both as task vectors of θ_base).
Every input that cannot work is refused before any training. Rerunning a killed command continues from its last
checkpoint (``<out>/checkpoints``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

METHODS = ("paramdelta", "dense-cpt", "task-arithmetic", "ties")
_NEEDS_POST = frozenset({"paramdelta", "task-arithmetic", "ties"})
_CACHE = Path(os.environ.get("COMPASS_MODEL_CACHE", Path.home() / ".cache" / "compass" / "models"))


def expand(
    base: str = typer.Option(..., "--base", help="θ_base: a local model directory or 'smollm2' (packaged)"),
    post: str | None = typer.Option(None, "--post", help="θ_post: a model directory, a PEFT adapter directory "
                                    "(adapter_config.json; merged onto θ_base) or 'smollm2'; not needed by "
                                    "dense-cpt"),
    langs: str = typer.Option(..., "--langs", help="languages to expand, comma-separated, e.g. sw,tl"),
    data: list[str] = typer.Option(..., "--data", help="a directory of <lang>.jsonl records files, or lang=path "
                                   "(repeat the option)"),
    method: str = typer.Option("paramdelta", "--method", help=" | ".join(METHODS)),
    steps: int = typer.Option(..., "--steps", min=1, help="CPT optimizer steps (one language per step)"),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=1, help="checkpoint every N steps"),
    out: Path = typer.Option(..., "--out", help="output directory (model/, report.json, checkpoints/)"),
    eval_langs: str = typer.Option("", "--eval-langs", help="extra keys of --data evaluated only (preservation), "
                                   "e.g. en,es"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="AdamW learning rate of CPT"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="texts per CPT step"),
    max_length: int = typer.Option(128, "--max-length", min=2, help="tokens per text (truncated)"),
    heldout: float = typer.Option(0.1, "--heldout", help="share of each trained language held out for evaluation"),
    scale: float = typer.Option(1.0, "--scale", help="λ of Δ_post (paramdelta, task-arithmetic)"),
    density: float = typer.Option(0.2, "--density", help="TIES: share of each task vector kept"),
    seed: int = typer.Option(0, "--seed", help="data split, batch order and init seed"),
) -> None:
    """Expand a model to new languages (PARAM-Delta or a dense baseline); writes <out>/model and <out>/report.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns) as bar:
        tasks: dict[str, Any] = {}

        def progress(ev: dict) -> None:
            phase = ev["phase"]
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=ev.get("total"), info="")
            bar.update(tasks[phase], completed=ev.get("done", 0), total=ev.get("total"), info=ev.get("info", ""))

        report = run_expand(base=base, post=post, langs=split_list(langs), data=data, method=method, steps=steps,
                            checkpoint_every=checkpoint_every, out=out, eval_langs=split_list(eval_langs),
                            device=device, lr=lr, batch_size=batch_size, max_length=max_length, heldout=heldout,
                            scale=scale, density=density, seed=seed, progress=progress)
    typer.echo(json.dumps({k: report[k] for k in ("method", "steps", "nll", "parameters", "flops_per_token")},
                          indent=2))


def split_list(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def packaged_dir(name: str) -> Path:
    """A fp32 ``save_pretrained`` copy of a packaged GGUF model (``smollm2``), written on first use under
    ~/.cache/compass/models: loading it takes a second instead of dequantising the GGUF each time."""
    from compass.adapt import load_base, load_tokenizer, packaged_model

    d, gguf = packaged_model(name)
    cached = _CACHE / f"{name}-fp32"
    if (cached / "config.json").is_file():
        return cached
    tmp = _CACHE / f".{name}-fp32.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model = load_base(d, gguf_file=gguf)
    model.save_pretrained(tmp)
    load_tokenizer(d, gguf_file=gguf).save_pretrained(tmp)
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(tmp, cached)
    return cached


def model_dir(name: str) -> Path:
    """A local model (or adapter) directory for ``--base`` / ``--post``."""
    if name == "smollm2":
        return packaged_dir(name)
    return Path(name)


def _fail(msg: str) -> None:
    from compass.expand import ExpandError

    raise ExpandError(msg)


def run_expand(
    *, base: str, post: str | None, langs: Sequence[str], data: Sequence[str], method: str, steps: int,
    checkpoint_every: int | None, out: Path, eval_langs: Sequence[str] = (), device: str = "cpu", lr: float = 1e-4,
    batch_size: int = 8, max_length: int = 128, heldout: float = 0.1, scale: float = 1.0, density: float = 0.2,
    seed: int = 0, progress: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """The whole ``compass expand`` run; returns the report (also written to ``<out>/report.json``)."""
    import torch

    from compass.adapt import load_base, load_tokenizer, resolve_device
    from compass.expand import (
        ExpandError,
        active_parameters,
        check_compatible,
        expand_delta,
        graft,
        param_delta,
        post_state_from_peft,
        save_expanded,
        task_arithmetic,
        ties_merge,
        total_parameters,
        upcycle,
    )
    from compass.expand.cpt import continue_pretraining
    from compass.expand.data import load_texts, nll_by_lang, split_heldout

    emit = progress or (lambda ev: None)
    t_start = time.perf_counter()
    # --- every check that needs no model, before anything heavy
    if method not in METHODS:
        _fail(f"--method must be one of {list(METHODS)}; got {method!r}; fix: pick one of them")
    if not langs:
        _fail("--langs is empty; fix: name the languages to expand, e.g. --langs sw,tl")
    if method in _NEEDS_POST and not post:
        _fail(f"--post is needed by --method {method} (Δ_post = θ_post − θ_base); fix: pass the post-trained "
              "model or PEFT adapter directory, or use --method dense-cpt")
    if not 0 < heldout < 1:
        _fail(f"--heldout must be in (0, 1); got {heldout}; fix: e.g. 0.1")
    texts = load_texts(data, keys=[*langs, *eval_langs])
    missing = [k for k in [*langs, *eval_langs] if not texts.get(k)]
    if missing:
        _fail(f"--data has no texts for {missing} (from --langs/--eval-langs); fix: add <lang>.jsonl files for them "
              f"to the --data directory or lang=path pairs, or drop them from --langs/--eval-langs")
    train, held = split_heldout({k: texts[k] for k in langs}, share=heldout, seed=seed)
    thin = [k for k in langs if not held[k] or not train[k]]
    if thin:
        _fail(f"--langs {thin} need at least 2 texts each (one to train, one held out); fix: add data")
    evalsets = {k: held[k] for k in langs}
    evalsets.update({k: texts[k] for k in eval_langs if k not in langs})  # evaluation-only: every text is unseen
    dev = resolve_device(device)

    # --- models: load θ_base, θ_post and compute Δ_post (shape/architecture errors surface here, before CPT)
    emit({"phase": "load", "done": 0, "total": 2, "info": "θ_base"})
    t0 = time.perf_counter()
    base_dir = model_dir(base)
    model = load_base(base_dir, device=dev)
    tokenizer = load_tokenizer(base_dir)
    base_state = post_state = delta = None
    if method in _NEEDS_POST:
        assert post is not None
        emit({"phase": "load", "done": 1, "total": 2, "info": "θ_post"})
        post_dir = model_dir(post)
        try:
            if (post_dir / "adapter_config.json").is_file():
                post_state = post_state_from_peft(model, post_dir)
            else:
                post_model = load_base(post_dir, device=dev)
                check_compatible(model, post_model)
                post_state = {k: v.detach() for k, v in post_model.state_dict().items()}
                del post_model
            base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            delta = param_delta(base_state, post_state)
        except ExpandError as e:
            raise ExpandError(f"--post {post} does not fit --base {base}: {e}") from None
        if method != "ties":  # only TIES needs the full states; free them (a SmolLM2 state is ~0.5 GB)
            post_state = base_state = None
    emit({"phase": "load", "done": 2, "total": 2, "info": ""})
    t_load = time.perf_counter() - t0

    spec = upcycle(model, langs) if method == "paramdelta" else None

    # --- CPT, checkpointed; rerunning the command resumes
    def cpt_progress(ev: dict) -> None:
        emit({"phase": f"CPT ({'experts' if spec else 'dense'})", "done": ev["step"], "total": ev["total_steps"],
              "info": f"{ev['lang']} loss {ev['loss']:.3f}"})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cpt = continue_pretraining(model, train, tokenizer, steps=steps, lr=lr, batch_size=batch_size,
                               max_length=max_length, moe=spec is not None, seed=seed,
                               checkpoint_dir=out / "checkpoints" if checkpoint_every else None,
                               checkpoint_every=checkpoint_every, progress=cpt_progress)

    # --- alignment transfer
    t0 = time.perf_counter()
    emit({"phase": "merge", "done": 0, "total": 1, "info": method})
    with torch.no_grad():
        if method == "paramdelta":
            graft(model, expand_delta(delta, spec), scale=scale)
        elif method == "task-arithmetic":
            model.load_state_dict(task_arithmetic(model.state_dict(), delta, scale=scale))
        elif method == "ties":
            merged = ties_merge(base_state, [model.state_dict(), post_state], density=density)
            model.load_state_dict(merged)
    delta = post_state = base_state = None
    emit({"phase": "merge", "done": 1, "total": 1, "info": ""})
    t_merge = time.perf_counter() - t0

    # --- evaluation: held-out NLL per key
    t0 = time.perf_counter()
    nll: dict[str, float] = {}
    for i, (key, ts) in enumerate(evalsets.items()):
        emit({"phase": "evaluate", "done": i, "total": len(evalsets), "info": key})
        nll.update(nll_by_lang(model, {key: ts}, tokenizer, moe=spec is not None, batch_size=batch_size,
                               max_length=max_length))
    emit({"phase": "evaluate", "done": len(evalsets), "total": len(evalsets), "info": ""})
    t_eval = time.perf_counter() - t0

    # --- parameters and the model
    total = total_parameters(model)
    active = active_parameters(model, spec) if spec is not None else total
    t0 = time.perf_counter()
    emit({"phase": "save", "done": 0, "total": 1, "info": str(out / "model")})
    settings = {"base": base, "post": post, "langs": list(langs), "eval_langs": list(eval_langs), "lr": lr,
                "batch_size": batch_size, "max_length": max_length, "heldout": heldout, "scale": scale,
                "density": density, "seed": seed, "device": str(dev)}
    model_out = out / "model"
    shutil.rmtree(model_out, ignore_errors=True)
    if spec is not None:
        save_expanded(model, spec, model_out, manifest_extra={"steps": cpt.steps, **settings}, tokenizer=tokenizer,
                      method=method, base_id=base, post_id=post)
    else:
        model.save_pretrained(model_out, safe_serialization=True)
        tokenizer.save_pretrained(model_out)
    emit({"phase": "save", "done": 1, "total": 1, "info": ""})
    t_save = time.perf_counter() - t0
    report = {
        "method": method,
        "steps": cpt.steps,
        "nll": nll,
        "n_eval_texts": {k: len(v) for k, v in evalsets.items()},
        "n_train_texts": {k: len(v) for k, v in train.items()},
        "parameters": {"total": total, "active_per_token": active},
        "flops_per_token": 2 * active,
        "cpt": {"seconds_per_step": cpt.seconds_per_step, "resumed_from": cpt.resumed_from,
                "last_loss": {k: (v[-1] if v else None) for k, v in cpt.losses.items()}},
        "seconds": {"load": t_load, "cpt": cpt.seconds_per_step * (cpt.steps - cpt.resumed_from), "merge": t_merge,
                    "eval": t_eval, "save": t_save, "total": time.perf_counter() - t_start},
        "settings": settings,
    }
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out / "report.json")
    return report

