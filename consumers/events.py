"""Query events on the queries topic: the wire schema producers write and consumers read (version 1).

One JSON object per Kafka message value, UTF-8:

    {"id": "q-123", "text": "How do I reset my password?", "lang": "en",
     "ts": "2026-11-22T10:00:00Z", "meta": {"tenant": "acme"}}

- ``id``   (required) non-empty string, unique per query; used to de-duplicate re-deliveries.
- ``text`` (required) the user's query, non-empty after stripping white space.
- ``lang`` (optional) language code in compass's scheme (compass/langcodes.py); language ID fills it in
  when it is absent.
- ``ts``   (optional) RFC 3339 string or epoch milliseconds (int); the Kafka timestamp is used otherwise.
- ``meta`` (optional) JSON object, passed through untouched.

The message header ``compass-schema`` carries the schema version (``1``). Unknown top-level fields are
rejected, so a typo (``"txt"``) is caught instead of silently dropping the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from compass import langcodes
from compass.errors import CompassError

SCHEMA_VERSION = 1
SCHEMA_HEADER = "compass-schema"
_FIELDS = {"id", "text", "lang", "ts", "meta"}


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
    if isinstance(value, bool):
        raise BadEvent("bad_ts", f"field 'ts': got {value!r}; use epoch milliseconds or an RFC 3339 string")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    raise BadEvent("bad_ts", f"field 'ts': got {value!r}; use epoch milliseconds or an RFC 3339 string")


def decode_event(raw: bytes) -> QueryEvent:
    """Parse and validate one message value; raises BadEvent naming the field, the value and the fix."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"message is not valid UTF-8 (byte {e.start}); encode it as UTF-8"
        raise BadEvent("invalid_utf8", msg) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadEvent("malformed_json", f"message is not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BadEvent("not_an_object", f"message must be a JSON object; got {type(obj).__name__}")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise BadEvent("unknown_field", f"unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    qid, qtext = obj.get("id"), obj.get("text")
    if not isinstance(qid, str) or not qid.strip():
        raise BadEvent("missing_id", f"field 'id': got {qid!r}; every event needs a non-empty string id")
    if not isinstance(qtext, str) or not qtext.strip():
        raise BadEvent("missing_text", f"field 'text': got {qtext!r}; every event needs a non-empty text")
    lang = obj.get("lang")
    if lang is not None:
        try:
            lang = langcodes.normalize(lang)
        except ValueError as e:
            raise BadEvent("bad_lang", f"field 'lang': {e}") from None
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise BadEvent("bad_meta", f"field 'meta': got {type(meta).__name__}; must be a JSON object")
    return QueryEvent(id=qid, text=qtext, lang=lang, ts_ms=_parse_ts(obj.get("ts")), meta=meta)
