"""compass.validation: the config machinery shared by the method's sections and the service settings, on a toy
model with hand-computed answers; and the moved homes of the config sections (compass.*, infra.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from compass.errors import ConfigError
from compass.validation import (
    Frozen,
    cross_field_problems,
    field_help,
    format_validation_error,
    model_in,
    read_yaml,
    rule_fields,
    validate_file,
)


def _order_rule(low: int, high: int) -> str | None:
    return f"low ({low}) must not exceed high ({high})" if low > high else None


class Span(Frozen):
    low: int = Field(0, ge=0, description="an integer >= 0")
    high: int = Field(10, ge=0, description="an integer >= 0, at least low")
    _rules = (_order_rule,)


class Spans(Frozen):
    main: Span = Span()
    named: dict[str, Span] = Field(default_factory=dict)
    maybe: Span | None = None


def test_rule_fields_are_the_rule_parameters():
    assert rule_fields(_order_rule) == ("low", "high")


@pytest.mark.parametrize(
    "annotation, expected",
    [(Span, Span), (dict[str, Span], Span), (Span | None, Span), (int, None), (list[int], None)],
)
def test_model_in(annotation, expected):
    assert model_in(annotation) is expected


@pytest.mark.parametrize(
    "loc, expected",
    [
        (("main", "low"), "an integer >= 0"),
        (("named", "x", "high"), "an integer >= 0, at least low"),  # a dict key stays on the same model
        (("maybe", "low"), "an integer >= 0"),
        (("main", "nope"), None),
    ],
)
def test_field_help(loc, expected):
    assert field_help(Spans, loc) == expected


@pytest.mark.parametrize(
    "data, expected",
    [
        ({}, []),
        ({"main": {"low": 5, "high": 3}}, ["main: low (5) must not exceed high (3)"]),
        ({"main": {"low": 11}}, ["main: low (11) must not exceed high (10)"]),  # high at its default
        ({"main": {"low": -1, "high": -5}}, []),  # a bad input field: the field pass reports it, not the rule
        ({"named": {"a": {"low": 2, "high": 1}, "b": {}}}, ["named.a: low (2) must not exceed high (1)"]),
        ({"main": "not a mapping"}, []),
    ],
)
def test_cross_field_problems(data, expected):
    assert cross_field_problems(Spans, data) == expected


def test_constructing_a_model_checks_its_rules():
    with pytest.raises(ValidationError, match=r"low \(3\) must not exceed high \(2\)"):
        Span(low=3, high=2)


def test_format_validation_error_names_key_value_and_what_is_allowed():
    with pytest.raises(ValidationError) as err:
        Spans.model_validate({"main": {"low": -1}, "old": 1, "gone": 2})
    assert sorted(format_validation_error(err.value, Spans, replaced={"gone": "use main.low"})) == [
        "gone: got 2; use main.low",
        "main.low: got -1; Input should be greater than or equal to 0 (allowed: an integer >= 0)",
        "old: unknown key; remove it or check its spelling",
    ]


def test_validate_file_lists_field_and_rule_problems_together():
    with pytest.raises(ConfigError) as err:
        validate_file(Spans, {"main": {"low": 1, "high": 0}, "named": {"a": {"low": "x"}}}, "toy.yaml", ["earlier"])
    assert err.value.source == "toy.yaml"
    assert err.value.problems == [
        "earlier",
        "named.a.low: got 'x'; Input should be a valid integer, unable to parse string as an integer "
        "(allowed: an integer >= 0)",
        "main: low (1) must not exceed high (0)",
    ]


def test_validate_file_returns_the_frozen_model():
    cfg = validate_file(Spans, {"named": {"a": {"high": 3}}}, "toy.yaml")
    assert cfg.named["a"] == Span(high=3) and cfg.main == Span()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("a: 1\n", {"a": 1}),
        ("- 1\n", "top level must be a mapping of keys; got list"),
        ("a: [1\n", "invalid YAML"),
    ],
)
def test_read_yaml(tmp_path, text, expected):
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    if isinstance(expected, dict):
        assert read_yaml(path) == expected
    else:
        with pytest.raises(ConfigError, match=expected):
            read_yaml(path)


def test_read_yaml_missing_and_not_utf8(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_yaml(tmp_path / "none.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: caf\xe9\n")  # 0xe9 is byte 6 (0-based): latin-1, not UTF-8
    with pytest.raises(ConfigError, match="not valid UTF-8 at byte 6"):
        read_yaml(bad)


def test_service_config_holds_the_method_sections_defined_in_compass():
    from compass.adapt_settings import AdaptersConfig, ModelConfig
    from compass.embed.config import EmbedderConfig
    from compass.langid_config import LangIdConfig
    from compass.paths import REPO_ROOT
    from infra.settings import DEFAULT_CONFIG, ServiceConfig, WorkerConfig

    cfg = ServiceConfig()
    assert isinstance(cfg.embedder, EmbedderConfig) and isinstance(cfg.langid, LangIdConfig)
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.adapters, AdaptersConfig)
    assert isinstance(cfg.worker, WorkerConfig)
    assert DEFAULT_CONFIG == REPO_ROOT / "configs" / "default.yaml" and Path(DEFAULT_CONFIG).is_file()
