"""`compass select` end to end on a small case with precomputed embeddings (no embedder is loaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from compass.data import Record, read_records, write_records
from daemon.cli import app

DIM = 8


def _unit(rng: np.random.Generator, centre: int, n: int) -> np.ndarray:
    X = np.zeros((n, DIM), np.float32)
    X[:, centre] = 1.0
    X += rng.normal(0, 0.05, size=(n, DIM)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture
def case(tmp_path):
    """3 topics along 3 axes. D_t: 8 rows of topic 0, 2 of topic 1, none of topic 2; E_t: 3 of each topic;
    pool: 10 per topic in es / pt / ja / fr / ko."""
    rng = np.random.default_rng(0)
    topics = {"train": [0] * 8 + [1] * 2, "eval": [0, 1, 2] * 3, "pool": [0, 1, 2] * 10}
    langs = {"train": ["it"] * 10, "eval": ["it"] * 9, "pool": ["es", "pt", "ja", "fr", "ko"] * 6}
    emb = tmp_path / "emb"
    emb.mkdir()
    for part, ts in topics.items():
        recs = [Record(id=f"{part}-{i}", lang=langs[part][i], text=f"{part} text {i}", topic=f"t{t}",
                       meta={"keep": i}) for i, t in enumerate(ts)]  # fmt: skip
        write_records(recs, tmp_path / f"{part}.jsonl")
        np.save(emb / f"{part}.npy", np.concatenate([_unit(rng, t, 1) for t in ts]))
    return tmp_path


def _args(d, *extra):
    return ["select", "--target", "it", "--train", str(d / "train.jsonl"), "--pool", str(d / "pool.jsonl"),
            "--eval", str(d / "eval.jsonl"), "--embeddings", str(d / "emb"), "--out", str(d / "out"),
            "--k-clusters", "3", "--seed", "1", *extra]  # fmt: skip


def test_select_writes_training_set_and_report(case):
    result = CliRunner().invoke(app, _args(case, "--budget", "0.8", "--method", "compass-d"))
    assert result.exit_code == 0, result.output
    out = case / "out"
    records = read_records(out / "selected.jsonl")
    train = read_records(case / "train.jsonl")
    # D_t first, whole and in order; then S with round(0.8 * 10) = 8 selections
    assert [r.id for r in records[:10]] == [r.id for r in train]
    assert all(r.meta["compass"]["origin"] == "target" and r.meta["keep"] == i for i, r in enumerate(records[:10]))
    aux = records[10:]
    assert aux and all(r.meta["compass"]["origin"] == "aux" for r in aux)
    assert sum(r.meta["compass"]["count"] for r in aux) == 8
    assert {r.meta["compass"]["source_lang"] for r in aux} <= {"es", "pt", "ja", "fr", "ko"}
    assert all(isinstance(r.meta["compass"]["score"], float) for r in aux)
    # one cluster per topic. w = n_eval / (n_t + 1) = (3/9, 3/3, 3/1) -> w~ = (1/13, 3/13, 9/13);
    # 8 w~ = (0.62, 1.85, 5.54): floors (0, 1, 5), the 2 left go to the largest remainders -> quotas (1, 2, 5)
    per_topic = {t: sum(r.meta["compass"]["count"] for r in aux if r.topic == t) for t in ("t0", "t1", "t2")}
    assert per_topic == {"t0": 1, "t1": 2, "t2": 5}
    assert len({r.meta["compass"]["cluster"] for r in records if r.topic == "t2"}) == 1

    report = json.loads((out / "report.json").read_text())
    assert {"target_lang", "method", "config", "summary", "js", "distributions", "clusters",
            "source_languages", "extra"} <= set(report)  # fmt: skip
    assert report["summary"]["selected"] == 8 and report["summary"]["n_clusters"] == 3
    assert report["js"]["eval_vs_train_plus_s"] < report["js"]["eval_vs_train"]
    assert sum(r["count"] for r in report["source_languages"]) == 8
    for png in ("clusters.png", "source_languages.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["compass", "random", "langsim", "target"])
def test_baseline_methods(case, method):
    result = CliRunner().invoke(app, _args(case, "--method", method))
    assert result.exit_code == 0, result.output
    aux = [r for r in read_records(case / "out" / "selected.jsonl") if r.meta["compass"]["origin"] == "aux"]
    assert len(aux) == (0 if method == "target" else 8)
    if method == "langsim":  # langsim_k = 3: it -> es, fr, pt (Romance) before ja, ko
        assert {r.lang for r in aux} <= {"es", "fr", "pt"}


def test_misaligned_embeddings_name_file_rows_and_expected(case):
    np.save(case / "emb" / "pool.npy", np.zeros((29, DIM), np.float32))
    result = CliRunner().invoke(app, _args(case))
    assert result.exit_code == 2
    assert "pool.npy: 29 rows but" in result.output and "has 30 records; expected 30 rows" in result.output


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--method", "best"], "--method: got 'best'; use one of compass, compass-d"),
        (["--clusterer", "dbscan"], "--clusterer: got 'dbscan'; use one of kmeans, hdbscan"),
        (["--budget", "-1"], "budget"),
        (["--clusterer", "hdbscan"], "--k-clusters: got 3 with --clusterer hdbscan; it applies to kmeans and"),
        (["--boundary", "far"], "boundary"),
        (["--tau-sim", "1.5"], "tau_sim"),
        (["--delta", "-0.1"], "delta"),
    ],
)
def test_bad_options_exit_2(case, change, fragment):
    result = CliRunner().invoke(app, _args(case, *change))
    assert result.exit_code == 2
    assert fragment in result.output


def test_missing_file_exit_2(case):
    (case / "eval.jsonl").unlink()
    result = CliRunner().invoke(app, _args(case))
    assert result.exit_code == 2
    assert "--eval:" in result.output and "file not found" in result.output
