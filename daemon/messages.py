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

The worker emits update_started, update_finished, adapter_promoted and adapter_rejected. ``job_id`` is required
on worker events about a job (the daemon ignores reports for a job it is not waiting on). Unknown top-level fields
are rejected so a typo is caught rather than silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from compass.errors import CompassError

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
)
WORKER_EVENTS = ("update_started", "update_finished", "adapter_promoted", "adapter_rejected")


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


def _load(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadMessage(f"{what}: not UTF-8 JSON ({e}); send one JSON object per message") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"{what}: must be a JSON object; got {type(obj).__name__}")
    if obj.get("schema") != SCHEMA_VERSION:
        raise BadMessage(f"{what} field 'schema': got {obj.get('schema')!r}; this daemon reads schema {SCHEMA_VERSION}")
    return obj


def _fields(obj: dict[str, Any], cls: type, what: str) -> None:
    allowed = set(cls.__dataclass_fields__)
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadMessage(f"{what}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _str(obj: dict[str, Any], name: str, what: str, optional: bool = False) -> None:
    v = obj.get(name)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v:
        raise BadMessage(f"{what} field {name!r}: got {v!r}; must be a non-empty string")


def _num(obj: dict[str, Any], name: str, what: str, optional: bool = False) -> None:
    v = obj.get(name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise BadMessage(f"{what} field {name!r}: got {v!r}; must be a finite number")


def decode_job(raw: bytes | str) -> UpdateJob:
    obj = _load(raw, "job")
    _fields(obj, UpdateJob, "job")
    for name in ("job_id", "language", "snapshot_key"):
        _str(obj, name, "job")
    for name in ("codebook_version", "adapter_version"):
        _str(obj, name, "job", optional=True)
    if obj.get("kind") not in JOB_KINDS:
        raise BadMessage(f"job field 'kind': got {obj.get('kind')!r}; one of {list(JOB_KINDS)}")
    if obj.get("reason") not in JOB_REASONS:
        raise BadMessage(f"job field 'reason': got {obj.get('reason')!r}; one of {list(JOB_REASONS)}")
    for name in ("theta", "created_at"):
        _num(obj, name, "job")
    for name in ("js", "noise_share", "far_share"):
        _num(obj, name, "job", optional=True)
    n = obj.get("n_samples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadMessage(f"job field 'n_samples': got {n!r}; must be an integer >= 0")
    return UpdateJob(**obj)


def decode_event(raw: bytes | str) -> Event:
    obj = _load(raw, "event")
    _fields(obj, Event, "event")
    if obj.get("type") not in EVENT_TYPES:
        raise BadMessage(f"event field 'type': got {obj.get('type')!r}; one of {list(EVENT_TYPES)}")
    _str(obj, "language", "event")
    _num(obj, "at", "event")
    _str(obj, "job_id", "event", optional=obj["type"] not in WORKER_EVENTS)
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise BadMessage(f"event field 'data': got {type(data).__name__}; must be a JSON object")
    return Event(**{**obj, "data": data})
