"""What the status page draws: per-language JS readings and an events timeline, capped lists in Redis.

Keys of language ``l`` (hash-tagged like the window's and the daemon's, so one language stays on one slot):

  ``{prefix}:{l}:history:js``      one JSON reading per daemon check that computed (or tried to compute) JS
                                   (eq. 5 against theta, eq. 6), RPUSHed: oldest first, the last ``cap`` kept
  ``{prefix}:{l}:history:events``  compass.events messages (``Event.to_json()`` dicts) in the order the daemon
                                   read them, LPUSHed: newest first, the newest ``cap`` kept

A reading is ``{"at", "js", "theta", "n_samples", "state"}``: ``js`` is None where no P_mon/P_ref pair could be
compared (an empty window, no reference, a codebook mismatch); ``state`` is the check's state. Readings of the
daemon also carry ``detector`` (fixed, calibrated or sequential), ``statistic`` (what the detector compared: JS in
bits, or the CUSUM in nats) and ``threshold`` (the effective threshold it was compared with), so that the status
page can draw a calibrated threshold; a reading without them is stored without them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import redis

from compass.errors import CompassError
from infra.keys import Keys
from infra.messages import Event

JS_MAX = 2000  # readings kept per language: ~33 h at the default 60 s check interval
EVENTS_MAX = 500  # events kept per language
READING_FIELDS = ("at", "js", "theta", "n_samples", "state")
DETECTOR_FIELDS = ("detector", "statistic", "threshold")  # optional: kept when present


class HistoryError(CompassError, ValueError):
    """A reading or a cap that cannot be stored."""


def js_key(lang: str, prefix: str = "compass") -> str:
    return Keys(prefix).history_js(lang)


def events_key(lang: str, prefix: str = "compass") -> str:
    return Keys(prefix).history_events(lang)


def _cap(cap: Any, name: str) -> int:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise HistoryError(f"{name}: got {cap!r}; must be an integer >= 1 (entries kept per language)")
    return cap


def _limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise HistoryError(f"limit: got {limit!r}; must be an integer >= 0 or None (everything kept)")
    return limit


def _number(value: Any, name: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        none = " or None" if optional else ""
        raise HistoryError(f"reading field {name!r}: got {value!r}; must be a finite number{none}")
    return float(value)


def reading_of(reading: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a reading (extra fields, e.g. a check's ``detail``, are dropped); raises HistoryError."""
    if not isinstance(reading, Mapping):
        raise HistoryError(f"reading: got {type(reading).__name__}; must be a mapping with fields {READING_FIELDS}")
    n = reading.get("n_samples", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise HistoryError(f"reading field 'n_samples': got {n!r}; must be an integer >= 0")
    state = reading.get("state")
    if not isinstance(state, str) or not state:
        raise HistoryError(f"reading field 'state': got {state!r}; must be a non-empty string (the check's state)")
    row = {"at": _number(reading.get("at"), "at"), "js": _number(reading.get("js"), "js", optional=True),
           "theta": _number(reading.get("theta"), "theta"), "n_samples": n, "state": state}
    if "detector" in reading:
        detector = reading["detector"]
        if detector is not None and not isinstance(detector, str):
            raise HistoryError(f"reading field 'detector': got {detector!r}; must be a string or None")
        row["detector"] = detector
    for name in ("statistic", "threshold"):
        if name in reading:
            row[name] = _number(reading[name], name, optional=True)
    return row


def record_check(client: redis.Redis, lang: str, reading: Mapping[str, Any], prefix: str = "compass",
                 cap: int = JS_MAX) -> dict[str, Any]:
    """Append one check's reading to ``lang``'s JS history, keeping the newest ``cap``; returns what was stored."""
    with client.pipeline(transaction=True) as pipe:
        row = queue_check(pipe, lang, reading, prefix, cap)
        pipe.execute()
    return row


def queue_check(pipe: redis.client.Pipeline, lang: str, reading: Mapping[str, Any], prefix: str = "compass",
                cap: int = JS_MAX) -> dict[str, Any]:
    """Add the commands of ``record_check`` to ``pipe`` (for a daemon round appending all its languages' readings
    in one round trip: a MULTI pipeline keeps each append and trim together); returns what will be stored.
    Raises HistoryError before queueing anything."""
    cap = _cap(cap, "cap")
    row = reading_of(reading)
    key = js_key(lang, prefix)
    pipe.rpush(key, json.dumps(row))
    pipe.ltrim(key, -cap, -1)
    return row


def queue_event(pipe: redis.client.Pipeline, event: Event, prefix: str = "compass", cap: int = EVENTS_MAX) -> None:
    """Add the commands recording ``event`` to ``pipe`` (for callers batching other writes with it)."""
    cap = _cap(cap, "cap")
    key = events_key(event.language, prefix)
    pipe.lpush(key, json.dumps(event.to_json(), ensure_ascii=False))
    pipe.ltrim(key, 0, cap - 1)


def _rows(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for item in raw:
        try:
            row = json.loads(item)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # only this module writes these keys; a hand-edited entry is not worth failing the page
        if isinstance(row, dict):
            out.append(row)
    return out


def js_history(client: redis.Redis, lang: str, prefix: str = "compass", limit: int | None = None) -> list[dict]:
    """``lang``'s readings oldest first; with ``limit`` only the newest ``limit`` of them (still oldest first)."""
    limit = _limit(limit)
    if limit == 0:
        return []
    return _rows(client.lrange(js_key(lang, prefix), -limit if limit else 0, -1))


def timeline(client: redis.Redis, lang: str, prefix: str = "compass", limit: int | None = None) -> list[dict]:
    """``lang``'s events newest first (as read from compass.events); at most ``limit`` of them."""
    limit = _limit(limit)
    if limit == 0:
        return []
    return _rows(client.lrange(events_key(lang, prefix), 0, limit - 1 if limit else -1))
