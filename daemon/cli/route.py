"""``compass route TEXT...``: where each query would go (§3.2.5): detected language, adapter version, fallback.

Reads the language-ID model and the registry's pointers only; no language model is loaded."""

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

    router = Router.from_config(load_service_config(config), load_languages(languages))
    decisions = [router.route(t, lang) for t in texts]
    if as_json:
        for d in decisions:
            typer.echo(json.dumps(d.to_dict(), ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"routing over {router.registry.url if router.registry else '(no registry)'}")
    for col in ("text", "language", "confidence", "adapter", "kind", "reason"):
        table.add_column(col, overflow="fold")
    for t, d in zip(texts, decisions, strict=True):
        short = t if len(t) <= 40 else t[:39] + "…"
        table.add_row(short, d.language, f"{d.confidence:.3f}", d.version or "-", d.kind, d.reason)
    Console().print(table)
