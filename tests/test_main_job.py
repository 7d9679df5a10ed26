"""The main job end to end at reduced size (tiny model, short stream) against the real Kafka and Redis: a planted
topic shift in one language leads to exactly one update and a promoted version, the other languages stay put, and
routing sends each configured language to its adapter and everything else to the base model."""

from __future__ import annotations

import json

import pytest
from tinylm import make_tiny_lm

from compass.corpora import chatterbot
from compass.registry import AdapterRegistry
from compass.route import Router
from daemon.demo.loop import run_demo
from daemon.demo.scenario import build
from daemon.demo.settings import PREFIX, DemoSettings

# The gate's outcome depends on where the daemon's checks fall in the stream; CPU contention from a parallel worker
# moves them (a tiny random LM's NLL change is then within noise), so `make test` runs this file alone.
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    scenario = build(chatterbot.load().records, ("it", "es"), "it")
    texts = [r.text for r in scenario.pool + scenario.phase1 + scenario.phase2]
    texts += [r.text for rs in scenario.targets.values() for r in rs]
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), texts, hidden=64, layers=2, vocab_size=400)


def test_planted_shift_gives_one_update_and_a_promotion(services, tmp_path, tiny_model):
    cfg = services.config.model_copy(update={"state_dir": tmp_path / "state"})
    settings = DemoSettings(
        model=str(tiny_model), languages=("it", "es"), shift_language="it", phase1_per_language=120,
        phase2_size=200, window_size=100, min_samples=60, check_interval_s=1.0, http=False,
        train={"rank": 4, "alpha": 8, "lr": 2e-2, "max_epochs": 3, "batch_size": 16, "max_length": 32,
               "max_examples": None, "target_modules": "all-linear"},
        theta=0.25, gate={"retention_margin": 0.5}, update_timeout_s=240,
    )
    lines: list[str] = []
    result = run_demo(cfg, settings, lines.append)
    print("\n".join(lines))

    updates = [e for e in result.events if e["type"] == "update_finished"]
    assert [(e["language"], e["data"]["outcome"]) for e in updates] == [("it", "promoted")], lines
    drift = [e for e in result.events if e["type"] == "drift_detected"]
    assert [e["language"] for e in drift] == ["it"]
    assert drift[0]["data"]["js"] > settings.theta
    promoted = result.promoted[0]["data"]["adapter_version"]
    assert result.final_versions == {"it": promoted, "es": result.bootstrap["es"]}
    assert promoted != result.bootstrap["it"]

    registry = AdapterRegistry(tmp_path / "state" / "demo" / "adapters")
    manifest = registry.read_version("it", promoted)[2]
    assert manifest.parent == result.bootstrap["it"]
    assert manifest.kind == "compass"
    # the run directory holds what `compass report` renders
    report = json.loads((result.run_dir / "jobs" / f"{updates[0]['job_id']}.json").read_text())
    assert report["outcome"] == "promoted" and report["version"] == promoted
    assert report["selection"]["n_selected"] > 0
    assert (result.run_dir / "js.jsonl").read_text().count('"language": "it"') > 0
    assert result.report is not None and result.report.is_file()

    # routing: configured languages reach their adapters, others the base model (§3.2.5)
    from compass.langid import make_identifier
    from compass.languages import load_languages

    langs = load_languages(tmp_path / "state" / "demo" / "languages.yaml")
    router = Router(make_identifier(cfg.langid, langs.enabled), registry, langs.enabled)
    router.refresh()
    it = router.route("Che cosa è l'intelligenza artificiale? Mi piacerebbe saperne di più sui computer.")
    es = router.route("¿Qué es la inteligencia artificial? Me gustaría saber más sobre las computadoras.")
    de = router.route("Was ist künstliche Intelligenz? Ich möchte mehr über Computer erfahren.")
    assert (it.language, it.version, it.kind) == ("it", promoted, "compass")
    assert (es.language, es.version, es.kind) == ("es", result.bootstrap["es"], "compass")
    assert (de.adapter, de.kind) == (None, "base")
    assert PREFIX == "compass-demo"
