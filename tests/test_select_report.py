"""Selection report: exact numbers on a hand-built case; the PNGs are real PNG files."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from compass.select.config import SelectionConfig
from compass.select.report import build_report, write_report

NAN = float("nan")


def _selection() -> SimpleNamespace:
    # K = 2 clusters + the noise bucket (index 2).
    # D_t labels [0, 0, 0, 1] -> n_t = (3, 1, 0); E_t labels [0, 1, 1, 1] -> n_eval = (1, 3, 0)
    # pool labels [0, 1, 1, -1, -1] -> n_aux = (1, 2, 2), languages es pt fr es de
    # w = n_eval / (n_t + 1) = (1/4, 3/2, 0), w~ = (1/7, 6/7, 0); B = 0.75 -> |S| = 3, quotas (0, 3, 0)
    # cluster 1 has 2 candidates for a quota of 3: pool row 1 (pt) is taken twice -> shortfall in cluster 1
    stats = SimpleNamespace(
        n_t=np.array([3, 1, 0]),
        n_eval=np.array([1, 3, 0]),
        n_aux=np.array([1, 2, 2]),
        rho=np.array([1 / 3, 3.0, NAN]),
        w=np.array([0.25, 1.5, 0.0]),
        w_tilde=np.array([1 / 7, 6 / 7, 0.0]),
    )
    return SimpleNamespace(
        pool_indices=np.array([1, 2]),
        counts=np.array([2, 1]),
        scores=np.array([0.9, 0.8]),
        clusters=np.array([1, 1]),
        train_labels=np.array([0, 0, 0, 1]),
        eval_labels=np.array([0, 1, 1, 1]),
        pool_labels=np.array([0, 1, 1, -1, -1]),
        centroids=np.eye(2, 3, dtype=np.float32),
        stats=stats,
        quotas=np.array([0, 3, 0]),
        selected_per_cluster=np.array([0, 3, 0]),
        shortfall_clusters=[1],
        tau_sim=0.9,
        method="compass",
        config=SelectionConfig(budget=0.75, seed=7),
        total=3,
    )


POOL_LANGS = ["es", "pt", "fr", "es", "de"]


def test_report_numbers_are_exact():
    r = build_report(_selection(), POOL_LANGS, "it")
    assert r["target_lang"] == "it" and r["method"] == "compass"
    assert r["config"]["budget"] == 0.75 and r["config"]["seed"] == 7
    assert r["summary"] == {
        "n_train": 4,
        "n_eval": 4,
        "n_pool": 5,
        "n_clusters": 2,
        "selected": 3,
        "distinct": 2,
        "repeated": 1,
        "tau_sim": 0.9,
        "shortfall_clusters": [1],
        "reallocated": 0,
        "fell_short_clusters": [],
        "unmet": 0,
    }
    c0, c1, noise = r["clusters"]
    assert c0 == {
        "cluster": 0, "n_t": 3, "n_eval": 1, "n_aux": 1, "rho": pytest.approx(1 / 3), "w": 0.25,
        "w_tilde": pytest.approx(1 / 7), "quota": 0, "selected": 0, "shortfall": False,
        "extra": 0, "unfilled": 0, "fell_short": False,
        "p_eval": 0.25, "p_train": 0.75, "p_train_plus_s": pytest.approx(3 / 7),
    }  # fmt: skip
    assert (c1["rho"], c1["quota"], c1["selected"], c1["shortfall"]) == (3.0, 3, 3, True)
    assert c1["p_train_plus_s"] == pytest.approx(4 / 7)  # (1 + 3) / (4 + 3)
    assert noise["cluster"] == "noise" and noise["rho"] is None and noise["p_eval"] == 0.0
    assert r["distributions"]["buckets"] == [0, 1, "noise"]
    # before: P_eval (1/4, 3/4), P_train (3/4, 1/4), M = (1/2, 1/2): JS = 3/4 log2(3) - 1
    assert r["js"]["eval_vs_train"] == pytest.approx(0.75 * math.log2(3) - 1, abs=1e-12)
    # after: P_{D_t+S} = (3/7, 4/7), M = (19/56, 37/56)
    kl_p = 0.25 * math.log2(14 / 19) + 0.75 * math.log2(42 / 37)
    kl_q = 3 / 7 * math.log2(24 / 19) + 4 / 7 * math.log2(32 / 37)
    assert r["js"]["eval_vs_train_plus_s"] == pytest.approx(0.5 * (kl_p + kl_q), abs=1e-12)
    assert r["js"]["eval_vs_train_plus_s"] < r["js"]["eval_vs_train"]
    assert r["source_languages"] == [
        {"lang": "pt", "name": "Portuguese", "family": "Indo-European", "count": 2, "distinct": 1},
        {"lang": "fr", "name": "French", "family": "Indo-European", "count": 1, "distinct": 1},
    ]
    json.dumps(r, allow_nan=False)  # strict JSON: no NaN / Infinity anywhere


def test_pool_langs_length_is_checked():
    with pytest.raises(ValueError, match="pool_langs: 2 languages for 5 pool rows"):
        build_report(_selection(), ["es", "pt"], "it")


def test_write_report_files(tmp_path):
    r = build_report(_selection(), POOL_LANGS, "it", extra={"train": "D_t.jsonl"})
    paths = write_report(r, tmp_path / "out")
    assert json.loads(paths["report"].read_text()) == json.loads(json.dumps(r))
    for key in ("clusters_plot", "languages_plot"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5_000


def test_empty_selection_plots(tmp_path):
    sel = _selection()
    sel.pool_indices, sel.counts, sel.clusters = np.array([], int), np.array([], int), np.array([], int)
    sel.selected_per_cluster, sel.shortfall_clusters, sel.method = np.array([0, 0, 0]), [], "target"
    r = build_report(sel, POOL_LANGS, "it")
    assert r["js"]["eval_vs_train_plus_s"] == r["js"]["eval_vs_train"]
    assert r["source_languages"] == []
    paths = write_report(r, tmp_path)
    assert paths["languages_plot"].read_bytes()[:4] == b"\x89PNG"
