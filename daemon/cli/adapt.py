"""``compass adapt``: the initial adaptation of one language (§3.2.4), before any drift cycle."""

from __future__ import annotations

import json
from pathlib import Path

import typer

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")


def adapt(
    target: str = typer.Option(..., "--target", "-t", help="language code, e.g. it"),
    targets: Path | None = typer.Option(None, "--targets", help="D_t records file (default: "
                                        "worker.targets_dir/<lang>.jsonl)"),
    pool: Path | None = typer.Option(None, "--pool", help="pool D_aux records file (default: worker.pool)"),
    proxy: Path | None = typer.Option(None, "--proxy", help="usage proxy E_t records file; without it: D_t only"),
    config: Path | None = CONFIG,
    languages: Path | None = LANGUAGES,
    plan_only: bool = typer.Option(False, "--plan-only", help="print the data plan (which rows train, which rows "
                                   "the gate scores) and stop: no training, nothing written"),
    as_json: bool = typer.Option(False, "--json", help="with --plan-only: the whole plan as JSON, every row id"),
) -> None:
    """Train, register and promote the first adapter of a language from D_t (+ COMPASS selection with a proxy)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from compass.languages import load_languages
    from daemon.worker import adapt_language
    from daemon.worker.model import WorkerError
    from infra.errors import ServiceUnavailable
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    langs = load_languages(languages)
    if targets is None:
        if cfg.worker.targets_dir is None:
            raise WorkerError("--targets is needed when worker.targets_dir is not set")
        targets = Path(cfg.worker.targets_dir) / f"{target}.jsonl"
    client = None
    try:
        from infra.clients import redis_client

        client = redis_client(cfg.redis)
    except ServiceUnavailable as e:
        typer.secho(f"warning: {e} P_ref is kept in the manifest only.", fg=typer.colors.YELLOW, err=True)
    if plan_only:
        plan = adapt_language(cfg, langs, target, targets=targets, pool=pool or cfg.worker.pool, proxy=proxy,
                              client=client, plan_only=True)
        typer.echo(json.dumps(plan, indent=2, ensure_ascii=False) if as_json else plan_summary(plan))
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"training {target}", total=None, info="")

        def progress(ev: dict) -> None:
            if ev["event"] == "step":
                bar.update(task, completed=ev["step"], total=ev["total_steps"], info=f"loss {ev['loss']:.3f}")

        report = adapt_language(cfg, langs, target, targets=targets, pool=pool or cfg.worker.pool, proxy=proxy,
                                client=client, progress=progress)
    typer.echo(json.dumps({k: report[k] for k in ("job_id", "language", "version", "outcome", "train", "p_ref")},
                          indent=2))


def plan_summary(plan: dict) -> str:
    """The data plan in a few lines: how many rows in each role (``--json`` lists their ids)."""
    t, g, x = plan["train"], plan["gate"], plan["excluded"]
    lines = [
        f"data plan of {plan['language']} ({plan['kind']}, budget B={plan['budget']}: |S| = "
        f"{plan['budget_rows']} for |D_t| = {plan['n_target']})",
        f"  train   D_t {len(t['target'])} rows, selected from the pool {sum(c for _, c in t['selected'])} "
        f"({len(t['selected'])} distinct), window {sum(c for _, c in t['window'])}; {t['n_examples']} examples",
        f"  gate    adaptation {len(g['adaptation'])} window rows; retention {len(g['retention']['anchors'])} "
        f"anchors + {len(g['retention']['file'])} gate-file rows + {len(g['retention']['targets'])} held-out D_t",
        f"  not trained   {len(x['unlabelled_window'])} unlabelled window queries (worker.train_on_queries), "
        f"{len(x['capped'])} selected rows over train.max_examples",
    ]
    if plan.get("clusters"):
        c = plan["clusters"]
        lines.append(f"  clusters      {c.get('clusterer')} K={c.get('n_clusters')} fitted on D_t ∪ E_t ∪ D_aux")
    lines += [f"  warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
