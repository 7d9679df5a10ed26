"""The query-event wire schema: round trip and one clear rejection per kind of bad input."""

from __future__ import annotations

import pytest

from consumers.events import BadEvent, QueryEvent, decode_event, encode_event


def test_round_trip_keeps_every_field():
    event = QueryEvent(id="q1", text="Habari ya asubuhi", lang="sw", ts_ms=1_763_800_000_000, meta={"t": 1})
    assert decode_event(encode_event(event)) == event


def test_optional_fields_and_normalisation():
    event = decode_event('{"id": "q2", "text": "Olá", "lang": "pt-BR", "ts": "2026-11-22T10:00:00Z"}'.encode())
    assert event == QueryEvent(id="q2", text="Olá", lang="pt", ts_ms=1_795_341_600_000, meta={})


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        (b"\xff\xfe{}", "invalid_utf8", "message is not valid UTF-8 (byte 0); encode it as UTF-8"),
        (b'{"id": "a", "text": ', "malformed_json", "message is not JSON (Expecting value at column 21)"),
        (b'["a"]', "not_an_object", "message must be a JSON object; got list"),
        (b'{"id": "a", "txt": "hi"}', "unknown_field", "unknown field(s) ['txt']; allowed: "
         "['id', 'lang', 'meta', 'text', 'ts']"),
        (b'{"text": "hi"}', "missing_id", "field 'id': got None; every event needs a non-empty string id"),
        (b'{"id": "a", "text": "   "}', "missing_text",
         "field 'text': got '   '; every event needs a non-empty text"),
        (b'{"id": "a", "text": "hi", "ts": true}', "bad_ts",
         "field 'ts': got True; use epoch milliseconds (an integer in [0, 4102444800000]) or an RFC 3339 string"),
        (b'{"id": "a", "text": "hi", "meta": [1]}', "bad_meta", "field 'meta': got list; must be a JSON object"),
    ],
)
def test_bad_events_name_the_problem(raw, reason, message):
    with pytest.raises(BadEvent) as err:
        decode_event(raw)
    assert err.value.reason == reason
    assert str(err.value) == message


def test_bad_language_names_the_field():
    with pytest.raises(BadEvent) as err:
        decode_event(b'{"id": "a", "text": "hi", "lang": "!!"}')
    assert err.value.reason == "bad_lang"
    assert str(err.value).startswith("field 'lang': language code '!!' is not an ISO 639-1/639-3 code")
