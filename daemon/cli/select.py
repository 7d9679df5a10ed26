"""``compass select``: pick S ⊂ D_aux for a target language (§3.2) and write D_t ∪ S with a report.

    compass select --target it --train D_t.jsonl --pool D_aux.jsonl --eval E_t.jsonl --out DIR
                   [--budget 0.8] [--method compass] [--clusterer kmeans] [--k-clusters N] [--seed 0]
                   [--embeddings DIR] [--config service.yaml]

``--embeddings DIR`` takes precomputed ``train.npy``, ``pool.npy``, ``eval.npy`` (float32, row i embeds record i
of the matching file), so no embedder is loaded; otherwise the configured embedder embeds the texts (cached).

Clusters: ``compass.select.fit_selection_clusters`` on D_t ∪ E_t ∪ D_aux (§3.1.1) with App. E's model selection
(kmeans: K 10..120 step 5 by silhouette, 10 k-means++ seeds per K; ``--k-clusters`` fixes K instead); its
summary (chosen model, noise share, seconds) is report.json's extra.clustering.

DIR receives:
  selected.jsonl   D_t first, whole and in order, then each selected pool record once; every record carries
                   meta.compass = {origin: "target" | "aux", cluster (-1 = noise), score (eq. 1 at selection,
                   null for D_t and unscored methods), source_lang, count (selections; a trainer repeats an aux
                   record ``count`` times, > 1 only when a cluster ran short of candidates)}
  report.json, clusters.png, source_languages.png   see compass/select/report.py
Errors (missing file, misaligned .npy, unknown method or clusterer) print one message and exit 2.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import typer

CLUSTERERS = ("kmeans", "hdbscan", "agglomerative", "butina")
FIXED_K = ("kmeans", "agglomerative")  # the clusterers with an n_clusters parameter
EMBEDDING_FILES = {"train": "train.npy", "pool": "pool.npy", "eval": "eval.npy"}
SELECTED_FILE = "selected.jsonl"


def select(
    target: str = typer.Option(..., "--target", "-t", help="target language code, e.g. it or sw"),
    train: Path = typer.Option(..., "--train", help="D_t: the target's training records (.jsonl/.parquet)"),
    pool: Path = typer.Option(..., "--pool", help="D_aux: the auxiliary pool (.jsonl/.parquet)"),
    eval_: Path = typer.Option(..., "--eval", help="E_t: records that stand for the usage distribution"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (created)"),
    budget: float = typer.Option(0.8, "--budget", "-B", help="B: select round(B * |D_t|) pool rows"),
    method: str = typer.Option(
        "compass",
        "--method",
        "-m",
        help="compass, compass-d, no-cluster-weights, no-instance-weights, target, random, all or langsim",
    ),  # fmt: skip
    clusterer: str = typer.Option("kmeans", "--clusterer", help="kmeans, hdbscan, agglomerative or butina"),
    k_clusters: int | None = typer.Option(
        None, "--k-clusters", "-k", min=2, help="kmeans/agglomerative: fixed K, skips the silhouette search"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of clustering and sampling"),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="directory with train.npy, pool.npy, eval.npy aligned with the record files"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="service config YAML for the embedder (default: configs/default.yaml)"
    ),
    tau_sim: float | None = typer.Option(
        None, "--tau-sim", help="neighbour threshold of the diversity penalty (default: 0.90 calibrated per embedder)"
    ),
    delta: float = typer.Option(0.25, "--delta", help="score penalty per picked neighbour (§3.2.3); 0 turns it off"),
    boundary: str = typer.Option("near", "--boundary", help="s_boundary orientation: near (the text) or margin"),
) -> None:
    """Select auxiliary data for TARGET and write D_t ∪ S, report.json and plots into OUT."""
    from compass.errors import CompassError

    try:
        run_select(target, train, pool, eval_, out, budget, method, clusterer, k_clusters, seed, embeddings, config,
                   tau_sim=tau_sim, delta=delta, boundary=boundary)
    except CompassError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    from compass.select import SelectionError

    if value not in choices:
        raise SelectionError(f"{name}: got {value!r}; use one of {', '.join(choices)}")


def _load_embeddings(directory: Path, sizes: dict[str, int], files: dict[str, Path]) -> dict[str, Any]:
    import numpy as np

    from compass.errors import DataError

    if not directory.is_dir():
        raise DataError(
            str(directory), ["--embeddings: not a directory; pass one holding train.npy, pool.npy, eval.npy"]
        )
    arrays, problems = {}, []
    for part, name in EMBEDDING_FILES.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: file not found; save the embeddings of {files[part]} there (np.save)")
            continue
        X = np.load(path, allow_pickle=False)  # no pickle: a .npy from elsewhere must not run code
        if X.ndim != 2:
            problems.append(f"{name}: shape {X.shape}; expected a 2-d array (rows, dim)")
        elif X.shape[0] != sizes[part]:
            problems.append(
                f"{name}: {X.shape[0]} rows but {files[part]} has {sizes[part]} records; "
                f"expected {sizes[part]} rows, row i embedding record i"
            )
        arrays[part] = X
    dims = {name: X.shape[1] for name, X in arrays.items() if X.ndim == 2}
    if not problems and len(set(dims.values())) > 1:
        problems.append(f"embedding dimensions differ: {dims}; embed all three files with the same model")
    if problems:
        raise DataError(str(directory), problems)
    return {part: np.ascontiguousarray(X, dtype=np.float32) for part, X in arrays.items()}


def _embed(texts_by_part: dict[str, list[str]], config: Path | None) -> dict[str, Any]:
    import numpy as np
    from tqdm import tqdm

    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    cfg = load_service_config(config).embedder
    embedder = make_embedder(cfg)
    out = {}
    try:
        total = sum(len(t) for t in texts_by_part.values())
        with tqdm(total=total, unit="text", desc="embedding", file=sys.stderr) as bar:
            for part, texts in texts_by_part.items():
                chunks = []
                for start in range(0, len(texts), cfg.batch_size):
                    chunks.append(embedder.encode(texts[start : start + cfg.batch_size]))
                    bar.update(len(chunks[-1]))
                out[part] = np.concatenate(chunks).astype(np.float32, copy=False)
    finally:
        embedder.close()
    return out


def _annotated(record: Any, origin: str, cluster: int, score: float | None, count: int) -> Any:
    info = {
        "origin": origin,
        "cluster": int(cluster),
        "score": None if score is None or not math.isfinite(score) else float(score),
        "source_lang": record.lang,
        "count": int(count),
    }
    return dataclasses.replace(record, meta={**record.meta, "compass": info})


def run_select(
    target: str,
    train: Path,
    pool: Path,
    eval_: Path,
    out: Path,
    budget: float = 0.8,
    method: str = "compass",
    clusterer: str = "kmeans",
    k_clusters: int | None = None,
    seed: int = 0,
    embeddings: Path | None = None,
    config: Path | None = None,
    *,
    tau_sim: float | None = None,
    delta: float = 0.25,
    boundary: str = "near",
) -> dict[str, Any]:
    """The command's work; raises CompassError subclasses on bad input. Returns the report dict."""
    from tqdm import tqdm

    from compass import langcodes
    from compass.data import read_records, write_records
    from compass.errors import DataError
    from compass.select import (
        METHODS,
        ClusteringConfig,
        SelectionConfig,
        SelectionError,
        fit_selection_clusters,
        select,
        total_budget,
    )
    from compass.select.report import build_report, write_report

    _check_choice("--method", method, METHODS)
    _check_choice("--clusterer", clusterer, CLUSTERERS)
    try:
        target = langcodes.normalize(target)
    except ValueError as e:
        raise SelectionError(f"--target: {e}") from None
    cfg = SelectionConfig(budget=budget, method=method, seed=seed, tau_sim=tau_sim, delta=delta,
                          boundary=boundary)  # type: ignore[arg-type]  # validates each value
    if k_clusters is not None and clusterer not in FIXED_K:
        raise SelectionError(
            f"--k-clusters: got {k_clusters} with --clusterer {clusterer}; it applies to {' and '.join(FIXED_K)} only"
        )
    params: dict[str, Any] = {"n_clusters": k_clusters} if k_clusters is not None else {}
    clustering = ClusteringConfig(clusterer, params, seed)  # App. E's model selection unless K is fixed

    started = time.perf_counter()
    files = {"train": train, "pool": pool, "eval": eval_}
    missing = [f"--{part}: {path}: file not found" for part, path in files.items() if not path.is_file()]
    if missing:
        raise DataError("compass select", [*missing, "pass existing .jsonl/.parquet record files"])
    records = {part: read_records(path) for part, path in files.items()}
    for part in ("train", "eval"):
        if not records[part]:
            raise DataError(str(files[part]), [f"--{part}: the file holds no records; D_t and E_t must be non-empty"])
    sizes = {part: len(r) for part, r in records.items()}
    if embeddings is not None:
        X = _load_embeddings(embeddings, sizes, files)
    else:
        X = _embed({part: [r.text for r in recs] for part, recs in records.items()}, config)

    n_rows = sum(sizes.values())
    typer.echo(f"clustering {n_rows} rows with {clusterer}{f' (K={k_clusters})' if k_clusters else ''} ...", err=True)
    # §3.1.1: one clustering of D_t ∪ E_t ∪ D_aux for this target.
    clusters = fit_selection_clusters(X["train"], X["eval"], X["pool"], clustering)
    t_cluster = clusters.summary["seconds"]
    parts = [clusters.target, clusters.window, clusters.pool]
    centroids = clusters.centroids

    pool_langs = [r.lang for r in records["pool"]]
    t_select = time.perf_counter()
    with tqdm(desc=f"selecting ({method})", unit="cluster", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        selection = select(
            X["train"], X["eval"], X["pool"], cfg,
            labels=(parts[0], parts[1], parts[2], centroids),
            pool_langs=pool_langs, target_lang=target, progress=progress,
        )  # fmt: skip
    t_select = time.perf_counter() - t_select

    out.mkdir(parents=True, exist_ok=True)
    annotated = [
        _annotated(r, "target", int(label), None, 1)
        for r, label in zip(records["train"], parts[0].tolist(), strict=True)
    ]
    for i, count, score in zip(selection.pool_indices.tolist(), selection.counts.tolist(), selection.scores.tolist(),
                               strict=True):  # fmt: skip
        annotated.append(_annotated(records["pool"][i], "aux", int(parts[2][i]), score, count))
    written = write_records(annotated, out / SELECTED_FILE)

    extra = {
        "inputs": {part: str(path) for part, path in files.items()},
        "embeddings": str(embeddings) if embeddings else "embedder",
        "clusterer": clusterer,
        "k_clusters": k_clusters,
        "clustering": clusters.summary,
        "expected_selected": total_budget(budget, sizes["train"]) if method not in ("all", "target") else None,
        "seconds": {"clustering": t_cluster, "selection": t_select, "total": time.perf_counter() - started},
    }
    report = build_report(selection, pool_langs, target, extra=extra)
    paths = write_report(report, out)

    js = report["js"]
    typer.echo(f"D_t {sizes['train']} + S {selection.total} ({len(selection.pool_indices)} distinct) -> "
               f"{out / SELECTED_FILE} ({written} records)")  # fmt: skip
    typer.echo(f"  clusters {report['summary']['n_clusters']}, shortfall in {report['summary']['shortfall_clusters']}")
    typer.echo(
        f"  JS(P_eval||P_train) {js['eval_vs_train']:.4f} -> JS(P_eval||P_train+S) {js['eval_vs_train_plus_s']:.4f}"
    )
    top = ", ".join(f"{r['lang']} {r['count']}" for r in report["source_languages"][:8])
    typer.echo(f"  source languages: {top or '(none)'}")
    typer.echo(f"  report {paths['report']}, plots {paths['clusters_plot'].name}, {paths['languages_plot'].name}")
    return report
