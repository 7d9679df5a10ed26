"""The adapter sync's per-target state in Redis: ``Keys(prefix).serving_targets()``, a hash of target name -> JSON

    {"target", "kind", "url", "in_sync", "loaded", "desired", "waiting", "error", "failures", "last_attempt",
     "last_ok", "next_retry"}

``loaded``: the registry versions the target serves (names); ``desired``: language -> the name it should serve;
``waiting``: language -> why its switch waits on this target; times are unix seconds. Written by `compass sync`
after every round (one pipeline), read by the daemon's ``/v1/status`` and status page. A configured target without
an entry is reported as never synced, so nothing is silently skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from infra.keys import Keys
from infra.settings.serving import ServingTarget
from infra.window.replies import text


@dataclass
class TargetState:
    target: str
    kind: str
    url: str
    in_sync: bool = False
    loaded: list[str] = field(default_factory=list)
    desired: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failures: int = 0
    last_attempt: float | None = None
    last_ok: float | None = None
    next_retry: float | None = None


def write_states(client: redis.Redis, prefix: str, states: Sequence[TargetState]) -> None:
    """Replace the hash with ``states`` (targets no longer configured are dropped) in one MULTI."""
    key = Keys(prefix).serving_targets()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if states:
            pipe.hset(key, mapping={s.target: json.dumps(asdict(s), sort_keys=True) for s in states})
        pipe.execute()


def read_states(client: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Target name -> its state; an unreadable entry becomes ``{"target", "in_sync": False, "error"}``."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in client.hgetall(Keys(prefix).serving_targets()).items():
        name = text(k)
        try:
            state = json.loads(text(v))
            if not isinstance(state, dict):
                raise ValueError(f"a JSON {type(state).__name__}, not an object")
        except ValueError as e:
            state = {"target": name, "in_sync": False, "error": f"the stored sync state is unreadable ({e}); it is "
                     "rewritten by the next round of `compass sync`"}
        out[name] = state
    return out


def targets_status(client: redis.Redis, prefix: str, configured: Sequence[ServingTarget]) -> list[dict[str, Any]]:
    """Every configured target's state (one never written: out of sync, naming why), then stored ones not
    configured here; out-of-sync targets first."""
    stored = read_states(client, prefix)
    rows = []
    for t in configured:
        row = stored.pop(t.name, None)
        if row is None:
            row = asdict(TargetState(t.name, t.kind, t.url, error="never synced: is `compass sync` running with "
                                     "this config?"))
        rows.append(row)
    for name, row in sorted(stored.items()):
        if configured:  # a daemon without targets in its config just shows what the sync wrote
            row = {**row, "in_sync": False, "error": row.get("error") or f"target {name!r} is not in this daemon's "
                   "serving.targets (a stale entry, or the daemon and `compass sync` read different configs)"}
        rows.append(row)
    rows.sort(key=lambda r: (bool(r.get("in_sync")), str(r.get("target"))))
    return rows
