"""Config machinery shared by the method's configs and the service settings: frozen pydantic models whose
problems are all reported at once, each with its key path, the value received and what is allowed.

A *cross-field rule* is a plain function whose parameter names are field names of one model; it returns a
problem message or None. Each model lists its rules in ``_rules``. Constructing a model checks them (the
validator of ``Frozen``); the loaders instead set the ``DEFER_RULES`` context key and check them in a separate
pass over the raw dict (``cross_field_problems``), because pydantic skips a model's after-validators whenever
any of its fields is invalid, which would hide these problems behind unrelated ones.

``validate_file`` is that whole pass for one YAML file: every problem, or a frozen model, never half of one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from compass.errors import ConfigError

DEFER_RULES = "compass_defer_cross_field_rules"
Rule = Callable[..., "str | None"]
M = TypeVar("M", bound=BaseModel)


@functools.cache
def rule_fields(rule: Rule) -> tuple[str, ...]:
    """The field names a rule reads: its parameter names."""
    return tuple(inspect.signature(rule).parameters)


def apply_rules(rules: tuple[Rule, ...], values: Any) -> list[str]:
    """Messages of the rules that ``values`` (an object whose attributes are validated fields) breaks."""
    found = (rule(**{f: getattr(values, f) for f in rule_fields(rule)}) for rule in rules)
    return [msg for msg in found if msg]


class Frozen(BaseModel):
    """Base of every config section: immutable, unknown keys rejected, cross-field ``_rules`` checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    _rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Self:
        if self._rules and not (info.context or {}).get(DEFER_RULES):
            problems = apply_rules(self._rules, self)
            if problems:
                raise ValueError("; ".join(problems))
        return self


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file ({} for an empty one); ``ConfigError`` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found; pass an existing YAML file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), [f"not valid UTF-8 at byte {e.start}; save the file as UTF-8"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML: {getattr(e, 'problem', e)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"top level must be a mapping of keys; got {type(data).__name__}"])
    return data


def model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds: ``Model``, ``dict[str, Model]`` or ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def field_help(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The ``description`` of the field at ``loc``, used as 'allowed: ...' in error messages."""
    current: Any = model
    desc = None
    for part in loc:
        if current is None:
            return None
        info = current.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            continue  # a dict key (e.g. a language code) or a list index: stay on the same model
        desc = info.description
        current = model_in(info.annotation)
    return desc


def _raw_rule_problem(model: type[Frozen], rule: Rule, data: Mapping[str, Any]) -> str | None:
    """``rule`` on the raw section ``data``: its fields validated alone, absent ones at their defaults."""
    fields = rule_fields(rule)
    try:
        inputs = model.model_validate({f: data[f] for f in fields if f in data}, context={DEFER_RULES: True})
    except ValidationError:
        return None  # one of the rule's own fields is invalid: the field pass reports it with its value
    return next(iter(apply_rules((rule,), inputs)), None)


def cross_field_problems(model: type[BaseModel], data: Any, loc: tuple[Any, ...] = ()) -> list[str]:
    """Every cross-field rule broken anywhere in raw ``data`` for ``model``, as ``key.path: MESSAGE``.

    Runs apart from pydantic (which skips them when any field is bad) so they are listed with field problems.
    Sections that are not mappings are skipped: the field pass reports their type."""
    if not isinstance(data, Mapping):
        return []
    path = ".".join(str(p) for p in loc) or "(top level)"
    rules = getattr(model, "_rules", ())
    problems = [f"{path}: {msg}" for rule in rules if (msg := _raw_rule_problem(model, rule, data))]
    for name, info in model.model_fields.items():
        sub, value = model_in(info.annotation), data.get(name)
        if sub is None or not isinstance(value, Mapping):
            continue
        if get_origin(info.annotation) is dict:  # e.g. languages: {code: LanguageSettings}
            for key, item in value.items():
                problems += cross_field_problems(sub, item, (*loc, name, key))
        else:
            problems += cross_field_problems(sub, value, (*loc, name))
    return problems


def format_validation_error(
    err: ValidationError, model: type[BaseModel], replaced: Mapping[str, str] | None = None
) -> list[str]:
    """One line per problem: ``key.path: got VALUE; MESSAGE (allowed: ...)``.

    ``replaced`` maps keys that once existed (dotted paths) to what replaced them, so an old file is told the
    replacement instead of "unknown key"."""
    replaced = replaced or {}
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e.get("loc", ()))
        path = ".".join(str(p) for p in loc) or "(top level)"
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            if path in replaced:
                problems.append(f"{path}: got {e.get('input')!r}; {replaced[path]}")
                continue
            problems.append(f"{path}: unknown key; remove it or check its spelling")
            continue
        if e.get("type") == "missing":
            problems.append(f"{path}: required key is missing")
            continue
        value = e.get("input")
        shown = "" if isinstance(value, Mapping) else f"got {value!r}; "
        help_ = field_help(model, loc)
        allowed = f" (allowed: {help_})" if help_ else ""
        problems.append(f"{path}: {shown}{msg}{allowed}")
    return problems


def validate_file(
    model: type[M],
    data: Mapping[str, Any],
    source: str,
    problems: list[str] | None = None,
    rules_data: Any = None,
    replaced: Mapping[str, str] | None = None,
) -> M:
    """``data`` validated into ``model``, or ``ConfigError(source)`` listing every problem: ``problems`` found
    earlier, every field problem, and every cross-field rule broken in ``rules_data`` (default ``data``; pass the
    raw dict as the model sees it, e.g. with defaults merged)."""
    problems = list(problems or ())
    cfg = None
    try:
        cfg = model.model_validate(data, context={DEFER_RULES: True})
    except ValidationError as e:
        problems += format_validation_error(e, model, replaced)
    problems += cross_field_problems(model, data if rules_data is None else rules_data)
    if problems or cfg is None:
        raise ConfigError(source, problems)
    return cfg
