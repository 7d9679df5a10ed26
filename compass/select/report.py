"""What a selection did, as JSON and two PNG plots.

``build_report`` turns a ``Selection`` into a JSON-ready dict:
  clusters       one row per bucket (clusters 0..K-1, then "noise" for rows labelled -1): n_t, n_eval, n_aux,
                 rho_k = P_eval / P_train (§3.1.1; null where undefined), w_k and w~_k (§3.2.2), quota q_k
                 (§3.2.3, before reallocation), extra (quota units moved here from clusters that could not
                 fill theirs), unfilled and fell_short (original quota units this cluster could not deliver,
                 even with repeats; they went to other clusters), selected (rows of S in the bucket, repeats
                 counted), shortfall (final quota not met from distinct candidates: rows repeated), and the three
                 shares below. The summary adds reallocated (units moved), fell_short_clusters and unmet
                 (round(B |D_t|) - |S| once no cluster had room left; 0 normally).
  distributions  P_eval, P_train and P_{D_t+S} over the K+1 buckets; P_{D_t+S}^k = (n_t^k + |S_k|) / (|D_t| + |S|).
  js             JS(P_eval || P_train) before and JS(P_eval || P_{D_t+S}) after adding S (eq. 5, bits).
  source_languages  counts of S per source language, repeats included (the paper's Figure 4), with the
                 number of distinct rows and the language's family from the LangSim table.
``write_report`` writes ``report.json``, ``clusters.png`` (P_eval vs P_train vs P_{D_t+S} per bucket, JS in the
title) and ``source_languages.png`` (S per source language, coloured by family).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compass import langcodes
from compass.divergence import js_divergence

NOISE_LABEL = "noise"
REPORT_FILE, CLUSTERS_PNG, LANGUAGES_PNG = "report.json", "clusters.png", "source_languages.png"


def _finite(x: float) -> float | None:
    """JSON has no inf/nan: undefined ratios become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _share(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts))


def _js(p: np.ndarray, q: np.ndarray) -> float | None:
    return js_divergence(p, q) if p.sum() > 0 and q.sum() > 0 else None


def _family(code: str) -> str | None:
    from compass.select.langsim import load_table  # the table is small and cached

    row = load_table().rows.get(code)
    return row["family"] if row else None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def source_language_counts(
    pool_indices: np.ndarray, counts: np.ndarray, pool_langs: Sequence[str]
) -> list[dict[str, Any]]:
    """Figure 4 rows: per source language, selections (repeats counted) and distinct rows; most selected first."""
    total: Counter[str] = Counter()
    distinct: Counter[str] = Counter()
    for i, c in zip(np.asarray(pool_indices).tolist(), np.asarray(counts).tolist(), strict=True):
        lang = pool_langs[i]
        total[lang] += int(c)
        distinct[lang] += 1
    order = sorted(total, key=lambda lang: (-total[lang], lang))
    return [
        {"lang": g, "name": langcodes.name(g), "family": _family(g), "count": total[g], "distinct": distinct[g]}
        for g in order
    ]


def build_report(
    selection: Any,
    pool_langs: Sequence[str],
    target_lang: str,
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable summary of ``selection`` (a ``compass.select.Selection``).

    ``pool_langs[i]`` is the language of pool row i (the rows ``selection.pool_indices`` index);
    ``extra`` is merged in under ``"extra"`` (e.g. input paths, timings).
    """
    if len(pool_langs) != len(selection.pool_labels):
        raise ValueError(
            f"pool_langs: {len(pool_langs)} languages for {len(selection.pool_labels)} pool rows; "
            "pass one language per pool row, in pool order"
        )
    stats = selection.stats
    n_t, n_eval, n_aux = (np.asarray(a, dtype=np.int64) for a in (stats.n_t, stats.n_eval, stats.n_aux))
    size = len(n_t)  # K + 1; the last bucket is noise
    selected = np.asarray(selection.selected_per_cluster, dtype=np.int64)
    quotas = np.zeros(size, dtype=np.int64)
    q = np.asarray(selection.quotas, dtype=np.int64)
    quotas[: len(q)] = q
    shortfall = {size - 1 if int(k) < 0 else int(k) for k in selection.shortfall_clusters}
    final = np.zeros(size, dtype=np.int64)
    f = np.asarray(getattr(selection, "final_quotas", q), dtype=np.int64)  # older Selection objects: no reallocation
    final[: len(f)] = f
    moved_in, unfilled = np.maximum(final - quotas, 0), np.maximum(quotas - final, 0)

    p_eval, p_train, p_after = _share(n_eval), _share(n_t), _share(n_t + selected)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = p_eval / p_train
    clusters = []
    for k in range(size):
        clusters.append(
            {
                "cluster": NOISE_LABEL if k == size - 1 else k,
                "n_t": int(n_t[k]),
                "n_eval": int(n_eval[k]),
                "n_aux": int(n_aux[k]),
                "rho": _finite(rho[k]),
                "w": float(stats.w[k]),
                "w_tilde": float(stats.w_tilde[k]),
                "quota": int(quotas[k]),
                "extra": int(moved_in[k]),
                "unfilled": int(unfilled[k]),
                "fell_short": bool(unfilled[k] > 0),
                "selected": int(selected[k]),
                "shortfall": k in shortfall,
                "p_eval": float(p_eval[k]),
                "p_train": float(p_train[k]),
                "p_train_plus_s": float(p_after[k]),
            }
        )
    counts = np.asarray(selection.counts, dtype=np.int64)
    report = {
        "target_lang": target_lang,
        "method": selection.method,
        "config": _jsonable(selection.config),
        "summary": {
            "n_train": int(n_t.sum()),
            "n_eval": int(n_eval.sum()),
            "n_pool": int(n_aux.sum()),
            "n_clusters": size - 1,
            "selected": int(counts.sum()),
            "distinct": int(len(counts)),
            "repeated": int((counts > 1).sum()),
            "tau_sim": _finite(selection.tau_sim) if selection.tau_sim is not None else None,
            "shortfall_clusters": [clusters[k]["cluster"] for k in sorted(shortfall)],
            "reallocated": int(moved_in.sum()),
            "fell_short_clusters": [c["cluster"] for c in clusters if c["fell_short"]],
            "unmet": int(quotas.sum() - final.sum()),
        },
        "js": {"eval_vs_train": _js(n_eval, n_t), "eval_vs_train_plus_s": _js(n_eval, n_t + selected)},
        "distributions": {
            "buckets": [c["cluster"] for c in clusters],
            "p_eval": p_eval.tolist(),
            "p_train": p_train.tolist(),
            "p_train_plus_s": p_after.tolist(),
        },
        "clusters": clusters,
        "source_languages": source_language_counts(selection.pool_indices, counts, pool_langs),
    }
    if extra:
        report["extra"] = _jsonable(extra)
    return report


def _plot_clusters(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    dist = dict(report["distributions"])
    keys = ("p_eval", "p_train", "p_train_plus_s")
    if all(dist[key][-1] == 0 for key in keys):  # no noise rows (kmeans etc.): leave the empty bucket out
        dist = {name: values[:-1] for name, values in dist.items()}
    names = [str(b) for b in dist["buckets"]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0))
    width = 0.27
    ax.bar(x - width, dist["p_eval"], width, label="P_eval (E_t)", color="#333333")
    ax.bar(x, dist["p_train"], width, label="P_train (D_t)", color="#e08a3c")
    ax.bar(x + width, dist["p_train_plus_s"], width, label="P_train+S (D_t + S)", color="#3c7de0")
    js = report["js"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    ax.set_title(
        f"{report['target_lang']} / {report['method']}: JS(P_eval||P_train) = {fmt(js['eval_vs_train'])}, "
        f"JS(P_eval||P_train+S) = {fmt(js['eval_vs_train_plus_s'])}",
        fontsize=9,
    )
    ax.set_xticks(x, names, rotation=90 if len(names) > 20 else 0, fontsize=7)
    ax.set_xlabel("cluster")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_languages(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = report["source_languages"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(rows) + 2), 4.0))
    if rows:
        families = sorted({r["family"] or "unknown" for r in rows})
        cmap = plt.get_cmap("tab20")
        color = {f: cmap(i % 20) for i, f in enumerate(families)}
        x = np.arange(len(rows))
        ax.bar(x, [r["count"] for r in rows], color=[color[r["family"] or "unknown"] for r in rows])
        ax.set_xticks(x, [r["lang"] for r in rows], fontsize=8)
        handles = [plt.Rectangle((0, 0), 1, 1, color=color[f]) for f in families]
        ax.legend(handles, families, fontsize=7, title="family", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "S is empty", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"source languages of S for target {report['target_lang']} ({report['method']})", fontsize=9)
    ax.set_xlabel("source language")
    ax.set_ylabel("selections (repeats counted)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json and the two PNGs into ``out_dir`` (created); returns the paths by name."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / REPORT_FILE, "clusters_plot": out / CLUSTERS_PNG, "languages_plot": out / LANGUAGES_PNG}
    tmp = out / f".{REPORT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, paths["report"])  # readers never see half a report
    _plot_clusters(report, paths["clusters_plot"])
    _plot_languages(report, paths["languages_plot"])
    return paths
