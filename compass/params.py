"""Parameter checks shared by every method config (select, adapt, cluster, drift calibration).

One sentence for every invalid parameter, as scikit-learn words it, so the message alone names the field, the
owner, what is allowed and what was received:

    The 'budget' parameter of SelectionConfig must be a float in (0, 10]. Got -1 instead.

Every function takes ``(name, owner, ...)`` in that order and an ``error`` class, so each package raises its own
error type (``SelectionError``, ``AdaptError``, ``ClusterParamError``, ...) with the same wording.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def param_message(name: str, owner: str, must: str, got: object) -> str:
    """The sentence: "The 'name' parameter of owner must be <must>. Got <got!r> instead."."""
    return f"The {name!r} parameter of {owner} must be {must}. Got {got!r} instead."


def bad_param(name: str, owner: str, must: str, got: object, error: type[Exception] = ValueError) -> Exception:
    """``error`` carrying ``param_message``; the caller raises it (so tracebacks point at the check)."""
    return error(param_message(name, owner, must, got))


def is_int(value: object, *, allow_numpy: bool = False) -> bool:
    """A Python int (numpy integers too with ``allow_numpy``); never a bool, though bool subclasses int."""
    kinds = (int, np.integer) if allow_numpy else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool)


def is_number(value: object, *, finite: bool = True) -> bool:
    """An int or float (numpy floats too) that is not a bool (and, with ``finite``, not nan or inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        return False
    return not finite or math.isfinite(value)


def check_int(
    name: str,
    owner: str,
    value: object,
    minimum: int | None = None,
    error: type[Exception] = ValueError,
    *,
    allow_numpy: bool = False,
) -> int:
    """``value`` as an int when it is an int >= ``minimum`` (any int when None), else raise ``error``."""
    if not is_int(value, allow_numpy=allow_numpy) or (minimum is not None and value < minimum):
        must = "an int" if minimum is None else f"an int >= {minimum}"
        raise bad_param(name, owner, must, value, error)
    return int(value)


def _interval(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    """The bounds as words: "in (0, 10]" with both ends, "> 0" / ">= 0" / "< 1" / "<= 1" with one, "" with none."""
    low, high = (gt, "(") if gt is not None else (ge, "["), (lt, ")") if lt is not None else (le, "]")
    if low[0] is not None and high[0] is not None:
        return f" in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low[0] is not None:
        return f" {'>' if gt is not None else '>='} {low[0]:g}"
    if high[0] is not None:
        return f" {'<' if lt is not None else '<='} {high[0]:g}"
    return ""


def check_real(
    name: str,
    owner: str,
    value: object,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    must: str | None = None,
    finite: bool = True,
    error: type[Exception] = ValueError,
) -> float:
    """``value`` as a float when it is a number within the bounds, else raise ``error``.

    ``must`` replaces the generated wording ("a float in (0, 10]") where the message adds a hint, e.g.
    "a float > 0 (the paper uses 2e-4)". ``finite=False`` lets inf through (where a bound alone decides).
    """
    ok = is_number(value, finite=finite) and (
        (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    )
    if not ok:
        raise bad_param(name, owner, must or f"a float{_interval(gt, ge, lt, le)}", value, error)
    return float(value)


def check_choice(
    name: str, owner: str, value: object, choices: Sequence[object], error: type[Exception] = ValueError,
    *, must: str | None = None,
) -> None:
    """Raise ``error`` unless ``value`` is one of ``choices`` (named "one of a, b, c" unless ``must`` is given)."""
    if value not in choices:
        raise bad_param(name, owner, must or f"one of {', '.join(map(str, choices))}", value, error)
