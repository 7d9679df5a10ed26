"""``compass bench ...``: benchmarks run from the CLI. ``continual`` is benchmarks/continual.py (Figure 6, Table 12
and App. D.4 in miniature, by the paper's protocol): continual-update methods under a real topic shift, every
method training on a COMPASS selection."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import typer

app = typer.Typer(help="Benchmarks of the method (dev machines; not for CI).", no_args_is_help=True)

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "continual.py"


def load_continual() -> ModuleType:
    """benchmarks/continual.py as a module (benchmarks/ is a folder of scripts, not an installed package)."""
    name = "compass_bench_continual"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SCRIPT)
    if spec is None or spec.loader is None or not _SCRIPT.is_file():
        raise typer.BadParameter(f"benchmark script not found at {_SCRIPT}; run from a source checkout")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@app.command("continual")
def continual(
    model: str = typer.Option("tiny", "--model", help="tiny | smollm2 | a local model directory"),
    lang: str = typer.Option("en", "--lang", help="language whose chatterbot topics are split in two phases"),
    seeds: int = typer.Option(3, "--seeds", min=1, max=20, help="training + selection seeds (mean ± sd over them)"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, max=20, help="epochs of every training (default 5)"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, max=512, help="examples per step (default 8)"),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="adapter learning rate (default 2e-4; tiny 5e-3)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    reduced: bool = typer.Option(False, "--reduced", help="the CPU grid: smaller data, 3 x 3 lambda x beta grid"),
    quick: bool = typer.Option(False, "--quick", help="smoke run: small phases, 1 epoch, 2 x 2 grid"),
    out: Path = typer.Option(Path("benchmarks/results/continual"), "--out", help="output folder"),
    prepared: Path | None = typer.Option(None, "--prepared", help="a prepared.json bundle (skips corpus, embedding)"),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="write out/prepared.json (data, selections, "
                                      "anchors) and stop; train it elsewhere with --prepared"),
) -> None:
    """Static / naive / full retraining / EWC / random rehearsal / ECDA after a topic shift, all on COMPASS
    selections: retention and adaptation (relative NLL change), time per step, the anchor-buffer sweep (Table 12)
    and the lambda x beta sweep (App. D.4); writes results.json, continual.png and README.md."""
    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(f"--device must be auto, cpu or cuda; got {device!r}")
    if reduced and quick:
        raise typer.BadParameter("--reduced and --quick pick different grids; pass one of them")
    bench = load_continual()
    cfg = bench.config_from(model, lang, seeds, epochs, device, quick, reduced, batch_size=batch_size, lr=lr)
    if prepare_only:
        bench.save_prepared(bench.prepare(cfg), out / "prepared.json")
        typer.echo(f"wrote {out / 'prepared.json'}")
        return
    result = bench.run(cfg, out, prepared)
    typer.echo(f"wrote {out / 'results.json'}, continual.png and README.md; Pareto front: "
               f"{', '.join(result['summary']['pareto'])}")
