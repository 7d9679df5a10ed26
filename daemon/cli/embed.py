"""``compass embed IN OUT.npy``: embed every record's text with the configured embedder (cached on disk)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer


def embed(
    input: Path = typer.Argument(..., help="records file, .jsonl or .parquet, with id, lang and text"),
    output: Path = typer.Argument(..., help="output .npy: float32 (n, dim), row i embeds record i"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="service config YAML (default: configs/default.yaml)"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, max=4096, help="texts per call (default: embedder.batch_size)"
    ),
) -> None:
    """Embed the text of each record in INPUT and save the vectors to OUTPUT (.npy, float32)."""
    import numpy as np
    from tqdm import tqdm

    from compass.data import read_records
    from compass.embed import CachedEmbedder
    from compass.errors import DataError
    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    if output.suffix != ".npy":
        problem = f"output must end in .npy (got suffix {output.suffix!r}); e.g. {output}.npy"
        raise DataError(str(output), [problem])
    cfg = load_service_config(config).embedder
    if batch_size is not None:
        cfg = cfg.model_copy(update={"batch_size": batch_size})

    started = time.perf_counter()
    records = read_records(input)
    if not records:
        raise DataError(str(input), ["the file holds no records; nothing to embed"])
    texts = [r.text for r in records]

    embedder = make_embedder(cfg)
    parts = []
    try:
        with tqdm(total=len(texts), unit="text", desc="embedding", file=sys.stderr) as bar:
            for start in range(0, len(texts), cfg.batch_size):
                chunk = texts[start : start + cfg.batch_size]
                parts.append(embedder.encode(chunk))
                bar.update(len(chunk))
    finally:
        embedder.close()
    vectors = np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, output)  # readers never see a half-written file
    elapsed = time.perf_counter() - started

    n, dim = vectors.shape
    typer.echo(f"embedded {n} records -> {output}")
    typer.echo(f"  dim {dim}, model {embedder.model_id}")
    if isinstance(embedder, CachedEmbedder):
        typer.echo(f"  cache: {embedder.hits} hits, {embedder.misses} misses ({embedder.path})")
    else:
        typer.echo("  cache: off")
    typer.echo(f"  time {elapsed:.2f}s ({n / elapsed:.1f} texts/s)")
