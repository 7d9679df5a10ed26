"""The adapter sync's decision (issue 17): which adapters to load, confirm and unload on which serving target, and
when to switch the gateway's routing table. Pure: the service (daemon/sync/) reads the registry, the targets and
the table, calls ``plan`` and carries the actions out.

Rules:

* A promoted version is served under its own name ``LANG-VERSION`` (``served_name``), never loaded in place: a new
  version, a new name, loaded beside the one the gateway still routes to. (Not ``LANG@VERSION``: `compass serve`
  keeps '@' for the adapters it loads from its own registry and refuses it in ``lora_name``.)
* Every target that is up gets the language's current name loaded, then confirmed (a 1-token completion).
* The table switches a language only when **every** configured target has the name loaded and confirmed: the
  gateway must never route to a name a target lacks. A target that is down (or refuses the adapter) holds the
  switch; the others keep the name loaded, ready, and the language keeps its old route until it catches up.
* A rollback is the same rule with an older version: its name is loaded again unless it is still draining.
* A name nothing routes to any more (and that is not about to be routed) is unloaded ``drain_s`` after it was
  first seen unrouted, so requests in flight on it finish.
* vLLM and SGLang refuse some adapters (DoRA above all; compass/registry/export.py ``peft_problems``): the service
  passes those names in ``unservable`` with the export's message and fix; such a target is out of sync, never
  silently skipped. `compass serve` loads a DoRA adapter as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SEPARATOR = "-"  # between language and version; the language (2-3 letters) never holds one, so it splits first
LORA_ONLY_KINDS = frozenset({"vllm", "sglang"})  # the kinds that refuse what peft_problems lists
_SERVED = re.compile(r"^(?P<lang>[a-z]{2,3})-(?P<version>[A-Za-z0-9_-]{1,128})$")


def served_name(lang: str, version: str) -> str:
    """The name version ``version`` of ``lang`` is loaded under on every target and routed to by the gateway.
    '.' (allowed in versions) becomes '_': `compass serve` and torch module names refuse it."""
    return f"{lang}{SEPARATOR}{version}".replace(".", "_")


def parse_served(name: str) -> tuple[str, str] | None:
    """(language, version as named) of a name ``served_name`` could have made, else None."""
    m = _SERVED.match(name)
    return (m["lang"], m["version"]) if m else None


def ours(names: Sequence[str], versions: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The names among ``names`` that are registry versions served by this sync (``versions``: language -> its
    versions), so an adapter loaded by someone else (``sql-lora``) is never unloaded by the sync."""
    known = {served_name(lang, v) for lang, vs in versions.items() for v in vs}
    return frozenset(n for n in names if n in known)


@dataclass(frozen=True)
class TargetView:
    """What the service observed of one target this round. ``up``: it answered (and is not waiting for its next
    retry); ``loaded``: our names it serves; ``confirmed``: those that answered a completion since loaded."""

    name: str
    kind: str
    up: bool
    loaded: frozenset[str] = frozenset()
    confirmed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Load:
    target: str
    lang: str
    version: str
    name: str


@dataclass(frozen=True)
class Confirm:
    target: str
    name: str


@dataclass(frozen=True)
class Refuse:
    """``target`` cannot load ``name``; ``reason`` names why and the fix."""

    target: str
    name: str
    reason: str


@dataclass(frozen=True)
class Unload:
    target: str
    name: str


@dataclass(frozen=True)
class Plan:
    """The actions of one round, in the order to run them: loads, confirms, then the switch, then unloads.

    ``switch``: language -> new name for the routing table (one atomic ``switch_many``); ``waiting``: language ->
    the targets its switch waits for; ``unrouted_since``: our loaded names nothing routes to, with when that was
    first seen (the service keeps it for the next round); ``in_sync``: target -> whether it serves every desired
    name, confirmed, and nothing blocks it."""

    loads: tuple[Load, ...] = ()
    confirms: tuple[Confirm, ...] = ()
    refusals: tuple[Refuse, ...] = ()
    switch: dict[str, str] = field(default_factory=dict)
    unloads: tuple[Unload, ...] = ()
    waiting: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unrouted_since: dict[str, float] = field(default_factory=dict)
    in_sync: dict[str, bool] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """Loads or confirms to run first: plan again after them, the switch may be possible then."""
        return bool(self.loads or self.confirms)


def plan(desired: Mapping[str, str], targets: Sequence[TargetView], routes: Mapping[str, str],
         unservable: Mapping[tuple[str, str], str] | None = None, unrouted_since: Mapping[str, float] | None = None,
         now: float = 0.0, drain_s: float = 0.0) -> Plan:
    """The actions that bring ``targets`` and the routing table ``routes`` (language -> name) in line with
    ``desired`` (language -> the registry's current version). ``unservable``: (name, target kind) -> why that
    kind cannot load the name; ``unrouted_since``: the previous round's, name -> when first seen unrouted."""
    unservable = unservable or {}
    unrouted_since = unrouted_since or {}
    want = {lang: served_name(lang, v) for lang, v in sorted(desired.items())}
    loads: list[Load] = []
    confirms: list[Confirm] = []
    refusals: list[Refuse] = []
    blocked: set[str] = set()  # targets with a refusal
    for t in targets:
        if not t.up:
            continue
        for lang, name in want.items():
            reason = unservable.get((name, t.kind))
            if reason is not None:
                if name not in t.loaded:  # a kind that refuses it cannot have it; if it does, it serves it
                    refusals.append(Refuse(t.name, name, reason))
                    blocked.add(t.name)
            elif name not in t.loaded:
                loads.append(Load(t.name, lang, desired[lang], name))
            elif name not in t.confirmed:
                confirms.append(Confirm(t.name, name))

    switch: dict[str, str] = {}
    waiting: dict[str, tuple[str, ...]] = {}
    for lang, name in want.items():
        if routes.get(lang) == name:
            continue
        lacking = tuple(t.name for t in targets if not (t.up and name in t.loaded and name in t.confirmed))
        if targets and not lacking:
            switch[lang] = name
        else:
            waiting[lang] = lacking if targets else ("(no serving.targets configured)",)

    keep = set(want.values()) | set({**routes, **switch}.values())  # the table after this round's switch
    since: dict[str, float] = {}
    unloads: list[Unload] = []
    for t in targets:
        for name in sorted(t.loaded - keep):
            first = since.setdefault(name, unrouted_since.get(name, now))
            if t.up and now - first >= drain_s:
                unloads.append(Unload(t.name, name))

    in_sync = {t.name: t.up and t.name not in blocked
               and all(n in t.loaded and n in t.confirmed for n in want.values() if (n, t.kind) not in unservable)
               for t in targets}
    return Plan(tuple(loads), tuple(confirms), tuple(refusals), switch, tuple(unloads), waiting, since, in_sync)


__all__ = ["LORA_ONLY_KINDS", "SEPARATOR", "Confirm", "Load", "Plan", "Refuse", "TargetView", "Unload", "ours",
           "parse_served", "plan", "served_name"]
