"""`compass sync`: keeps every serving target (``serving.targets``) and the gateway's routing table in line with the
registry's current versions (issue 17). Each round (every ``serving.sync_poll_s``):

  read     the registry's current version of every language, the routing table, each target's GET /v1/models
  decide   compass/serving_sync.py ``plan``: loads, confirms, the switch, unloads (pure)
  call     export each version once (daemon/sync/exports.py), load it on the targets under ``LANG-VERSION``,
           confirm it with a 1-token completion, switch the table (one atomic step), unload what drained
  write    each target's sync state to Redis (daemon/sync/state.py), for ``/v1/status`` and the status page

The registry is polled rather than followed on Kafka: a rollback publishes no event, and the pointer is the commit
point anyway; a promotion is seen within ``sync_poll_s``. A target that fails (down, refusing, timing out) is out
of sync with its error and retried with exponential back-off (infra/retry.py ``Backoff``), never skipped: the
switch of a language waits until every target serves its new name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from compass.errors import CompassError
from compass.registry import AdapterRegistry
from compass.serving_sync import LORA_ONLY_KINDS, Plan, TargetView, ours, parse_served, plan, served_name
from daemon.sync.client import TargetClient, TargetError
from daemon.sync.exports import Exported, export_for_serving
from daemon.sync.state import TargetState, write_states
from infra.retry import Backoff
from infra.routes import RoutingTable
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)
PASSES = 4  # plan rounds per step: loads, then confirms, then the switch (a spare for a late confirm)


@dataclass
class _Health:
    """One target's failures and back-off, kept between rounds."""

    failures: int = 0
    error: str | None = None
    next_retry: float | None = None
    last_attempt: float | None = None
    last_ok: float | None = None
    loaded: frozenset[str] = frozenset()  # last seen (shown while it is down)
    confirmed: set[str] = field(default_factory=set)


class AdapterSync:
    """The sync over ``cfg.serving.targets``, the registry ``cfg.adapters.registry`` and the routing table under
    ``cfg.redis.key_prefix``. ``clock``: unix seconds (tests pass their own)."""

    def __init__(self, cfg: ServiceConfig, client: redis.Redis, registry: AdapterRegistry | None = None,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg.serving
        if not self.cfg.targets:
            raise CompassError("serving.targets is empty: `compass sync` has nothing to load adapters on; list the "
                               "servers in the config, e.g. serving.targets: [{name: vllm-a, kind: vllm, url: "
                               "'http://10.0.0.5:8000'}]")
        self.client, self.prefix = client, cfg.redis.key_prefix
        self.registry = registry if registry is not None else AdapterRegistry(cfg.adapters.registry)
        self.table = RoutingTable(client, self.prefix)
        self.targets = {t.name: t for t in self.cfg.targets}
        self.clients = {t.name: TargetClient(t, self.cfg.sync_timeout_s) for t in self.cfg.targets}
        self.health = {t.name: _Health() for t in self.cfg.targets}
        self.backoff = Backoff(base_s=self.cfg.sync_retry_base_s, max_s=self.cfg.sync_retry_max_s, jitter="half")
        self.clock = clock
        self.desired: dict[str, str] = {}  # language -> current version, the last that could be read
        self.unrouted_since: dict[str, float] = {}
        self.exports: dict[str, Exported] = {}  # served name -> its directory (versions are immutable)
        self.last_plan = Plan()

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    # ----- read -----
    def _read_desired(self) -> dict[str, str]:
        for lang in self.registry.languages():
            try:
                version = self.registry.current(lang)
            except CompassError as e:  # a corrupt pointer: keep what was desired before, and say so
                log.error("sync: cannot read the current version of %s (%s); keeping %s", lang, e,
                          self.desired.get(lang))
                continue
            if version is not None:
                self.desired[lang] = version
        return dict(self.desired)

    def _ours(self, ids: list[str]) -> frozenset[str]:
        versions: dict[str, list[str]] = {}
        for lang in {p[0] for i in ids if (p := parse_served(i)) is not None}:
            try:
                versions[lang] = self.registry.versions(lang)
            except CompassError:  # e.g. someone's "sql-lora": "sql" is no language of the registry
                versions[lang] = []
        return ours(ids, versions)

    def _observe(self, name: str, now: float) -> TargetView:
        h, t = self.health[name], self.targets[name]
        if h.next_retry is not None and now < h.next_retry:
            return TargetView(name, t.kind, False)
        h.last_attempt = now
        try:
            loaded = self._ours(self.clients[name].models())
        except TargetError as e:
            self._fail(name, e, self.clock())
            return TargetView(name, t.kind, False)
        h.loaded = loaded
        h.confirmed &= loaded  # a target that restarted must answer again
        return TargetView(name, t.kind, True, loaded, frozenset(h.confirmed))

    def _unservable(self, desired: dict[str, str]) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for lang, version in desired.items():
            name = served_name(lang, version)
            if name not in self.exports:
                try:
                    self.exports[name] = export_for_serving(self.registry, lang, version, self.cfg.export_dir)
                except (CompassError, OSError) as e:  # not cached: a full disk may have room next round
                    reason = f"{lang}/{version} cannot be written to {self.cfg.export_dir}: {e}"
                    out.update({(name, kind): reason for kind in ("vllm", "sglang", "compass")})
                    continue
            refusal = self.exports[name].lora_refusal
            if refusal is not None:
                out.update({(name, kind): f"a {kind} target cannot load {name}: {refusal}" for kind in LORA_ONLY_KINDS})
        return out

    # ----- act -----
    def _fail(self, name: str, error: Exception, now: float) -> None:
        h = self.health[name]
        h.failures += 1
        wait = self.backoff.delay(h.failures, error)
        h.next_retry = now + wait
        if str(error) != h.error:
            log.warning("sync: %s (out of sync; try %d, next in %.1f s)", error, h.failures, wait)
        h.error = str(error)

    def _act(self, p: Plan, views: dict[str, TargetView]) -> None:
        """Run the loads and confirms of ``p``; a target that fails one is down for the rest of the round."""
        for a in p.loads:
            if views[a.target].up:
                try:
                    self.clients[a.target].load(a.name, str(self.exports[a.name].path))
                except TargetError as e:
                    self._fail(a.target, e, self.clock())
                    views[a.target] = TargetView(a.target, views[a.target].kind, False)
                    continue
                log.info("sync: loaded %s on %s", a.name, a.target)
                v = views[a.target]
                views[a.target] = TargetView(v.name, v.kind, True, v.loaded | {a.name}, v.confirmed)
                self.health[a.target].loaded = views[a.target].loaded
        for c in p.confirms:
            if views[c.target].up:
                try:
                    self.clients[c.target].confirm(c.name)
                except TargetError as e:
                    self._fail(c.target, e, self.clock())
                    views[c.target] = TargetView(c.target, views[c.target].kind, False)
                    continue
                self.health[c.target].confirmed.add(c.name)
                v = views[c.target]
                views[c.target] = TargetView(v.name, v.kind, True, v.loaded, v.confirmed | {c.name})

    def _unload(self, p: Plan, views: dict[str, TargetView], now: float) -> None:
        for u in p.unloads:
            if not views[u.target].up:
                continue
            try:
                self.clients[u.target].unload(u.name)
            except TargetError as e:
                self._fail(u.target, e, now)
                views[u.target] = TargetView(u.target, views[u.target].kind, False)
                continue
            log.info("sync: unloaded %s from %s (unrouted for %.1f s)", u.name, u.target,
                     now - p.unrouted_since.get(u.name, now))
            h = self.health[u.target]
            h.loaded -= {u.name}
            h.confirmed.discard(u.name)

    # ----- one round -----
    def step(self) -> Plan:
        """One round: read, decide, call, write; returns the last plan (its ``switch`` was applied)."""
        now = self.clock()
        desired = self._read_desired()
        routes = self.table.read().names
        failures_before = {n: h.failures for n, h in self.health.items()}
        views = {name: self._observe(name, now) for name in self.targets}
        unservable = self._unservable(desired)
        for _ in range(PASSES):  # the drain counts from the last plan's clock: just before its switch
            p = plan(desired, list(views.values()), routes, unservable, self.unrouted_since, self.clock(),
                     self.cfg.drain_s)
            if not p.busy:
                break
            self._act(p, views)
        if p.switch:
            version = self.table.switch_many(p.switch)
            log.info("sync: routing table v%d: %s", version, ", ".join(f"{k} -> {v}" for k, v in p.switch.items()))
        self._unload(p, views, self.clock())
        self.unrouted_since = p.unrouted_since
        self._settle(p, views, failures_before, now)
        self.last_plan = p
        self._write(p, desired)
        return p

    def _settle(self, p: Plan, views: dict[str, TargetView], failures_before: dict[str, int], now: float) -> None:
        """A target that answered everything this round is healthy again; one refusing an adapter is not."""
        refused = {r.target: r.reason for r in p.refusals}
        for name, h in self.health.items():
            if views[name].up and h.failures == failures_before[name]:
                h.failures, h.next_retry, h.last_ok = 0, None, now
                h.error = refused.get(name)

    def _write(self, p: Plan, desired: dict[str, str]) -> None:
        want = {lang: served_name(lang, v) for lang, v in sorted(desired.items())}
        states = []
        for name, t in self.targets.items():
            h = self.health[name]
            waiting = {lang: want[lang] for lang, lacking in p.waiting.items() if name in lacking}
            states.append(TargetState(
                target=name, kind=t.kind, url=t.url, in_sync=p.in_sync.get(name, False) and h.error is None,
                loaded=sorted(h.loaded), desired=want, waiting=waiting, error=h.error, failures=h.failures,
                last_attempt=h.last_attempt, last_ok=h.last_ok, next_retry=h.next_retry))
        write_states(self.client, self.prefix, states)

    def run(self, stop: threading.Event) -> None:
        """Rounds every ``sync_poll_s`` until ``stop`` is set; a failed round (Redis down) is logged and retried."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the loop outlives a Redis or registry outage
                log.exception("sync: round failed; trying again in %.1f s", self.cfg.sync_poll_s)
            stop.wait(self.cfg.sync_poll_s)
