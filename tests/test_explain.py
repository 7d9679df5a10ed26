"""Drift explained (compass/drift/explain.py): per-cluster JS terms that sum to JS, ranked with labels."""

from __future__ import annotations

import numpy as np
import pytest

from compass.divergence import js_divergence
from compass.drift.explain import explain, js_terms


def test_terms_by_hand_sum_to_js():
    # p = [.5, .5, 0], q = [0, .5, .5]: m = [.25, .5, .25]; terms 1/2 * .5 * log2 2 = .25, 0, .25
    assert js_terms([0.5, 0.5, 0.0], [0, 2, 2]).tolist() == [0.25, 0.0, 0.25]
    assert js_divergence([0.5, 0.5, 0.0], [0, 2, 2]) == 0.5


@pytest.mark.parametrize("seed", range(20))
def test_terms_sum_exactly_to_js(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(9)) * (rng.random(9) > 0.2)
    q = rng.integers(0, 50, 9)
    p[0], q[1] = p[0] or 0.1, q[1] or 3  # never all zero
    terms = js_terms(p, q)
    assert (terms >= 0).all()
    assert terms.sum() == pytest.approx(js_divergence(p, q), abs=1e-12)


def test_explain_ranks_clusters_with_labels_and_examples():
    # P_ref [.5, .25, .25, 0] vs window counts [1, 1, 6, 0]: q = [.125, .125, .75, 0]
    e = explain([0.5, 0.25, 0.25, 0.0], [1, 1, 6, 0], labels=["rain · storm", "", "goal · match"],
                examples=[["rain today"], [], ["who won the match"]], top=2)
    m = np.array([0.3125, 0.1875, 0.5])
    t = 0.5 * np.array([0.5, 0.25, 0.25]) * np.log2(np.array([0.5, 0.25, 0.25]) / m) \
        + 0.5 * np.array([0.125, 0.125, 0.75]) * np.log2(np.array([0.125, 0.125, 0.75]) / m)
    assert [c.cluster for c in e.clusters] == [2, 0]
    assert e.js == pytest.approx(t.sum(), abs=1e-15) and e.n_samples == 8
    top = e.clusters[0]
    assert (top.p_ref, top.p_window, top.count, top.label, top.example) == (0.25, 0.75, 6, "goal · match",
                                                                             "who won the match")
    assert top.js_term == pytest.approx(t[2], abs=1e-15) and top.share_of_js == pytest.approx(t[2] / t.sum())
    full = explain([0.5, 0.25, 0.25, 0.0], [1, 1, 6, 1], top=10)
    assert [(c.cluster, c.label, c.example) for c in full.clusters][-1:] == [(1, None, None)]
    assert (3, "noise") in [(c.cluster, c.label) for c in full.clusters]
    assert sum(c.js_term for c in full.clusters) == pytest.approx(js_divergence([0.5, 0.25, 0.25, 0], [1, 1, 6, 1]))


def test_cli_explain_prints_the_table_from_redis(services, redis, tmp_path):
    import json

    import typer
    import yaml
    from typer.testing import CliRunner

    from daemon.cli.explain import explain as explain_cmd
    from infra.reference import set_reference
    from infra.window import Assignment, WindowStore

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "labels.json").write_text(json.dumps({"store_examples": True, "clusters": [
        {"cluster": 0, "label": "rain · storm", "examples": ["will it rain"]},
        {"cluster": 1, "label": "goal · match", "examples": ["who scored\nthe goal " + "x" * 80]}]}))
    cfg = services.config
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"redis": {"host": cfg.redis.host, "port": cfg.redis.port,
                                                     "db": cfg.redis.db},
                                           "consumer": {"codebook_dir": str(tmp_path)}}))
    app = typer.Typer()
    app.command()(explain_cmd)
    runner = CliRunner()
    empty = runner.invoke(app, ["sw", "--config", str(config_file)])
    assert empty.exit_code == 0 and empty.stdout == "sw: nothing to explain: no P_ref; set one with `compass ref set`\n"

    set_reference(redis, "sw", probs=[0.5, 0.5, 0.0], codebook_version="v1", adapter_version="a1")
    items = [Assignment(f"q{i}", 0, "compass.queries", 0, i, f"text {i}") for i in range(4)]
    WindowStore(redis).apply_batch({"sw": (4, items)}, "v1", 3)
    result = runner.invoke(app, ["sw", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    # JS = .25 + .0612781 = .3112781 (tests/test_daemon.py): cluster 1 is 80.3% of it, cluster 0 19.7%
    assert result.stdout.splitlines() == [
        "sw: JS 0.3113 bits over 4 queries (codebook v1); top 3 clusters",
        "cluster  label         P_ref  window  JS term  of JS  example",
        "      1  goal · match  0.500   0.000   0.2500  80.3%  who scored the goal " + "x" * 39 + "…",
        "      0  rain · storm  0.500   1.000   0.0613  19.7%  will it rain",
        "      2  noise         0.000   0.000   0.0000   0.0%  -",
    ]
    as_json = json.loads(runner.invoke(app, ["sw", "--top", "1", "--json", "--config", str(config_file)]).stdout)
    assert [c["cluster"] for c in as_json["clusters"]] == [1] and as_json["clusters"][0]["js_term"] == 0.25


def test_the_job_report_names_the_clusters_the_reselection_filled():
    from compass.drift.explain import name_selection

    selection = {"n_selected": 5, "clusters": [{"cluster": 0, "selected": 1}, {"cluster": 1, "selected": 0},
                                               {"cluster": 2, "selected": 4}, {"cluster": 3, "selected": 0}]}
    labels = {"clusters": [{"cluster": 0, "label": "rain · storm"}, {"cluster": 1, "label": "goal"},
                           {"cluster": 2, "label": ""}]}
    named = name_selection(selection, labels)
    assert [c["label"] for c in named["clusters"]] == ["rain · storm", "goal", None, "noise"]
    assert named["filled"] == [{"cluster": 2, "label": None, "selected": 4},
                               {"cluster": 0, "label": "rain · storm", "selected": 1}]
    assert name_selection(selection, None)["filled"][1] == {"cluster": 0, "label": None, "selected": 1}
    assert name_selection({"clusters": []}, labels)["filled"] == [] and "filled" not in selection
