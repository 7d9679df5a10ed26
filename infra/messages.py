"""Wire schemas of the daemon's Kafka messages (version 1): update jobs and lifecycle events.

One JSON object per message value, UTF-8, with ``"schema": 1``; the header ``compass-schema`` repeats it.

Job, on ``compass.jobs`` (key = language)::

    {"schema": 1, "job_id": "sw-1732270000000-3f2a", "kind": "adapter_update", "language": "sw",
     "codebook_version": "v2", "adapter_version": "a7", "snapshot_key": "compass:{sw}:snapshot:sw-...",
     "js": 0.42, "theta": 0.12, "reason": "drift", "n_samples": 250, "noise_share": 0.04,
     "far_share": null, "created_at": 1732270000.0}

- ``kind``: ``adapter_update`` (eq. 6 fired, or an operator's manual trigger) or ``recluster`` (stale clusters, §6.1).
- ``snapshot_key``: a Redis key holding the frozen window at trigger time: JSON {counts, size, codebook_version,
  offsets, ids (recent query ids, newest last), created_at}; it expires after ``daemon.snapshot_ttl_s``.
- ``js``: JS divergence in bits (eq. 5), or null when it could not be computed (manual trigger without reference).
- ``reason``: ``drift``, ``manual``, ``stale_clusters`` or ``quality`` (the performance signal, rule ``any``).

Event, on ``compass.events`` (key = language)::

    {"schema": 1, "type": "update_finished", "language": "sw", "at": 1732270300.0,
     "job_id": "sw-1732270000000-3f2a", "data": {"adapter_version": "a8", "ok": true}}

``type`` is one of ``EVENT_TYPES``. The daemon emits drift_detected, update_enqueued, recluster_needed,
language_stuck (``max_rejections`` updates in a row did not promote: no automatic update until ops resume the
language; data: reason, failures, outcome of the last one) and language_emerging (a language no configured adapter
serves passed ``daemon.emerging_share`` of all queries with ``daemon.emerging_min_count`` queries over
``daemon.emerging_horizon_s``; once per episode; no job_id; data: share, count, total, horizon_s, emerging_share,
emerging_min_count, sample_ids (newest query ids, newest last), how (the step that starts serving it))::

    {"schema": 1, "type": "language_emerging", "language": "ca", "at": 1732270300.0, "job_id": null,
     "data": {"share": 0.031, "count": 620, "total": 20000, "horizon_s": 86400, "emerging_share": 0.02,
              "emerging_min_count": 200, "sample_ids": ["q-981", "q-990"], "how": "add `ca: {}` to ..."}}

The worker emits update_started, update_finished, adapter_promoted and adapter_rejected, and after a ``recluster``
job switched codebooks recluster_finished (key = the job's language; data: old_version, new_version, old_k, new_k,
n_window (rows per language), n_pool, languages: {lang: {js_before, js_after, source, n_rows}}, skipped: {lang:
why}; the daemon reads the new references from Redis, not this event). ``job_id`` is required
on worker events about a job (the daemon ignores reports for a job it is not waiting on). Unknown top-level fields
are rejected so a typo is caught rather than silently dropped.

``language`` must be a compass code as ``compass.langcodes.normalize`` writes it (``sw``, ``ceb``, ``und``) and
``job_id`` letters, digits and ``._:-`` (at most 128, not starting with ``.``): both end up in Redis keys and
file names. Strict JSON only: NaN/Infinity, lone surrogates and nesting deeper than Python's parser allows are
rejected. Error messages show at most ``SHOW_MAX`` characters of a value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from compass.errors import CompassError
from compass.langcodes import normalize

SCHEMA_VERSION = 1
SCHEMA_HEADER = "compass-schema"
JOB_KINDS = ("adapter_update", "recluster")
JOB_REASONS = ("drift", "manual", "stale_clusters", "quality")
EVENT_TYPES = (
    "drift_detected",
    "update_enqueued",
    "update_started",
    "update_finished",
    "adapter_promoted",
    "adapter_rejected",
    "recluster_needed",
    "language_stuck",
    "language_emerging",
    "recluster_finished",
)
WORKER_EVENTS = ("update_started", "update_finished", "adapter_promoted", "adapter_rejected")
JOB_ID = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}")
SHOW_MAX = 80  # characters of a rejected value quoted in an error message


class BadMessage(CompassError, ValueError):
    """A job or event that does not follow its schema; the message names the field, the value and the fix."""


@dataclass(frozen=True)
class UpdateJob:
    job_id: str
    kind: str
    language: str
    codebook_version: str | None
    adapter_version: str | None
    snapshot_key: str
    js: float | None
    theta: float
    reason: str
    n_samples: int
    created_at: float
    noise_share: float | None = None
    far_share: float | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    type: str
    language: str
    at: float
    job_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encode(message: UpdateJob | Event) -> bytes:
    return json.dumps(message.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def show(value: Any) -> str:
    """``repr(value)``, cut to ``SHOW_MAX`` characters (error messages never echo a whole input)."""
    text = repr(value)
    return text if len(text) <= SHOW_MAX else f"{text[:SHOW_MAX]}... ({len(text)} chars)"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate ("\ud800") cannot be written back
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeError, int digits limit, NaN
        raise BadMessage(f"{what}: not strict UTF-8 JSON ({type(e).__name__}: {str(e)[:200]}); send one JSON "
                         "object per message, without NaN/Infinity or lone surrogates") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"{what}: must be a JSON object; got {type(obj).__name__}")
    if type(obj.get("schema")) is not int or obj["schema"] != SCHEMA_VERSION:  # not true, not 1.0
        raise BadMessage(f"{what} field 'schema': got {show(obj.get('schema'))}; this daemon reads schema "
                         f"{SCHEMA_VERSION}")
    return obj


def _fields(obj: dict[str, Any], cls: type, what: str) -> None:
    allowed = set(cls.__dataclass_fields__)
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadMessage(f"{what}: unknown field(s) {show(unknown)}; allowed: {sorted(allowed)}")


def _str(obj: dict[str, Any], name: str, what: str, optional: bool = False) -> None:
    v = obj.get(name)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v:
        raise BadMessage(f"{what} field {name!r}: got {show(v)}; must be a non-empty string")


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def _num(obj: dict[str, Any], name: str, what: str, optional: bool = False) -> None:
    v = obj.get(name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
        raise BadMessage(f"{what} field {name!r}: got {show(v)}; must be a finite number")


def _language(obj: dict[str, Any], what: str) -> None:
    """``language`` names Redis keys: only a code ``normalize`` maps onto itself passes."""
    v = obj.get("language")
    _str(obj, "language", what)
    try:
        code = normalize(v)
    except ValueError:
        code = None
    if code != v:
        fix = f"write {code!r}" if code else "use a compass language code such as 'en', 'sw' or 'ceb'"
        raise BadMessage(f"{what} field 'language': got {show(v)}; {fix} (see compass/langcodes.py)")


def _job_id(obj: dict[str, Any], what: str, optional: bool = False) -> None:
    v = obj.get("job_id")
    if v is None and optional:
        return
    if not isinstance(v, str) or not JOB_ID.fullmatch(v):
        raise BadMessage(f"{what} field 'job_id': got {show(v)}; must be 1-128 letters, digits or '._:-', "
                         "not starting with '.'")


def decode_job(raw: bytes | str) -> UpdateJob:
    obj = _load(raw, "job")
    _fields(obj, UpdateJob, "job")
    _job_id(obj, "job")
    _language(obj, "job")
    _str(obj, "snapshot_key", "job")
    for name in ("codebook_version", "adapter_version"):
        _str(obj, name, "job", optional=True)
    if obj.get("kind") not in JOB_KINDS:
        raise BadMessage(f"job field 'kind': got {show(obj.get('kind'))}; one of {list(JOB_KINDS)}")
    if obj.get("reason") not in JOB_REASONS:
        raise BadMessage(f"job field 'reason': got {show(obj.get('reason'))}; one of {list(JOB_REASONS)}")
    for name in ("theta", "created_at"):
        _num(obj, name, "job")
    for name in ("js", "noise_share", "far_share"):
        _num(obj, name, "job", optional=True)
    n = obj.get("n_samples")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63:
        raise BadMessage(f"job field 'n_samples': got {show(n)}; must be an integer in [0, 2^63)")
    return UpdateJob(**obj)


def decode_event(raw: bytes | str) -> Event:
    obj = _load(raw, "event")
    _fields(obj, Event, "event")
    if obj.get("type") not in EVENT_TYPES:
        raise BadMessage(f"event field 'type': got {show(obj.get('type'))}; one of {list(EVENT_TYPES)}")
    _language(obj, "event")
    _num(obj, "at", "event")
    _job_id(obj, "event", optional=obj["type"] not in WORKER_EVENTS)
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise BadMessage(f"event field 'data': got {type(data).__name__}; must be a JSON object")
    return Event(**{**obj, "data": data})
