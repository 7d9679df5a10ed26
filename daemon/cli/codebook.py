"""``compass codebook build|list|show``: fit a cluster codebook on records, publish it, inspect the versions.

``build`` also labels each cluster (c-TF-IDF terms, representative texts unless ``codebook.store_examples`` is
false) and stores the labels with the codebook (``labels.json``). ``build --from-windows`` is the worker's
``recluster`` job by hand: re-fit on the recent window queries + pool, re-reference every language, one switch."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import typer

app = typer.Typer(help="Versioned cluster codebooks that the streaming monitor assigns queries with.",
                  no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")


class ClustererName(StrEnum):
    kmeans = "kmeans"
    hdbscan = "hdbscan"


def _store(config: Path | None, need_redis: bool):
    from infra.clients import redis_client
    from infra.codebook import CodebookStore
    from infra.errors import ServiceUnavailable
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    try:
        client = redis_client(cfg.redis)
    except ServiceUnavailable:
        if need_redis:
            raise
        client = None  # list/show still work from the files; nothing is marked current
    return cfg, CodebookStore(cfg.consumer.codebook_dir, client, cfg.redis.key_prefix)


@app.command()
def build(
    records: Path | None = typer.Argument(
        None, help="records file (.jsonl, .jsonl.gz or .parquet) with id, lang and text; omit with --from-windows"
    ),
    from_windows: bool = typer.Option(
        False, "--from-windows", help="re-fit on the enabled languages' recent window queries + worker.pool and "
        "re-reference every language (what a recluster job does, daemon.recluster_* settings)",
    ),
    clusterer: ClustererName = typer.Option(ClustererName.kmeans, "--clusterer", help="kmeans or hdbscan"),
    k: int | None = typer.Option(
        None, "--k", min=2, help="number of clusters (kmeans; default: chosen by silhouette over k_range)"
    ),
    seed: int = typer.Option(0, "--seed", help="random seed of the fit"),
    lang: list[str] | None = typer.Option(
        None, "--lang", "-l", help="fit on these languages only and scope the codebook to them (repeatable)"
    ),
    languages: Path | None = typer.Option(
        None, "--languages", help="with --from-windows: languages YAML (default: configs/languages.yaml)"
    ),
    config: Path | None = _CONFIG,
) -> None:
    """Embed the records' texts, fit a clusterer, publish it as the current codebook and print its version."""
    if from_windows:
        if records is not None or lang:
            raise typer.BadParameter("--from-windows fits on the windows of every enabled language: drop RECORDS "
                                     "and --lang (the daemon.recluster_* settings choose clusterer, K and sizes)")
        _from_windows(config, languages)
        return
    if records is None:
        raise typer.BadParameter("give a RECORDS file, or --from-windows to re-fit on the recent window queries")
    import numpy as np
    from tqdm import tqdm

    from compass import langcodes
    from compass.cluster.refit import fit_codebook
    from compass.data import read_records
    from compass.errors import DataError
    from infra.embedders import make_embedder

    if k is not None and clusterer is not ClustererName.kmeans:
        raise typer.BadParameter(f"--k {k} applies to kmeans only; hdbscan finds the number of clusters itself")
    cfg, store = _store(config, need_redis=True)
    rows = read_records(records)
    scope = sorted({langcodes.normalize(code) for code in lang}) if lang else None
    if scope:
        rows = [r for r in rows if r.lang in scope]
    if len(rows) < 2:
        where = f" in languages {scope}" if scope else ""
        raise DataError(str(records), [f"{len(rows)} record(s){where}; a codebook needs at least 2 texts to fit"])

    texts = [r.text for r in rows]
    embedder = make_embedder(cfg.embedder)
    parts = []
    try:
        with tqdm(total=len(texts), unit="text", desc="embedding", file=sys.stderr) as bar:
            for start in range(0, len(texts), cfg.embedder.batch_size):
                chunk = texts[start : start + cfg.embedder.batch_size]
                parts.append(embedder.encode(chunk))
                bar.update(len(chunk))
    finally:
        embedder.close()
    X = np.concatenate(parts).astype(np.float32, copy=False)

    typer.echo(f"fitting {clusterer.value} on {len(X)} vectors (dim {X.shape[1]}) ...", err=True)
    cb = cfg.codebook
    fit = fit_codebook(texts, X, clusterer.value, k=k, seed=seed, store_examples=cb.store_examples,
                       min_docs=cb.label_min_docs, n_terms=cb.label_terms, n_examples=cb.examples)
    codebook = store.publish(fit.clusterer, embedder.model_id, languages=scope, X_fit=X,  # X_fit: far share
                             labels=fit.named)

    typer.echo(f"published codebook {codebook.version}", err=True)
    typer.echo(f"  {clusterer.value}: {codebook.n_clusters} clusters + noise bucket, {fit.n_noise} of {len(X)} "
               f"fit points noise; model {codebook.model_id}", err=True)
    far = codebook.calibrated_distance(cfg.daemon.stale_distance_quantile)
    if far is not None:
        typer.echo(f"  'far' (stale clusters): cosine distance > {far:.4f} from every centroid "
                   f"(quantile {cfg.daemon.stale_distance_quantile} of the fit points)", err=True)
    for row in fit.named["clusters"][:20]:
        typer.echo(f"  cluster {row['cluster']:>3} ({row['size']} texts): {row['label'] or '-'}", err=True)
    typer.echo(f"  {store.root / codebook.version}; current: {store.current_version()}", err=True)
    typer.echo(codebook.version)  # stdout: the version alone, for scripts


def _from_windows(config: Path | None, languages: Path | None) -> None:
    """``build --from-windows``: the worker's re-fit in process (daemon/worker/recluster.py), under its lease."""
    import os
    import socket
    import time

    from compass.languages import load_languages
    from daemon.worker.heartbeat import Heartbeat
    from daemon.worker.pipeline import JobContext
    from daemon.worker.recluster import recluster, recluster_lease
    from infra.embedders import make_embedder

    cfg, store = _store(config, need_redis=True)
    embedder = make_embedder(cfg.embedder)
    ctx = JobContext(cfg, load_languages(languages), store.client, None, embedder)  # no model: a re-fit trains none
    job_id = f"cli-{int(time.time() * 1000)}-{os.getpid()}"
    lease = recluster_lease(ctx, f"{socket.gethostname()}:{os.getpid()}:cli")
    if lease.acquire() is None:
        raise typer.BadParameter(f"another re-fit holds {lease.key} ({lease.holder()}); wait for it to finish")
    try:
        with Heartbeat(lease):
            report = recluster(ctx, job_id=job_id, language="und", reason="manual", check_interval=False)
    finally:
        lease.release()
        embedder.close()
    plan = report["recluster"]
    typer.echo(f"codebook {plan['old_version']} (K {plan['old_k']}) -> {plan['new_version']} (K {plan['new_k']}); "
               f"{sum(plan['n_window'].values())} window rows {plan['n_window']} + {plan['n_pool']} pool rows",
               err=True)
    for code, row in sorted(plan["languages"].items()):
        typer.echo(f"  {code}: JS before {_num(row['js_before'])}, after {_num(row['js_after'])} "
                   f"(P_ref from {row['n_rows']} {row['source']} rows)", err=True)
    for code, why in sorted(plan["skipped"].items()):
        typer.echo(f"  {code}: not re-referenced: {why}", err=True)
    typer.echo(plan["new_version"])  # stdout: the version alone, for scripts


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command("list")
def list_(config: Path | None = _CONFIG) -> None:
    """The stored versions, oldest first; '*' marks the current one."""
    _, store = _store(config, need_redis=False)
    current = store.current_version()
    versions = store.versions()
    if not versions:
        typer.echo(f"no codebooks in {store.root}; create one with `compass codebook build RECORDS`")
        return
    for version in versions:
        meta = store.manifest(version)
        created = datetime.fromtimestamp(meta["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if version == current else " "
        langs = ",".join(meta.get("languages") or []) or "all"
        typer.echo(f"{mark} {version}  {meta['type']:<8} K={meta['n_clusters']:<4} langs={langs}  {created}Z  "
                   f"{meta['model_id']}")


@app.command()
def show(
    version: str | None = typer.Argument(None, help="a version (default: the current one)"),
    config: Path | None = _CONFIG,
) -> None:
    """The manifest of one version as JSON, with whether it is current."""
    _, store = _store(config, need_redis=version is None)
    meta = store.manifest(version)
    typer.echo(json.dumps({**meta, "current": meta["version"] == store.current_version()}, indent=2))
