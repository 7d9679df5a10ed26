"""``compass demo``: the main job. Starts Kafka and Redis, bootstraps adapters for a few languages (cached),
runs consumers, daemon, worker and the status page, replays a real query stream in which one language's topics
shift, and ends with a summary and an HTML report (see daemon/demo/loop.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", help="service config YAML (default: configs/default.yaml)")


def demo(
    config: Path | None = CONFIG,
    model: str = typer.Option("smollm2", help="base LM: 'smollm2' (packaged SmolLM2-135M) or a local model dir"),
    max_examples: int = typer.Option(96, min=8, help="training examples per adapter update (D_new cap)"),
    epochs: int = typer.Option(1, min=1, max=10, help="epochs per adapter update"),
    phase2: int = typer.Option(260, min=50, help="queries after the shift"),
    seed: int = typer.Option(0, help="seed of the data split, the stream order and training"),
    http: bool = typer.Option(True, help="serve the status page on http.host:http.port while the run lasts"),
    stack: bool = typer.Option(True, help="start the local stack first; --no-stack uses running servers"),
    quiet: bool = verbosity.QUIET,
    verbose: bool = verbosity.VERBOSE,
) -> None:
    """Run the main job end to end: drift, trigger, reselection, ECDA update, gate, promotion; then a report."""
    verbosity.apply(quiet, verbose)
    from daemon.cli.stack import up as stack_up
    from daemon.demo.loop import run_demo
    from daemon.demo.settings import DemoSettings
    from infra.settings import load_service_config

    console = Console(soft_wrap=True)
    cfg = load_service_config(config)
    settings = DemoSettings(model=model, phase2_size=phase2, seed=seed, http=http)
    settings.train.update({"max_examples": max_examples, "max_epochs": epochs, "seed": seed})
    with console.status("working") as status:
        def say(line: str) -> None:
            console.print(line)

        def progress(ev: dict) -> None:  # training steps of the bootstrap adapters
            if ev.get("event") == "step":
                status.update(f"training: step {ev['step']}/{ev['total_steps']}, loss {ev['loss']:.3f}")

        result = run_demo(cfg, settings, say, stack_up=(lambda: stack_up(only=None, config=config)) if stack else None,
                          progress=progress)
    table = Table("phase", "seconds", title="phases")
    for name, secs in result.phases.items():
        table.add_row(name, f"{secs:.1f}")
    console.print(table)
    versions = Table("language", "bootstrapped", "serving now", title="adapters")
    for lang, v in result.final_versions.items():
        versions.add_row(lang, result.bootstrap.get(lang, ""), v or "base model")
    console.print(versions)
    for u in result.updates:
        console.print(update_line(u))
    console.print(f"run directory: {result.run_dir}")
    if result.report:
        console.print(f"report: {result.report}")
    if not result.promoted:
        console.print("[yellow]no adapter was promoted in this run[/]")
    if stack:
        console.print("The stack keeps running: `compass stack down` (or `make stack-down`) stops it.")


def update_line(report: dict[str, Any]) -> str:
    """One update of the summary: its outcome and the gate's NLLs at 3 significant digits (raw ones in the JSON)."""
    from infra.logs import human

    g = report.get("gate") or {}
    return (f"update {report['job_id']} ({report['language']}): {report['outcome']}; adaptation NLL "
            f"{human(g.get('adaptation_current'))} -> {human(g.get('adaptation_candidate'))}, retention "
            f"{human(g.get('retention_current'))} -> {human(g.get('retention_candidate'))}")
