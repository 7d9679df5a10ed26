"""Routing (§3.2.5): real sentences through real py3langid to the right adapter of a tmp registry, with the
base-model and target-only fallbacks, unconfigured languages on the base model, caller overrides and the cached
table."""

from __future__ import annotations

import json

import pytest
import torch
from test_langid import SENTENCES as LANGID_SENTENCES
from test_langid import UNCONFIGURED, UNCONFIGURED_CASES

from compass.langid import Identification, make_identifier
from compass.langid_config import LangIdConfig
from compass.languages import LanguagesConfig, load_languages
from compass.registry import AdapterManifest, AdapterRegistry
from compass.route import RouteDecision, RouteError, Router, RouteTarget
from infra.settings import ServiceConfig

LANGS = ["de", "en", "es", "fr", "it"]
SENTENCES = {
    "en": "The weather is lovely today and I want to go for a walk in the park.",
    "fr": "Je voudrais réserver une table pour deux personnes ce soir, s'il vous plaît.",
    "de": "Ich habe gestern ein sehr interessantes Buch über die Geschichte gelesen.",
    "es": "¿Dónde está la estación de tren más cercana? Necesito llegar pronto.",
    "it": "Mi piacerebbe sapere come funziona questo programma di intelligenza artificiale.",
}
PASS = {"outcome": "pass", "reasons": ["test"]}


def put(reg: AdapterRegistry, lang: str, version: str, kind: str = "compass", promote: bool = True) -> str:
    """A registry version with placeholder weights: the router reads manifests only."""
    m = AdapterManifest(language=lang, version=version, base_model_id="tiny", codebook_version="c1", kind=kind)
    reg.write_version(lang, {"w": torch.zeros(1)}, {"peft_type": "LORA"}, m)
    if promote:
        reg.promote(lang, version, PASS)
    return version


@pytest.fixture(scope="module")
def identifier():
    return make_identifier(LangIdConfig(), LANGS)


@pytest.fixture
def reg(tmp_path) -> AdapterRegistry:
    r = AdapterRegistry(tmp_path / "adapters")
    put(r, "it", "it-v1")
    put(r, "es", "es-v1")
    put(r, "fr", "fr-v1", kind="target_only")
    put(r, "de", "de-v0", promote=False)  # written, never promoted: no adapter serves German
    return r


def test_routes_real_sentences_to_adapters_and_fallbacks(identifier, reg):
    router = Router(identifier, reg, LANGS)
    assert router.refresh() == {"it": RouteTarget("it-v1", "compass"), "es": RouteTarget("es-v1", "compass"),
                                "fr": RouteTarget("fr-v1", "target_only")}
    got = {lang: router.route(text) for lang, text in SENTENCES.items()}
    assert {k: (d.language, d.adapter, d.version, d.kind) for k, d in got.items()} == {
        "it": ("it", "it", "it-v1", "compass"),
        "es": ("es", "es", "es-v1", "compass"),
        "fr": ("fr", "fr", "fr-v1", "target_only"),
        "de": ("de", None, None, "base"),
        "en": ("en", None, None, "base"),
    }
    # the full model's probabilities (es shares 0.04 with ext and gl), not renormalised over LANGS
    assert {k: round(d.confidence, 2) for k, d in got.items()} == {"it": 1.0, "es": 0.95, "fr": 1.0, "de": 1.0, "en": 0.99}
    assert got["de"].reason == f"de detected with confidence {got['de'].confidence:.2f}; no adapter promoted; base model"
    assert "target-only adapter fr-v1" in got["fr"].reason
    assert "COMPASS adapter it-v1" in got["it"].reason
    assert router.route_batch(list(SENTENCES.values())) == list(got.values())


def test_undetermined_text_goes_to_the_base_model(identifier, reg):
    router = Router(identifier, reg, LANGS)
    router.refresh()
    d = router.route("   ")
    assert (d.language, d.confidence, d.adapter, d.version, d.kind) == ("und", 0.0, None, None, "base")
    assert "undetermined" in d.reason


def test_caller_language_overrides_detection(identifier, reg):
    router = Router(identifier, reg, LANGS)
    router.refresh()
    d = router.route(SENTENCES["en"], lang="it")
    assert d == RouteDecision("it", 1.0, "it", "it-v1", "compass", "it set by the caller; COMPASS adapter it-v1")
    assert router.route(SENTENCES["en"], lang="ITA").language == "it"  # any form langcodes accepts
    d = router.route(SENTENCES["en"], lang="sw")  # a valid code nobody configured
    assert (d.language, d.kind, d.reason) == ("sw", "base", "sw set by the caller; language not configured; base model")
    with pytest.raises(RouteError, match=r"lang 'not a language'.*omit lang"):
        router.route("hello", lang="not a language")
    with pytest.raises(RouteError, match="lang 'und'"):
        router.route("hello", lang="und")


def test_table_is_cached_until_refresh(identifier, reg):
    router = Router(identifier, reg, LANGS)
    router.refresh()
    put(reg, "it", "it-v2")
    put(reg, "de", "de-v1", promote=True)
    assert router.route(SENTENCES["it"]).version == "it-v1"  # no registry read per request
    assert router.refresh("it") == {"it": RouteTarget("it-v2", "compass")}
    assert router.route(SENTENCES["it"]).version == "it-v2"
    assert router.route(SENTENCES["de"]).kind == "base"
    assert router.refresh() == {"de": RouteTarget("de-v1", "compass")}
    assert router.refresh() == {}
    reg.rollback("it")
    assert router.refresh() == {"it": RouteTarget("it-v1", "compass")}


def test_unreadable_pointer_keeps_the_cached_adapter(identifier, reg, tmp_path):
    router = Router(identifier, reg, LANGS)
    router.refresh()
    (tmp_path / "adapters" / "it" / "current").write_text("{not json")
    assert router.refresh() == {}
    assert router.route(SENTENCES["it"]).version == "it-v1"


def test_from_config_reads_the_configured_registry(tmp_path, reg):
    cfg = ServiceConfig().model_copy(
        update={"adapters": ServiceConfig().adapters.model_copy(update={"registry": str(tmp_path / "adapters")})})
    langs = LanguagesConfig.model_validate({"languages": {c: {} for c in LANGS}})
    router = Router.from_config(cfg, langs)
    assert router.languages == tuple(LANGS)
    assert dict(router.table) == {"it": RouteTarget("it-v1", "compass"), "es": RouteTarget("es-v1", "compass"),
                                  "fr": RouteTarget("fr-v1", "target_only")}
    assert router.route(SENTENCES["es"]).to_dict() == {
        "language": "es", "confidence": router.route(SENTENCES["es"]).confidence, "adapter": "es",
        "version": "es-v1", "kind": "compass", "reason": router.route(SENTENCES["es"]).reason}
    assert router.route(UNCONFIGURED["gl"][0]).reason == "gl detected with confidence 1.00; language not configured; base model"


# ------------------------------------------------------------------------------ the default configuration
@pytest.fixture(scope="module")
def default_router(tmp_path_factory) -> Router:
    """The default identifier and languages.yaml, with an adapter promoted for every configured language: a query
    that reached a configured adapter would show it."""
    enabled = load_languages().enabled
    reg = AdapterRegistry(tmp_path_factory.mktemp("all") / "adapters")
    for lang in enabled:
        put(reg, lang, f"{lang}-v1")
    router = Router(make_identifier(LangIdConfig(), enabled), reg, enabled)
    assert len(router.refresh()) == len(enabled) == 28
    return router


@pytest.mark.parametrize(("lang", "text"), UNCONFIGURED_CASES)
def test_unconfigured_languages_go_to_the_base_model(default_router, lang, text):
    d = default_router.route(text)
    assert (d.language, d.adapter, d.version, d.kind) == (lang, None, None, "base")
    assert d.reason == f"{lang} detected with confidence {d.confidence:.2f}; language not configured; base model"


def test_the_issue_examples_are_reported_as_themselves(default_router):
    ca, fi = default_router.route_batch([UNCONFIGURED["ca"][0], UNCONFIGURED["fi"][0]])
    assert ca.reason == "ca detected with confidence 0.96; language not configured; base model"  # was es 0.81
    assert fi.reason == "fi detected with confidence 1.00; language not configured; base model"  # was sv 0.97


def test_configured_languages_route_to_their_adapters(default_router):
    configured = sorted(set(LANGID_SENTENCES) & set(default_router.languages))
    assert len(configured) == 28
    got = {lang: default_router.route(LANGID_SENTENCES[lang]) for lang in configured}
    assert {k: (d.language, d.version, d.kind) for k, d in got.items()} == {
        lang: (lang, f"{lang}-v1", "compass") for lang in configured}


def test_decide_follows_the_shared_classification(default_router):
    # whatever the identifier said: a configured language is served, any other one and und go to the base model
    decide = default_router.decide
    assert decide(Identification("pt", 0.44)).version == "pt-v1"  # e.g. a near-tie answer (gl 0.46, pt 0.44)
    assert decide(Identification("gl", 0.46)) == RouteDecision(
        "gl", 0.46, None, None, "base", "gl detected with confidence 0.46; language not configured; base model")
    assert decide(Identification("und", 0.31)) == RouteDecision(
        "und", 0.31, None, None, "base",
        "language undetermined (confidence 0.31 below the language-ID threshold); base model")


def test_bad_language_list_is_refused(identifier):
    with pytest.raises(RouteError, match="languages"):
        Router(identifier, None, ["en", "??"])


def test_cli_prints_decisions(tmp_path, reg):
    from typer.testing import CliRunner

    from daemon.cli import app

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"adapters:\n  registry: {tmp_path / 'adapters'}\n")
    langs = tmp_path / "languages.yaml"
    langs.write_text("languages:\n" + "".join(f"  {c}: {{}}\n" for c in LANGS))
    r = CliRunner().invoke(app, ["route", SENTENCES["it"], SENTENCES["de"], "--json", "-c", str(cfg), "-l", str(langs)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [(d["language"], d["version"], d["kind"]) for d in rows] == [("it", "it-v1", "compass"), ("de", None, "base")]
    r = CliRunner().invoke(app, ["route", SENTENCES["fr"], "-c", str(cfg), "-l", str(langs)])
    assert r.exit_code == 0 and "target_only" in r.output and "fr-v1" in r.output
    r = CliRunner().invoke(app, ["route", UNCONFIGURED["ca"][0], "--json", "-c", str(cfg), "-l", str(langs)])
    assert r.exit_code == 0, r.output
    assert {k: v for k, v in json.loads(r.output).items() if k != "confidence"} == {
        "language": "ca", "adapter": None, "version": None, "kind": "base",
        "reason": "ca detected with confidence 0.96; language not configured; base model"}
