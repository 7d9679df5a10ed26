"""``compass route TEXT...``: where each query would go (§3.2.5): detected language, adapter version, fallback.

Reads the language-ID model and the registry's pointers only; no language model is loaded. When ``model.path`` is a
``compass expand`` model, each decision also names the expert the query runs through (its language's, else base)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")


def route(
    texts: list[str] = typer.Argument(..., help="one or more queries"),
    lang: str | None = typer.Option(None, "--lang", help="language code overriding detection, e.g. it"),
    as_json: bool = typer.Option(False, "--json", help="one JSON decision per line instead of a table"),
    config: Path | None = CONFIG,
    languages: Path | None = LANGUAGES,
) -> None:
    """Print the routing decision of each TEXT: language, confidence, adapter version, kind and why."""
    from compass.languages import load_languages
    from compass.route import Router
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    router = Router.from_config(cfg, load_languages(languages))
    decisions = [router.route(t, lang) for t in texts]
    experts = expanded_languages(cfg.model.path)
    if as_json:
        for d in decisions:
            row = d.to_dict()
            if experts is not None:  # model.path is a `compass expand` model: the expert this query runs through
                row["expert"] = d.language if d.language in experts else "base"
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"routing over {router.registry.url if router.registry else '(no registry)'}")
    cols = ("text", "language", "confidence", "adapter", "kind", "reason")
    cols += ("expert",) if experts is not None else ()
    for col in cols:
        table.add_column(col, overflow="fold")
    for t, d in zip(texts, decisions, strict=True):
        short = t if len(t) <= 40 else t[:39] + "…"
        extra = (d.language if d.language in experts else "base",) if experts is not None else ()
        table.add_row(short, d.language, f"{d.confidence:.3f}", d.version or "-", d.kind, d.reason, *extra)
    Console().print(table)


def expanded_languages(path: Path | None) -> tuple[str, ...] | None:
    """The expanded languages of a `compass expand` model at ``path`` (its manifest, no weights read); None for
    a dense model."""
    if path is None or not (Path(path) / "expand_manifest.json").is_file():
        return None
    from compass.expand.io import read_manifest

    spec = read_manifest(path).get("spec") or {}
    return tuple(spec.get("langs") or ())
