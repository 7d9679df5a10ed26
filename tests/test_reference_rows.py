"""compass/drift/reference_rows.py and the rows ``plan_update`` keeps for eq. 3: hand-computed weighted counts,
the .npz round trip, clear errors on bad rows or files, and that a recount of the plan's rows gives its counts."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest

from compass.adapt.plan import PlanSettings, plan_update
from compass.data import Record
from compass.drift.reference_rows import (
    REFERENCE_ROWS_FILE,
    ReferenceRows,
    ReferenceRowsError,
    read_reference_rows,
)


def rows(sources=("window", "selected", "window", "target"), weights=(1, 2, 0.5, 3), d=3) -> ReferenceRows:
    n = len(sources)
    x = np.random.default_rng(0).normal(size=(n, d))
    return ReferenceRows(tuple(f"r{i}" for i in range(n)), tuple(sources), np.asarray(weights, float), x)


@pytest.mark.parametrize("buckets, k, want", [
    ([0, 2, -1, 1], 2, [1, 3, 2.5]),  # -1 is noise (index k): 2 + 0.5
    ([1, 1, 1, 1], 2, [0, 6.5, 0]),
    ([0, 0, 0, 0], 0, [6.5]),  # no codebook: one noise bucket
    ([3, 3, 0, 3], 3, [0.5, 0, 0, 6]),  # bucket k is noise, as Codebook.assign gives it
])
def test_counts_are_the_weighted_bincount_with_noise_last(buckets, k, want):
    got = rows().counts(np.asarray(buckets), k)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_counts_of_no_rows_are_zeros_and_a_bucket_past_noise_or_a_wrong_length_raises():
    empty = ReferenceRows.concat([], 4)
    np.testing.assert_array_equal(empty.counts(np.zeros(0, np.int64), 2), [0, 0, 0])
    with pytest.raises(ReferenceRowsError, match="past the noise bucket 2"):
        rows().counts(np.array([0, 3, 0, 0]), 2)
    with pytest.raises(ReferenceRowsError, match="one integer bucket per row"):
        rows().counts(np.array([0, 1]), 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ids=("a",), sources=("window", "window"), weights=[1, 1], X=np.zeros((2, 3))), "2 sources"),
    (dict(ids=("a", "b"), sources=("window", "window"), weights=[1], X=np.zeros((2, 3))), "weights of shape"),
    (dict(ids=("a", "b"), sources=("window", "window"), weights=[1, 1], X=np.zeros(2)), "X of shape"),
    (dict(ids=("a", "b"), sources=("window", "window"), weights=[1, -1], X=np.zeros((2, 3))), ">= 0"),
    (dict(ids=("a", "b"), sources=("window", "window"), weights=[1, np.nan], X=np.zeros((2, 3))), "finite"),
    (dict(ids=("a", "b"), sources=("window", "recent"), weights=[1, 1], X=np.zeros((2, 3))), "'recent'"),
    (dict(ids=("a",), sources=("window",), weights=[1], X=np.full((1, 3), 1e6)), "float16-safe"),
])
def test_inconsistent_rows_raise_a_message_naming_the_problem(kwargs, match):
    with pytest.raises(ReferenceRowsError, match=match):
        ReferenceRows(**kwargs)


def test_rows_are_stored_as_float16_and_round_trip_through_bytes():
    r = rows()
    assert r.X.dtype == np.float16 and r.weights.dtype == np.float64
    back = ReferenceRows.from_bytes(r.to_bytes())
    assert back.ids == r.ids and back.sources == r.sources
    np.testing.assert_array_equal(back.weights, r.weights)
    np.testing.assert_array_equal(back.X, r.X)
    assert back.X.dtype == np.float16
    empty = ReferenceRows.from_bytes(ReferenceRows.concat([], 5).to_bytes())
    assert len(empty) == 0 and empty.X.shape == (0, 5)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD = dict(format=np.int64(1), ids=np.array(["a"]), sources=np.array(["window"]), weights=np.ones(1),
            X=np.zeros((1, 2), np.float16))


@pytest.mark.parametrize("data, match", [
    (b"not a zip", "cannot be read"),
    (_npz(**{k: v for k, v in GOOD.items() if k != "weights"}), r"lacks the arrays \['weights'\]"),
    (_npz(**{**GOOD, "format": np.int64(2)}), "format 1 only"),
    (_npz(**{**GOOD, "ids": np.array([{"a": 1}], dtype=object)}), "cannot be read"),  # never unpickled
    (_npz(**{**GOOD, "ids": np.array([7])}), "1-d string array"),
    (_npz(**{**GOOD, "weights": np.array([-1.0])}), ">= 0"),
])
def test_a_damaged_or_foreign_file_raises_instead_of_loading(data, match):
    with pytest.raises(ReferenceRowsError, match=match):
        ReferenceRows.from_bytes(data)


class FakeRegistry:
    def __init__(self, files: dict[str, bytes]):
        self._files = files

    def files(self, lang, version):
        return sorted(self._files)

    def read_file(self, lang, version, name):
        return self._files[name]


def test_read_reference_rows_is_none_for_a_version_written_before_versions_kept_them():
    assert read_reference_rows(FakeRegistry({"anchors.jsonl": b""}), "it", "v1") is None
    got = read_reference_rows(FakeRegistry({REFERENCE_ROWS_FILE: rows().to_bytes()}), "it", "v2")
    assert got is not None and got.ids == rows().ids


# plan_update: 3-d unit rows near the axes; centroids are axes 0 and 1 (K = 2), a row near axis 2 is noise.
CENTROIDS = np.eye(2, 3, dtype=np.float32)


def unit(axes: list[int], seed: int) -> np.ndarray:
    x = np.eye(3, dtype=np.float32)[axes] + np.random.default_rng(seed).uniform(0, 0.1, (len(axes), 3))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def assign(X: np.ndarray) -> np.ndarray:
    """Nearest centroid by cosine, noise (bucket K = 2) below 0.5: the rows above are far from it either way."""
    sims = np.asarray(X, np.float32) @ CENTROIDS.T
    return np.where(sims.max(axis=1) < 0.5, 2, sims.argmax(axis=1))


def same_clusters(Xt: np.ndarray, Xr: np.ndarray, Xp: np.ndarray) -> SimpleNamespace:
    """Selection clusters equal to the codebook's (noise -1), so these cases count by hand."""
    lab = [np.where(assign(X) == 2, -1, assign(X)) if len(X) else np.zeros(0, np.int64) for X in (Xt, Xr, Xp)]
    return SimpleNamespace(target=lab[0], window=lab[1], pool=lab[2], centroids=CENTROIDS, summary={"k": 2})


def plan(target_axes, recent_axes, pool_axes, window_counts=None, budget=0.5):
    Xt, Xr, Xp = unit(target_axes, 1), unit(recent_axes, 2), unit(pool_axes, 3)
    target = [Record(id=f"t{i}", lang="it", text=f"target {i}") for i in range(len(target_axes))]
    recent = [(f"q{i}", f"recent {i}") for i in range(len(recent_axes))]
    pool = [Record(id=f"p{i}", lang="es", text=f"pool {i}") for i in range(len(pool_axes))]
    Xr = Xr if len(recent_axes) else np.zeros((0, 3), np.float32)
    Xp = Xp if len(pool_axes) else np.zeros((0, 3), np.float32)
    p = plan_update("it", target, Xt, assign(Xt), recent, Xr, assign(Xr), pool, Xp, assign(Xp), CENTROIDS,
                    settings=PlanSettings(budget=budget, seed=4), clusters=same_clusters(Xt, Xr, Xp),
                    window_counts=window_counts)
    return p, (Xt, Xr, Xp)


def test_without_window_counts_the_rows_are_every_recent_row_and_recount_to_the_plan_counts():
    p, (_, Xr, _) = plan([0, 0, 1, 2], [1, 1, 0, 2, 1], [])
    r = p.reference_rows
    assert r.ids == ("q0", "q1", "q2", "q3", "q4") and set(r.sources) == {"window"}  # all 5, held-out ones too
    np.testing.assert_array_equal(r.weights, np.ones(5))
    np.testing.assert_array_equal(p.counts, [1, 3, 1])  # recent buckets 1, 1, 0, noise, 1
    np.testing.assert_array_equal(r.counts(assign(r.X.astype(np.float32)), 2), p.counts)
    assert r.X.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(r.X.astype(np.float32), axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(r.X.astype(np.float32), Xr, atol=1e-3)


def test_without_a_usage_proxy_d_t_stands_in_and_its_rows_are_kept():
    p, _ = plan([0, 0, 1, 2], [], [])
    r = p.reference_rows
    assert p.kind == "target_only"
    assert r.ids == ("t0", "t1", "t2", "t3") and set(r.sources) == {"target"}  # all of D_t, as n_eval counts it
    np.testing.assert_array_equal(p.counts, [2, 1, 1])
    np.testing.assert_array_equal(r.counts(assign(r.X.astype(np.float32)), 2), p.counts)


def test_selected_rows_are_kept_once_with_their_repetition_count_as_weight():
    p, _ = plan([0] * 11, [1] * 6, [0, 0, 1, 1, 1, 2], budget=0.5)
    r = p.reference_rows
    sel = [i for i, s in enumerate(r.sources) if s == "selected"]
    assert r.ids[:6] == tuple(f"q{i}" for i in range(6)) and len(sel) == len(set(r.ids[i] for i in sel)) > 0
    assert r.weights[sel].sum() == p.selection["n_selected"] == 6  # |S| = 0.5 * |D_t| = 5.5, halves up
    assert all(int(r.ids[i][1:]) in (2, 3, 4) for i in sel)  # the usage proxy is all cluster 1
    assert r.weights[sel].max() > 1  # three cluster-1 pool rows for six picks: rows repeat
    np.testing.assert_array_equal(p.counts, [0, 12, 0])  # 6 recent + 6 selected, all cluster 1
    np.testing.assert_array_equal(r.counts(assign(r.X.astype(np.float32)), 2), p.counts)


def test_with_window_counts_the_rows_are_the_recent_texts_so_a_recount_may_differ():
    p, _ = plan([0, 0, 1, 2], [1, 1, 0, 2, 1], [], window_counts=np.array([0.0, 7.0, 0.0]))
    np.testing.assert_array_equal(p.counts, [0, 7, 0])  # the frozen window had 7 queries, 5 texts are left
    r = p.reference_rows
    assert len(r) == 5 and set(r.sources) == {"window"}
    np.testing.assert_array_equal(r.counts(assign(r.X.astype(np.float32)), 2), [1, 3, 1])
