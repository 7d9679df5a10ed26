"""compass/cluster/nearest.py and the Codebook value type (compass/cluster/codebook.py), without Redis."""

from __future__ import annotations

import numpy as np
import pytest

from compass.cluster import NOISE, make_clusterer
from compass.cluster.codebook import Codebook, CodebookError, EmbedderMismatch, distance_quantiles, lineage_of
from compass.cluster.nearest import nearest_centroid, nearest_cosine_distances, unit_rows
from compass.drift.eq3 import SIMULATED, fit_codebook

E = np.eye(3, dtype=np.float32)


def test_nearest_centroid_by_hand():
    X = unit_rows(np.array([[1, 0.1, 0], [0, 0, 2], [0.6, 0.8, 0]]))
    labels, sims = nearest_centroid(X, E)
    assert labels.tolist() == [0, 2, 1]
    np.testing.assert_allclose(sims, [1 / np.sqrt(1.01), 1.0, 0.8], atol=1e-6)


def test_no_centroids_is_all_noise():
    labels, sims = nearest_centroid(E, np.zeros((0, 3), np.float32))
    assert labels.tolist() == [NOISE] * 3 and np.isneginf(sims).all()
    assert np.isinf(nearest_cosine_distances(E, np.zeros((0, 0)))).all()


@pytest.mark.parametrize(
    ("row", "distance"),
    [
        ([2.0, 0.0, 0.0], 0.0),  # a scaled centroid: norms do not matter
        ([0.0, 0.0, 0.0], 1.0),  # a zero row is orthogonal to everything
        ([1.0, 1.0, 0.0], 1 - 1 / np.sqrt(2)),
        ([-1.0, -1.0, -1.0], 1 + 1 / np.sqrt(3)),  # opposite to all three
    ],
)
def test_cosine_distances_by_hand(row, distance):
    np.testing.assert_allclose(nearest_cosine_distances(np.array([row]), 3 * E), [distance], atol=1e-6)


def test_lineage_of():
    assert lineage_of("20250101T120000-000001-a1b2c3") == "20250101T120000-000001-a1b2c3"
    assert lineage_of("L.R1") == "L" and lineage_of("L.R1.R2") == "L"


def _kmeans() -> tuple[np.ndarray, object]:
    rng = np.random.default_rng(0)
    X = unit_rows(np.concatenate([c + rng.normal(0, 0.05, (20, 3)) for c in E]))
    model = make_clusterer("kmeans", seed=0, n_clusters=3)
    model.fit_predict(X)
    return X, model


def test_codebook_buckets_counts_and_distances():
    X, model = _kmeans()
    book = Codebook("v1", model, model_id="m")
    assert (book.n_clusters, book.n_buckets, book.lineage) == (3, 4, "v1")
    buckets = book.assign(X)
    assert buckets.dtype == np.int64 and book.counts(buckets).tolist() == [20.0, 20.0, 20.0, 0.0]
    assert book.centroids.shape == (3, 3) and book.centroids.dtype == np.float32
    np.testing.assert_allclose(book.nearest_distances(X), nearest_cosine_distances(X, model.centroids_))
    q = distance_quantiles(X, book.centroids)
    assert list(q) == ["0.90", "0.95", "0.99"] and 0 < q["0.90"] <= q["0.95"] <= q["0.99"] < 0.1
    with pytest.raises(CodebookError, match=r"vectors of shape \(60, 2\) do not match centroids"):
        book.nearest_distances(X[:, :2])
    with pytest.raises(EmbedderMismatch):
        book.check_model("other")


def test_the_simulator_builds_the_same_type():
    X, _ = _kmeans()
    book = fit_codebook(X, 3, seed=0)
    assert isinstance(book, Codebook) and book.version == SIMULATED and book.n_buckets == 4
    assert sorted(book.counts(book.assign(X)).tolist()) == [0.0, 20.0, 20.0, 20.0]
