"""Cluster labels for on-call: the most distinctive terms of each cluster (c-TF-IDF) and its representative texts.

c-TF-IDF (as in BERTopic): the member texts of cluster c form one class document;
``W_{t,c} = tf_{t,c} / |c| * log(1 + A / f_t)`` with ``tf_{t,c}`` the count of term t in c, ``|c|`` the class's
term count, ``A`` the mean term count per class and ``f_t`` the count of t over all classes. A label is the top
``n_terms`` terms by W (ties by term). Tokens are ``\\w+`` runs (Unicode, combining marks included, casefolded,
digits-only dropped); runs of scripts written without spaces (CJK, kana, Thai, Lao, Khmer, Myanmar) become
character bigrams. Representative texts are the distinct member texts nearest (cosine) to the centroid.

Privacy (``codebook.store_examples: false``): no texts are kept and a term counts only when it occurs in at
least ``min_docs`` distinct member texts of the cluster, so a label never quotes one user's rare word.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from compass.errors import CompassError

FORMAT = 1
_NOSPACE_RANGES = (  # scripts written without spaces between words: tokenised as character bigrams
    (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x31F0, 0x31FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F),
)


def _class(ranges: Sequence[tuple[int, int]]) -> str:
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _mark_ranges() -> list[tuple[int, int]]:
    """Combining marks of the BMP (Python's ``\\w`` leaves out e.g. Devanagari and Thai vowel signs)."""
    out: list[tuple[int, int]] = []
    for c in range(0x0300, 0x10000):
        if unicodedata.category(chr(c)).startswith("M"):
            if out and out[-1][1] == c - 1:
                out[-1] = (out[-1][0], c)
            else:
                out.append((c, c))
    return out


_WORD = re.compile(f"[\\w{_class(_mark_ranges())}]+")
_NOSPACE = re.compile(f"([{_class(_NOSPACE_RANGES)}]+)")


class LabelError(CompassError, ValueError):
    """Inputs of the labelling disagree (lengths, cluster ids); the message names the field and the fix."""


def tokenize(text: str) -> list[str]:
    """Terms of ``text``: casefolded word runs; runs of a no-space script as character bigrams (one char alone)."""
    out: list[str] = []
    for word in _WORD.findall(text.casefold()):
        for i, part in enumerate(_NOSPACE.split(word)):
            if not part.strip("_") or part.isdigit():
                continue
            if i % 2:  # a no-space run (the split's captured group)
                out.extend([part] if len(part) == 1 else [part[j : j + 2] for j in range(len(part) - 1)])
            else:
                out.append(part)
    return out


def top_terms(texts: Sequence[str], labels: Sequence[int] | np.ndarray, n_clusters: int, *, n_terms: int = 3,
              min_docs: int = 1) -> list[list[tuple[str, float]]]:
    """Per cluster 0..n_clusters-1, its ``n_terms`` top (term, c-TF-IDF weight), best first. Rows labelled outside
    [0, n_clusters) (noise) are left out; a term counts in a cluster only if >= ``min_docs`` distinct member texts
    hold it."""
    labels = _check(texts, labels, n_clusters)
    if n_terms < 1 or min_docs < 1:
        raise LabelError(f"n_terms {n_terms} and min_docs {min_docs} must be >= 1")
    tf = [Counter() for _ in range(n_clusters)]
    df = [Counter() for _ in range(n_clusters)]
    seen: list[set[str]] = [set() for _ in range(n_clusters)]
    for text, c in zip(texts, labels.tolist(), strict=True):
        if not 0 <= c < n_clusters:
            continue
        terms = tokenize(text)
        tf[c].update(terms)
        if text not in seen[c]:  # distinct texts: a repeated text is one user's word, once
            seen[c].add(text)
            df[c].update(set(terms))
    if min_docs > 1:
        tf = [Counter({t: n for t, n in tf[c].items() if df[c][t] >= min_docs}) for c in range(n_clusters)]
    total: Counter[str] = Counter()
    for counts in tf:
        total.update(counts)
    sizes = [sum(counts.values()) for counts in tf]
    mean = sum(sizes) / n_clusters if n_clusters else 0.0
    out = []
    for c in range(n_clusters):
        scored = [(t, n / sizes[c] * math.log(1.0 + mean / total[t])) for t, n in tf[c].items()]
        scored.sort(key=lambda tw: (-tw[1], tw[0]))
        out.append(scored[:n_terms])
    return out


def representatives(texts: Sequence[str], labels: Sequence[int] | np.ndarray, X: np.ndarray, centroids: np.ndarray,
                    *, n: int = 3, max_chars: int = 200) -> list[list[str]]:
    """Per cluster, up to ``n`` distinct member texts nearest (cosine) to its centroid, cut to ``max_chars``."""
    k = len(centroids)
    labels = _check(texts, labels, k)
    X = np.asarray(X)
    C = np.asarray(centroids, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(texts) or (k and C.shape[1] != X.shape[1]):
        raise LabelError(f"X of shape {X.shape} must have one row per text ({len(texts)}) and the centroids' "
                         f"dimension ({C.shape}); pass the vectors the clusterer was fitted on")
    Cn = (C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    inside = np.flatnonzero((labels >= 0) & (labels < k))
    score = np.full(len(texts), -np.inf)
    for s in range(0, len(inside), 8192):  # each row against its own centroid only, in bounded chunks
        rows = inside[s : s + 8192]
        Xr = np.asarray(X[rows], dtype=np.float32)
        score[rows] = np.einsum("ij,ij->i", Xr, Cn[labels[rows]]) / np.maximum(np.linalg.norm(Xr, axis=1), 1e-12)
    out: list[list[str]] = [[] for _ in range(k)]
    for i in np.lexsort((-score[inside], labels[inside])).tolist():  # by cluster, nearest first (stable)
        row = int(inside[i])
        picked, text = out[labels[row]], texts[row][:max_chars]
        if len(picked) < n and text not in picked:
            picked.append(text)
    return out


def label_clusters(texts: Sequence[str], labels: Sequence[int] | np.ndarray, n_clusters: int, *,
                   X: np.ndarray | None = None, centroids: np.ndarray | None = None, store_examples: bool = True,
                   min_docs: int = 3, n_terms: int = 3, n_examples: int = 3) -> dict[str, Any]:
    """The codebook's labels document: ``{"format", "method", "store_examples", "min_docs", "n_texts",
    "clusters": [{"cluster", "size", "terms", "label", "examples"}]}``. ``min_docs`` applies when
    ``store_examples`` is false (examples on: any term); examples need ``X`` and ``centroids``."""
    labels = _check(texts, labels, n_clusters)
    floor = 1 if store_examples else min_docs
    terms = top_terms(texts, labels, n_clusters, n_terms=n_terms, min_docs=floor)
    examples: list[list[str]] = [[] for _ in range(n_clusters)]
    if store_examples and n_examples > 0 and X is not None and centroids is not None and len(centroids):
        examples = representatives(texts, labels, X, centroids, n=n_examples)
    sizes = np.bincount(labels[(labels >= 0) & (labels < n_clusters)], minlength=n_clusters)
    return {
        "format": FORMAT, "method": "c-tf-idf", "store_examples": store_examples, "min_docs": floor,
        "n_texts": len(texts),
        "clusters": [{"cluster": c, "size": int(sizes[c]), "terms": [t for t, _ in terms[c]],
                      "label": " · ".join(t for t, _ in terms[c]), "examples": examples[c]}
                     for c in range(n_clusters)],
    }


def _check(texts: Sequence[str], labels: Sequence[int] | np.ndarray, n_clusters: int) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(arr) != len(texts):
        raise LabelError(f"labels: {len(arr)} cluster ids for {len(texts)} texts; pass one id per text")
    if n_clusters < 0:
        raise LabelError(f"n_clusters must be >= 0; got {n_clusters}")
    return arr
