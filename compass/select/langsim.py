"""LangSim: rank auxiliary languages by similarity to the target (the paper's LangSim baseline, §4.3).

The paper's LangSim picks "optimal transfer language(s)" by a linguistic-similarity metric (averaged lang2vec
vectors). compass keeps a small, auditable table instead: ``langsim.yaml`` next to this module, one row per
language with its Glottolog family, WALS genus, subgroup, ISO 15924 script, WALS 81A word order, WALS 87A
adjective-noun order and morphological type; the file header documents sources and weights.

    similarity(a, b) = sum of weight[f] over the features f where a and b have the same non-null value
                       (1.0 for identical codes)

Codes go through ``compass.langcodes.normalize`` first (``pt-BR`` -> ``pt``). Unknown languages: as a
*target* or in ``similarity`` they raise ``LangSimError`` (nothing meaningful can be ranked against them); as a
*candidate* they are ranked after every known candidate (by code), so a pool with a language missing from the
table still works.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from compass import langcodes
from compass.errors import CompassError

TABLE_PATH = Path(__file__).with_name("langsim.yaml")
FEATURES = ("family", "genus", "subgroup", "script", "order", "adjnoun", "morph")
_ALLOWED = {
    "order": {"SOV", "SVO", "VSO", "VOS", "OVS", "OSV", "ND"},
    "adjnoun": {"AN", "NA", "ND"},
    "morph": {"isolating", "agglutinative", "fusional"},
}


class LangSimError(CompassError, ValueError):
    """A language is missing from the LangSim table, or the table itself is malformed."""


@dataclass(frozen=True)
class LangSimTable:
    weights: dict[str, float]
    rows: dict[str, dict[str, str | None]]  # code -> feature -> value (None = unknown)


def _check_table(raw: object, source: str) -> LangSimTable:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise LangSimError(f"{source}: expected a mapping with weights, columns, languages; got {type(raw).__name__}")
    columns = raw.get("columns")
    if list(columns or []) != list(FEATURES):
        problems.append(f"columns: got {columns!r}; expected {list(FEATURES)}")
    weights = raw.get("weights") or {}
    if set(weights) != set(FEATURES):
        problems.append(f"weights: got keys {sorted(weights)}; expected one weight per feature {list(FEATURES)}")
    elif abs(sum(weights.values()) - 1.0) > 1e-9:
        problems.append(f"weights: sum to {sum(weights.values())}; make them sum to 1.0")
    rows: dict[str, dict[str, str | None]] = {}
    for code, values in (raw.get("languages") or {}).items():
        if not isinstance(values, list) or len(values) != len(FEATURES):
            problems.append(f"languages.{code}: expected a list of {len(FEATURES)} values {list(FEATURES)}")
            continue
        row = dict(zip(FEATURES, (None if v is None else str(v) for v in values), strict=True))
        for feature, allowed in _ALLOWED.items():
            if row[feature] is not None and row[feature] not in allowed:
                problems.append(f"languages.{code}.{feature}: got {row[feature]!r}; use one of {sorted(allowed)}")
        if str(code) != langcodes.normalize(str(code)):
            problems.append(f"languages.{code}: not a normalised compass code; use {langcodes.normalize(str(code))!r}")
        rows[str(code)] = row
    if problems:
        raise LangSimError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return LangSimTable({k: float(v) for k, v in weights.items()}, rows)


@functools.lru_cache(maxsize=4)
def load_table(path: str | Path = TABLE_PATH) -> LangSimTable:
    """The validated table (cached); safe_load only, no code runs from the file."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        return _check_table(yaml.safe_load(f), str(path))


def _code(lang: str, role: str) -> str:
    try:
        return langcodes.normalize(lang)
    except ValueError as e:
        raise LangSimError(f"{role}: {e}") from None


def _row(table: LangSimTable, code: str, role: str) -> dict[str, str | None]:
    if code not in table.rows:
        raise LangSimError(
            f"{role}: language {code!r} is not in the LangSim table ({TABLE_PATH.name}); add a row for it "
            f"(family, genus, subgroup, script, order, adjnoun, morph) or choose one of {len(table.rows)} known codes"
        )
    return table.rows[code]


def similarity(a: str, b: str, table: LangSimTable | None = None) -> float:
    """Weighted feature agreement of languages ``a`` and ``b`` in [0, 1]; 1.0 when they are the same code."""
    table = table or load_table()
    ca, cb = _code(a, "a"), _code(b, "b")
    ra, rb = _row(table, ca, "a"), _row(table, cb, "b")
    if ca == cb:
        return 1.0
    score = sum(w for f, w in table.weights.items() if ra[f] is not None and ra[f] == rb[f])
    return round(score, 9)  # exact ties stay ties despite float summation order


def most_similar(target: str, candidates: Iterable[str], k: int, table: LangSimTable | None = None) -> list[str]:
    """The ``k`` candidate languages most similar to ``target``, best first.

    Candidates are normalised and deduplicated; the target itself is skipped (it is not auxiliary).
    Order: similarity descending, then code ascending (stable, seed-free). Candidates missing from the
    table rank after all known ones, by code. ``k`` larger than the number of candidates returns them all.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LangSimError(f"k: got {k!r}; pass a positive integer number of auxiliary languages, e.g. k=3")
    table = table or load_table()
    tcode = _code(target, "target")
    _row(table, tcode, "target")
    codes = {_code(c, "candidates") for c in candidates} - {tcode}
    known = sorted((c for c in codes if c in table.rows), key=lambda c: (-similarity(tcode, c, table), c))
    unknown = sorted(c for c in codes if c not in table.rows)
    return (known + unknown)[:k]
