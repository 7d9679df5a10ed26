"""compass/cluster/refit.py: the language-balanced sample of a re-fit (hand-computed water-filling), the pool's
bound, and the shared fit-and-label step."""

from __future__ import annotations

import numpy as np
import pytest

from compass.cluster.errors import ClusterParamError
from compass.cluster.refit import balanced_sample, fit_codebook, pool_rows

# sizes, max_rows -> rows taken per language (smallest languages first set the level; the remainder of an
# uneven split goes to the largest)
CASES = [
    ("all fit", {"it": 3, "ja": 4}, 10, {"it": 3, "ja": 4}),
    ("equal split", {"it": 10, "ja": 10}, 10, {"it": 5, "ja": 5}),
    ("small gives to big", {"it": 5, "ja": 100}, 20, {"it": 5, "ja": 15}),
    ("remainder to the largest", {"it": 10, "ja": 10, "ko": 10}, 10, {"it": 3, "ja": 3, "ko": 4}),
    ("empty language", {"it": 0, "ja": 7}, 4, {"it": 0, "ja": 4}),
    ("three levels", {"it": 2, "ja": 6, "ko": 50}, 15, {"it": 2, "ja": 6, "ko": 7}),
    ("two small, one big", {"it": 1, "ja": 1, "ko": 9}, 6, {"it": 1, "ja": 1, "ko": 4}),
    ("nothing asked", {"it": 5}, 0, {"it": 0}),
    ("no languages", {}, 10, {}),
]


@pytest.mark.parametrize("name,sizes,max_rows,taken", CASES, ids=[c[0] for c in CASES])
def test_balanced_sample_takes_equal_shares_as_far_as_the_sizes_allow(name, sizes, max_rows, taken):
    out = balanced_sample(sizes, max_rows, seed=0)
    assert {lang: len(idx) for lang, idx in out.items()} == taken
    for lang, idx in out.items():  # distinct, sorted, in range
        assert np.array_equal(idx, np.unique(idx)) and (idx.size == 0 or (idx[0] >= 0 and idx[-1] < sizes[lang]))
    assert sum(taken.values()) <= max_rows


def test_balanced_sample_is_seeded():
    a, b = balanced_sample({"it": 100, "ja": 100}, 20, 3), balanced_sample({"it": 100, "ja": 100}, 20, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = balanced_sample({"it": 100, "ja": 100}, 20, 4)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("sizes,max_rows,seed,field", [
    ({"it": -1}, 5, 0, "sizes"),
    ({"it": 1.5}, 5, 0, "sizes"),
    ({"it": 1}, -1, 0, "max_rows"),
    ({"it": 1}, 5, -2, "seed"),
])
def test_balanced_sample_rejects_bad_parameters(sizes, max_rows, seed, field):
    with pytest.raises(ClusterParamError, match=rf"The '{field}' parameter of balanced_sample must be"):
        balanced_sample(sizes, max_rows, seed)


@pytest.mark.parametrize("n_pool,max_rows,share,rows", [
    (1000, 100, 0.5, 50), (10, 100, 0.5, 10), (1000, 101, 0.5, 50), (1000, 100, 0.0, 0), (1000, 100, 1.0, 100),
])
def test_pool_rows_bounds_the_pool_share(n_pool, max_rows, share, rows):
    assert pool_rows(n_pool, max_rows, share) == rows


def test_pool_rows_rejects_a_share_outside_0_1():
    with pytest.raises(ClusterParamError, match=r"The 'pool_share' parameter of pool_rows must be a float in"):
        pool_rows(10, 10, 1.5)


def test_fit_codebook_fits_and_labels_two_topics():
    rng = np.random.default_rng(0)
    X = np.concatenate([np.array([1.0, 0.0]) + rng.normal(0, 0.05, (10, 2)),
                        np.array([0.0, 1.0]) + rng.normal(0, 0.05, (10, 2))]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    texts = ["pasta pizza"] * 10 + ["server codice"] * 10
    fit = fit_codebook(texts, X, "kmeans", k=2, seed=0, n_examples=1)
    assert fit.clusterer.n_clusters_ == 2 and fit.n_noise == 0
    assert len(set(fit.labels[:10])) == 1 and len(set(fit.labels[10:])) == 1 and fit.labels[0] != fit.labels[10]
    labels = {row["label"] for row in fit.named["clusters"]}
    assert any("pasta" in lab for lab in labels) and any("server" in lab for lab in labels)


def test_fit_codebook_rejects_k_for_hdbscan_and_a_text_count_mismatch():
    X = np.eye(3, dtype=np.float32)
    with pytest.raises(ClusterParamError, match="'k' parameter of fit_codebook"):
        fit_codebook(["a", "b", "c"], X, "hdbscan", k=2)
    with pytest.raises(ClusterParamError, match="'texts' parameter of fit_codebook"):
        fit_codebook(["a"], X)
