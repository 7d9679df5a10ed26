"""Why a window drifted: the clusters that contribute most to JS(P_ref || P_mon) (eq. 5).

JS = sum_k 1/2 [p_k log2(p_k / m_k) + q_k log2(q_k / m_k)], m = (p + q) / 2, so each bucket k has its own term
(>= 0, 0 log 0 = 0) and the terms sum exactly to JS. ``explain`` ranks the buckets by their term and gives each
its share in P_ref and in the window, its label and a representative query (when the codebook keeps them).
The last bucket is noise (labelled "noise").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from compass.divergence import DivergenceError, _pair

NOISE_LABEL = "noise"


@dataclass(frozen=True)
class Contribution:
    cluster: int  # bucket id; the last one is noise
    p_ref: float  # share in P_ref
    p_window: float  # share in the window (P_mon)
    count: int  # window queries in the bucket
    js_term: float  # this bucket's term of the JS sum, bits
    share_of_js: float  # js_term / JS (0 when JS is 0)
    label: str | None
    example: str | None


@dataclass(frozen=True)
class Explanation:
    js: float
    n_samples: int
    clusters: tuple[Contribution, ...]  # the top contributors, largest term first

    def to_dict(self) -> dict:
        return {"js": self.js, "n_samples": self.n_samples, "clusters": [asdict(c) for c in self.clusters]}


def js_terms(p: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Per-bucket terms of JS(p || q) in bits (each >= 0); their sum is JS (unclamped)."""
    pp, qq = _pair(p, q)
    m = 0.5 * (pp + qq)
    out = np.zeros_like(m)
    for x in (pp, qq):
        nz = x > 0
        out[nz] += 0.5 * x[nz] * np.log2(x[nz] / m[nz])
    return np.maximum(out, 0.0)  # a term is >= 0 (log-sum inequality); clamp round-off


def explain(p_ref: ArrayLike, counts: ArrayLike, *, labels: Sequence[str | None] | None = None,
            examples: Sequence[Sequence[str]] | None = None, top: int = 5) -> Explanation:
    """The ``top`` buckets by JS term (ties by bucket id). ``labels`` / ``examples``: per cluster (the noise
    bucket excluded), from the codebook's labels; missing or empty ones give None."""
    if top < 0:
        raise DivergenceError(f"top must be >= 0; got {top}")
    c = np.asarray(counts, dtype=np.float64)
    terms = js_terms(p_ref, c)
    pp, qq = _pair(p_ref, c)
    js = float(terms.sum())
    k = len(terms) - 1  # the noise bucket
    order = sorted(range(len(terms)), key=lambda i: (-terms[i], i))[:top]
    rows = []
    for i in order:
        label = NOISE_LABEL if i == k else (labels[i] or None) if labels is not None and i < len(labels) else None
        ex = examples[i] if examples is not None and i < k and i < len(examples) and examples[i] else None
        rows.append(Contribution(i, float(pp[i]), float(qq[i]), int(round(c[i])), float(terms[i]),
                                 float(terms[i] / js) if js > 0 else 0.0, label, ex[0] if ex else None))
    return Explanation(js, int(round(c.sum())), tuple(rows))


def name_selection(selection: dict, labels: dict | None) -> dict:
    """A job report's ``selection`` (compass/adapt/plan.py) with each cluster's label (when the codebook has
    labels; the last bucket is noise) and ``filled``: the clusters the reselection drew from, most selected first.
    Returns a new dict."""
    names = {c.get("cluster"): c.get("label") or None for c in (labels or {}).get("clusters", [])}
    rows = selection.get("clusters") or []
    noise = len(rows) - 1
    # per-target selection clusters (compass/adapt/plan.py) carry the codebook cluster most of their rows are in
    named = [{**r, "label": NOISE_LABEL if r["cluster"] == noise
              else names.get(r.get("codebook_cluster", r["cluster"]))} for r in rows]
    filled = sorted((r for r in named if r.get("selected", 0) > 0), key=lambda r: (-r["selected"], r["cluster"]))
    return {**selection, "clusters": named,
            "filled": [{"cluster": r["cluster"], "label": r["label"], "selected": r["selected"]} for r in filled]}
