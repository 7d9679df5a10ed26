"""Re-fitting a codebook (paper §6.1): a bounded, language-balanced sample, then one fit and its labels.

The paper clusters D_t ∪ E_t ∪ D_aux; a re-fit in service clusters recent window queries of every served language
plus the auxiliary pool. ``balanced_sample`` keeps the sample bounded (``max_rows``) and keeps a busy language from
drowning a quiet one: each language gets an equal share, and what a small language cannot fill goes to the others.
``fit_codebook`` is the one fit-and-label step of the worker's ``recluster`` job and of ``compass codebook build``.
Pure: no I/O; the caller embeds the texts and publishes the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compass.cluster.base import Clusterer
from compass.cluster.errors import ClusterParamError
from compass.cluster.factory import make_clusterer
from compass.cluster.labels import label_clusters
from compass.params import bad_param, check_int, check_real, is_int


def balanced_sample(sizes: Mapping[str, int], max_rows: int, seed: int) -> dict[str, np.ndarray]:
    """Row indices per language (sorted, without repeats): at most ``max_rows`` in all, as equal per language as
    the sizes allow (water-filling: a language with fewer rows than its share gives the rest to the others; an
    indivisible remainder goes to the largest languages). Every language of ``sizes`` is a key of the result."""
    check_int("max_rows", "balanced_sample", max_rows, 0, ClusterParamError)
    check_int("seed", "balanced_sample", seed, 0, ClusterParamError)
    for lang, n in sizes.items():
        if not is_int(n, allow_numpy=True) or n < 0:
            raise bad_param("sizes", "balanced_sample", "a mapping of language to its row count, an int >= 0",
                            {lang: n}, ClusterParamError)
    order = sorted(sizes, key=lambda lang: (int(sizes[lang]), lang))  # smallest first: they set the water level
    take: dict[str, int] = {}
    left = max_rows
    for i, lang in enumerate(order):
        share = left // (len(order) - i)
        take[lang] = min(int(sizes[lang]), share)
        left -= take[lang]
    rng = np.random.default_rng(seed)
    out = {}
    for lang in sorted(sizes):  # a fixed order of draws: the same seed gives the same sample
        n, k = int(sizes[lang]), take[lang]
        idx = np.arange(n) if k >= n else rng.choice(n, size=k, replace=False)
        out[lang] = np.sort(idx).astype(np.int64)
    return out


def pool_rows(n_pool: int, max_rows: int, pool_share: float) -> int:
    """How many auxiliary-pool rows a sample of ``max_rows`` takes: at most ``pool_share`` of it."""
    check_int("n_pool", "pool_rows", n_pool, 0, ClusterParamError)
    check_int("max_rows", "pool_rows", max_rows, 0, ClusterParamError)
    check_real("pool_share", "pool_rows", pool_share, ge=0.0, le=1.0, error=ClusterParamError)
    return min(n_pool, int(max_rows * pool_share))


@dataclass(frozen=True)
class Fit:
    """A fitted clusterer, the cluster id of each row it was fitted on (-1 = noise) and its labels document."""

    clusterer: Clusterer
    labels: np.ndarray
    named: dict[str, Any]

    @property
    def n_noise(self) -> int:
        return int((self.labels < 0).sum())


def fit_codebook(
    texts: Sequence[str],
    X: np.ndarray,
    clusterer: str = "kmeans",
    *,
    k: int | None = None,
    seed: int = 0,
    store_examples: bool = True,
    min_docs: int = 3,
    n_terms: int = 3,
    n_examples: int = 3,
) -> Fit:
    """Fit ``clusterer`` (kmeans: K chosen by silhouette unless ``k``) on ``X`` and label its clusters from
    ``texts`` (c-TF-IDF terms, representative texts unless ``store_examples`` is false)."""
    if len(texts) != len(X):
        raise bad_param("texts", "fit_codebook", f"one text per row of X ({len(X)})", f"{len(texts)} texts",
                        ClusterParamError)
    if k is not None and clusterer != "kmeans":
        raise bad_param("k", "fit_codebook", "None for a clusterer other than kmeans (it finds K itself)", k,
                        ClusterParamError)
    model = make_clusterer(clusterer, seed=seed, **({"n_clusters": k} if k is not None else {}))
    labels = np.asarray(model.fit_predict(X), dtype=np.int64)
    named = label_clusters(list(texts), labels, int(model.n_clusters_), X=X,
                           centroids=getattr(model, "centroids_", None), store_examples=store_examples,
                           min_docs=min_docs, n_terms=n_terms, n_examples=n_examples)
    return Fit(model, labels, named)
