"""Query events on the queries topic: the wire schema producers write and consumers read (version 1).

One JSON object per Kafka message value, UTF-8:

    {"id": "q-123", "text": "How do I reset my password?", "lang": "en",
     "ts": "2026-11-22T10:00:00Z", "meta": {"tenant": "acme"}}

- ``id``   (required) non-empty string of at most 512 characters, unique per query; the monitor counts an id once
  within ``consumer.dedup_horizon_s`` (a re-sent event at a new offset is a duplicate).
- ``text`` (required) the user's query, non-empty after stripping white space.
- ``lang`` (optional) language code in compass's scheme (compass/langcodes.py); language ID fills it in
  when it is absent.
- ``ts``   (optional) RFC 3339 string or epoch milliseconds (integer), between 1970 and 2100; the Kafka
  timestamp is used otherwise.
- ``meta`` (optional) JSON object, passed through untouched.

``null`` counts as absent for the optional fields. No string (keys and values, ``meta`` included) may hold a lone
surrogate, and ``id``, ``text`` and ``lang`` may not hold NUL (U+0000). The document may nest at most
``consumer.max_json_depth`` levels and no number may have more than ``consumer.max_number_digits`` digits or
overflow a float (infra/safejson.py).

The message header ``compass-schema`` carries the schema version (``1``); it may appear at most once. Unknown
top-level fields are rejected, so a typo (``"txt"``) is caught instead of silently dropping the text.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from compass import langcodes
from compass.errors import CompassError
from infra.safejson import JsonLimitError, JsonLimits, loads_bounded, lone_surrogate

SCHEMA_VERSION = 1
SCHEMA_HEADER = "compass-schema"
_FIELDS = {"id", "text", "lang", "ts", "meta"}
MAX_ID_CHARS = 512
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: later (or negative) times are unit mix-ups or garbage
_TS_FIX = "use epoch milliseconds (an integer in [0, 4102444800000]) or an RFC 3339 string"


class BadEvent(CompassError, ValueError):
    """A message that is not a valid query event; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class QueryEvent:
    id: str
    text: str
    lang: str | None = None
    ts_ms: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.lang is not None:
            out["lang"] = self.lang
        if self.ts_ms is not None:
            out["ts"] = self.ts_ms
        if self.meta:
            out["meta"] = self.meta
        return out


def encode_event(event: QueryEvent) -> bytes:
    return json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parse_ts(value: Any) -> int | None:
    if value is None:
        return None
    ms: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str) and len(value) <= 64:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            ms = int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    if ms is None or not 0 <= ms <= TS_MAX_MS:
        raise BadEvent("bad_ts", f"field 'ts': got {value!r:.80}; {_TS_FIX}")
    return ms


def _check_string(name: str, value: Any, *, required: bool, max_chars: int | None = None) -> None:
    if not isinstance(value, str) or (required and not value.strip()):
        what = "non-empty string id" if name == "id" else "non-empty text"
        raise BadEvent(f"missing_{name}", f"field {name!r}: got {value!r:.80}; every event needs a {what}")
    if "\0" in value:
        raise BadEvent("nul_character", f"field {name!r} holds NUL (U+0000) at position {value.index(chr(0))}; "
                       "remove it (it is not text)")
    if max_chars is not None and len(value) > max_chars:
        raise BadEvent(f"bad_{name}", f"field {name!r} has {len(value)} characters; the limit is {max_chars}; "
                       "use a shorter id (e.g. a hash)")


def decode_event(raw: bytes, limits: JsonLimits | None = None) -> QueryEvent:
    """Parse and validate one message value; raises BadEvent naming the field, the value and the fix.

    Never raises anything else for any input: ``limits`` (default ``JsonLimits()``) bound the parse's depth and
    number sizes, so no message can exhaust the stack or the CPU here."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"message is not valid UTF-8 (byte {e.start}); encode it as UTF-8"
        raise BadEvent("invalid_utf8", msg) from None
    try:
        obj = loads_bounded(text, limits or JsonLimits())
    except JsonLimitError as e:
        raise BadEvent(e.reason, f"message: {e}") from None
    except json.JSONDecodeError as e:
        raise BadEvent("malformed_json", f"message is not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BadEvent("not_an_object", f"message must be a JSON object; got {type(obj).__name__}")
    surrogate = lone_surrogate(text, obj)
    if surrogate is not None:
        where, pos = surrogate
        raise BadEvent("invalid_unicode", f"{where} holds a lone surrogate at position {pos}; send valid Unicode "
                       "(pair \\uD800-\\uDBFF with \\uDC00-\\uDFFF)")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise BadEvent("unknown_field", f"unknown field(s) {[u[:40] for u in unknown[:10]]}; allowed: "
                       f"{sorted(_FIELDS)}")
    qid, qtext = obj.get("id"), obj.get("text")
    _check_string("id", qid, required=True, max_chars=MAX_ID_CHARS)
    _check_string("text", qtext, required=True)
    lang = obj.get("lang")
    if lang is not None:
        if not isinstance(lang, str) or "\0" in lang:
            raise BadEvent("bad_lang", f"field 'lang': got {lang!r:.80}; send a language code string such as 'en'")
        try:
            lang = langcodes.normalize(lang)
        except ValueError as e:
            raise BadEvent("bad_lang", f"field 'lang': {e}") from None
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadEvent("bad_meta", f"field 'meta': got {type(meta).__name__}; must be a JSON object")
    return QueryEvent(id=qid, text=qtext, lang=lang, ts_ms=_parse_ts(obj.get("ts")), meta=meta)
