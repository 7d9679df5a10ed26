"""``compass explain LANG``: which clusters drive JS(P_ref || window) now, with the codebook's labels.

Reads the window and P_ref from Redis and the labels from ``consumer.codebook_dir``; needs no daemon or Kafka.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

EXAMPLE_CHARS = 60  # a representative query is cut to this in the table


def explain(
    lang: str = typer.Argument(..., help="language code, e.g. sw"),
    top: int = typer.Option(5, "--top", min=1, max=1000, help="clusters listed, largest JS term first"),
    as_json: bool = typer.Option(False, "--json", help="print the explanation as JSON instead of a table"),
    config: Path | None = typer.Option(None, "--config", "-c", help="service config YAML (default: "
                                       "configs/default.yaml)"),
) -> None:
    """The clusters that contribute most to LANG's drift: share in P_ref vs the window, JS term, label, example."""
    from compass import langcodes
    from daemon.scheduler.explain import LabelCache, explain_window
    from infra.clients import redis_client
    from infra.reference import get_reference
    from infra.settings import load_service_config
    from infra.window import WindowStore

    cfg = load_service_config(config)
    lang = langcodes.normalize(lang)
    client = redis_client(cfg.redis)
    prefix = cfg.redis.key_prefix
    snap = WindowStore(client, prefix).snapshot(lang)
    ref = get_reference(client, lang, prefix)
    labels = LabelCache(cfg.consumer.codebook_dir).get(snap.codebook_version)
    e = explain_window(ref, snap, labels, top=top, examples=cfg.codebook.store_examples)
    if as_json:
        typer.echo(json.dumps(e, indent=2, ensure_ascii=False))
        return
    typer.echo("\n".join(table(lang, e)))


def table(lang: str, e: dict[str, Any]) -> list[str]:
    """The lines ``compass explain`` prints for one explanation (``daemon.scheduler.explain.explain_window``)."""
    if not e["available"]:
        return [f"{lang}: nothing to explain: {e['reason']}"]
    lines = [f"{lang}: JS {e['js']:.4f} bits over {e['n_samples']} queries (codebook {e['codebook_version']}"
             f"{'' if e['labeled'] else ', no labels stored'}); top {len(e['clusters'])} clusters"]
    rows = [(str(c["cluster"]), c["label"] or "-", f"{c['p_ref']:.3f}", f"{c['p_window']:.3f}", f"{c['js_term']:.4f}",
             f"{100 * c['share_of_js']:.1f}%", _cut(c["example"]) if c["example"] else "-") for c in e["clusters"]]
    head = ("cluster", "label", "P_ref", "window", "JS term", "of JS", "example")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        cells = [r[i].rjust(w) if i in (0, 2, 3, 4, 5) else r[i].ljust(w) for i, w in enumerate(widths)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return lines


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 1] + "…"
