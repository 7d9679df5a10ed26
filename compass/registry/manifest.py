"""The manifest stored beside each adapter version: what it was trained from and on, so a version can be
audited, compared against drift (P_ref, codebook) and rolled back without consulting anything else.

A manifest is plain JSON (``schema`` 1); ``from_json`` checks every field and lists every problem, naming
the field, the value received and the fix. ``promoted_at`` / ``gate`` stay ``None`` in the stored file:
promotions are recorded in the registry's ``promotions.jsonl`` so a written version is never mutated.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from compass import langcodes
from compass.errors import CompassError

SCHEMA = 1
# A version is one path component: letters, digits, '.', '_', '-'; not '.', not '..', no leading '.'
# (names starting with '.' are the registry's temporary directories).
_VERSION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_P_REF_TOL = 1e-4


class RegistryError(CompassError, ValueError):
    """A registry name, manifest or operation is invalid; the message names the value and the fix."""


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, e.g. ``2025-01-31T12:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_version() -> str:
    """``v<UTC %Y%m%dT%H%M%S>-<6 hex>``: sorts chronologically, unique across concurrent writers."""
    return f"v{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def check_language(lang: Any, what: str = "language") -> str:
    """Return ``lang`` if it is a compass language code in normal form (``sw``, not ``swa`` or ``../x``)."""
    try:
        norm = langcodes.normalize(lang)
    except ValueError as e:
        raise RegistryError(f"{what} {lang!r} is not a language code ({e})") from None
    if norm != lang:
        raise RegistryError(f"{what} {lang!r} is not in normal form; use {norm!r} (compass.langcodes.normalize)")
    return lang


def check_version(version: Any, what: str = "version") -> str:
    """Return ``version`` if it is a safe single path component (no '/', no '..', no leading '.')."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version) or ".." in version:
        raise RegistryError(
            f"{what} {version!r} is invalid; use 1-128 characters of [A-Za-z0-9._-], not starting with '.' "
            "and without '..' (e.g. one made by compass.registry.new_version())"
        )
    return version


def check_file_name(name: Any, what: str = "file name") -> str:
    """File names inside a version follow the version rule: one path component, nothing hidden."""
    return check_version(name, what)


ADAPTER_KINDS = ("compass", "target_only")


@dataclass(frozen=True)
class AdapterManifest:
    """Everything needed to reproduce, audit and compare one adapter version of one language."""

    language: str
    version: str
    base_model_id: str
    codebook_version: str
    parent: str | None = None
    p_ref: list[float] = field(default_factory=list)
    anchor_ids: list[str] = field(default_factory=list)
    fisher_file: str | None = None
    data_hashes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)
    promoted_at: str | None = None
    gate: dict[str, Any] | None = None
    # "compass": D_t + COMPASS selection guided by a usage proxy; "target_only": D_t alone (no proxy E_t yet);
    # routing (§3.2.5) reports which one serves a language.
    kind: str = "compass"

    def __post_init__(self) -> None:
        problems = _problems(asdict(self))
        if problems:
            raise RegistryError("adapter manifest: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> AdapterManifest:
        if not isinstance(data, dict):
            raise RegistryError(f"{source}: expected a JSON object, got {type(data).__name__}; rewrite the manifest")
        data = dict(data)
        schema = data.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise RegistryError(f"{source}: field 'schema' is {schema!r}; this compass reads schema {SCHEMA} only")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("language", "version", "base_model_id", "codebook_version") if n not in data)
        problems = [f"unknown field {n!r} (remove it)" for n in unknown]
        problems += [f"field {n!r} is missing (add it)" for n in missing]
        if problems:
            raise RegistryError(f"{source}: " + "; ".join(problems))
        try:
            return cls(**data)
        except RegistryError as e:
            raise RegistryError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> AdapterManifest:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise RegistryError(f"{source}: not valid JSON ({e}); rewrite it from the adapter's training run") from None
        return cls.from_dict(data, source)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _str_or_none(d: dict[str, Any], name: str, problems: list[str]) -> None:
    if d[name] is not None and not isinstance(d[name], str):
        problems.append(f"field {name!r} is {d[name]!r}; give a string or null")


def _problems(d: dict[str, Any]) -> list[str]:
    """Every problem of a manifest's fields, each naming field, value and fix."""
    problems: list[str] = []
    for name, check in (("language", check_language), ("version", check_version)):
        try:
            check(d[name], f"field {name!r}:")
        except RegistryError as e:
            problems.append(str(e))
    if d["parent"] is not None:
        try:
            check_version(d["parent"], "field 'parent':")
        except RegistryError as e:
            problems.append(str(e))
    for name in ("base_model_id", "codebook_version", "created_at"):
        if not isinstance(d[name], str) or not d[name]:
            problems.append(f"field {name!r} is {d[name]!r}; give a non-empty string")
    _str_or_none(d, "promoted_at", problems)
    if d["fisher_file"] is not None:
        try:
            check_file_name(d["fisher_file"], "field 'fisher_file':")
        except RegistryError as e:
            problems.append(str(e))
    p = d["p_ref"]
    if not isinstance(p, list | tuple) or not all(_is_num(x) and x >= 0 for x in p):
        problems.append(f"field 'p_ref' is {p!r}; give a list of finite non-negative probabilities")
    elif p and abs(sum(p) - 1.0) > _P_REF_TOL:
        problems.append(f"field 'p_ref' sums to {sum(p):.6f}; give probabilities summing to 1 (normalise counts)")
    a = d["anchor_ids"]
    if not isinstance(a, list | tuple) or not all(isinstance(x, str) for x in a):
        problems.append(f"field 'anchor_ids' is {a!r}; give a list of record ids (strings)")
    h = d["data_hashes"]
    if not isinstance(h, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in h.items()):
        problems.append(f"field 'data_hashes' is {h!r}; give an object of name -> hex digest strings")
    m = d["metrics"]
    if not isinstance(m, dict) or not all(isinstance(k, str) and _is_num(v) for k, v in m.items()):
        problems.append(f"field 'metrics' is {m!r}; give an object of name -> finite number")
    g = d["gate"]
    if g is not None and not (isinstance(g, dict) and isinstance(g.get("outcome"), str)):
        problems.append(f"field 'gate' is {g!r}; give null or an object with a string 'outcome' (and 'reasons')")
    if d["kind"] not in ADAPTER_KINDS:
        problems.append(f"field 'kind' is {d['kind']!r}; give one of {list(ADAPTER_KINDS)}")
    return problems
