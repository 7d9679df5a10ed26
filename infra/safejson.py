"""Bounded JSON parsing for untrusted message values: nesting depth, number size and Unicode checked first.

Python's ``json`` recurses once per nesting level (3,000 ``[`` raise RecursionError), converts integers of any
length (more than 4,300 digits raise ValueError; fewer still cost quadratic time), turns ``1e400`` into
``inf`` and accepts ``NaN``/``Infinity``. ``loads_bounded`` rejects all of these with ``JsonLimitError`` before
or while parsing, without recursion of its own: string literals are blanked with one regex, then brackets
and digit runs are counted in what is left (C-speed scans; the common small message costs microseconds).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a \uD800-\uDFFF escape: maybe a lone surrogate


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 32  # nesting of objects and arrays
    max_digits: int = 32  # digits in one number literal (integer part, fraction and exponent each)


class JsonLimitError(ValueError):
    """The document breaks a limit; ``reason`` is a short tag (too_deep, number_too_large, non_finite_number)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def _depth_of(skeleton: str) -> int:
    depth = worst = 0
    for m in _BRACKET.finditer(skeleton):
        depth += 1 if m.group() in "[{" else -1
        worst = max(worst, depth)
    return worst


def precheck(text: str, limits: JsonLimits) -> None:
    """Raise JsonLimitError when ``text`` nests deeper or holds longer digit runs than ``limits`` allow."""
    # Counting brackets anywhere over-counts only those inside strings: skip the string blanking when even that
    # count is within the limit (nearly every message).
    if text.count("[") + text.count("{") > limits.max_depth:
        depth = _depth_of(_STRING.sub('""', text))
        if depth > limits.max_depth:
            raise JsonLimitError("too_deep", f"JSON nests {depth} levels deep; the limit is "
                                 f"consumer.max_json_depth = {limits.max_depth}; flatten the value")
    run = re.compile(rf"\d{{{limits.max_digits + 1},}}")
    if run.search(text) and (m := run.search(_STRING.sub('""', text))):
        raise JsonLimitError("number_too_large", f"a JSON number has {len(m.group())} digits (starting "
                             f"{m.group()[:12]}...); the limit is consumer.max_number_digits = {limits.max_digits}; "
                             "send large numbers as strings")


def _finite_float(s: str) -> float:
    value = float(s)
    if not math.isfinite(value):
        raise JsonLimitError("non_finite_number", f"JSON number {s[:40]} overflows a 64-bit float; send a number "
                             "within +-1.8e308")
    return value


def _constant(name: str) -> Any:
    raise JsonLimitError("non_finite_number", f"{name} is not JSON (RFC 8259); send a finite number or null")


def loads_bounded(text: str, limits: JsonLimits) -> Any:
    """``json.loads`` within ``limits``; raises JsonLimitError (a limit) or json.JSONDecodeError (not JSON)."""
    precheck(text, limits)
    return json.loads(text, parse_float=_finite_float, parse_constant=_constant)


def lone_surrogate(text: str, obj: Any) -> tuple[str, int] | None:
    """(JSON path, position) of the first string (key or value) of ``obj`` holding a lone surrogate, else None.

    Only ``\\uD8xx``-``\\uDFxx`` escapes can produce one from valid UTF-8, so ``text`` is scanned for them first."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    stack: list[tuple[str, Any]] = [("$", obj)]
    while stack:  # iterative: depth is bounded already, but a walk needs no recursion either
        path, value = stack.pop()
        items: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            for k, v in value.items():
                items.append((f"a key of {'the message' if path == '$' else path}", k))
                items.append((f"field {k!r}" if path == "$" else f"{path}[{k!r}]", v))
        elif isinstance(value, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return path, e.start
        stack.extend(reversed(items))
    return None
