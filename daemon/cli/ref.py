"""``compass ref set|show``: a language's reference distribution P_ref (eq. 3) in Redis, by hand (ops, tests)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="P_ref per language (eq. 3): the cluster distribution the adapter was trained on.",
                  no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")


def _client(config: Path | None):
    from infra.clients import redis_client
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    return redis_client(cfg.redis), cfg.redis.key_prefix


@app.command("set")
def set_(
    lang: str = typer.Argument(..., help="language code, e.g. sw"),
    counts: str = typer.Option(..., "--counts", help="comma-separated per-bucket counts n_eval + n_aux_selected, "
                               "noise bucket last, e.g. 120,80,0"),
    codebook: str = typer.Option(..., "--codebook", help="codebook version the buckets belong to"),
    adapter: str = typer.Option(..., "--adapter", help="adapter version trained on this distribution"),
    config: Path | None = CONFIG,
) -> None:
    """Store P_ref of LANG (replaces the previous one)."""
    from compass import langcodes
    from infra.reference import set_reference

    try:
        values = [float(c) for c in counts.split(",")]
    except ValueError:
        raise typer.BadParameter(f"got {counts!r}; give numbers separated by commas, e.g. 120,80,0",
                                 param_hint="--counts") from None
    lang = langcodes.normalize(lang)
    client, prefix = _client(config)
    ref = set_reference(client, lang, counts=values, codebook_version=codebook, adapter_version=adapter,
                        prefix=prefix)
    typer.echo(f"{lang}: P_ref = {[round(p, 6) for p in ref.probs]} (codebook {codebook}, adapter {adapter})")


@app.command()
def show(lang: str = typer.Argument(..., help="language code"), config: Path | None = CONFIG) -> None:
    """Print P_ref of LANG as JSON."""
    from dataclasses import asdict

    from infra.reference import get_reference

    client, prefix = _client(config)
    ref = get_reference(client, lang, prefix)
    if ref is None:
        typer.echo(f"{lang}: no reference; set one with `compass ref set {lang} --counts ... --codebook V --adapter A`",
                   err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(asdict(ref), indent=2))
