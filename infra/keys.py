"""Every Redis key compass reads or writes, built in one place from the namespace prefix (``redis.key_prefix``).

Keys of one language share the hash tag ``{ll}`` and the unserved, worker keys share ``{unserved}``, ``{worker}``:
Redis Cluster hashes only the tag, so each family lives in one slot and one Lua script or MULTI may touch all of
it. A language code is 2-3 letters, so the family tags never collide with a language's. The strings are part of
the stored state: changing one loses the data already in Redis.

Language ``ll`` (``Keys.language(ll, name)``; ``Keys.window(ll)`` gives the first seven):

  key                              type    written by                               read by
  {p}:{ll}:window                  list    monitor (infra/window/lua.py)            daemon, compass calibrate
  {p}:{ll}:counts                  hash    monitor (infra/window/lua.py)            daemon (window snapshot)
  {p}:{ll}:offsets                 hash    monitor (infra/window/lua.py)            monitor
  {p}:{ll}:recent                  list    monitor (infra/window/lua.py)            worker (recluster texts)
  {p}:{ll}:meta                    hash    monitor (infra/window/lua.py)            daemon, worker, languages()
  {p}:{ll}:quality                 list    monitor (event meta), producers (RPUSH)  daemon (LPOP into its detector)
  {p}:{ll}:ids                     zset    monitor (dedup horizon)                  monitor
  {p}:{ll}:status                  string  daemon, fenced (+ status:fence)          daemon (and its API)
  {p}:{ll}:paused                  string  daemon API pause (deleted by resume)     daemon
  {p}:{ll}:force                   string  daemon API force                         daemon (GETDEL)
  {p}:{ll}:resume                  string  daemon API resume (a stuck language)     daemon (GETDEL)
  {p}:{ll}:inbox                   list    daemon events intake (worker reports)    daemon (drained under the lease)
  {p}:{ll}:snapshot:<job_id>       string  daemon (frozen window, TTL)              worker (job.snapshot_key)
  {p}:{ll}:ref                     string  worker on promote, compass ref set       daemon, compass calibrate/explain
  {p}:{ll}:history:js              list    daemon (one reading per check)           status page, demo
  {p}:{ll}:history:events          list    daemon events intake                     status page
  {p}:{ll}:lease (+ lease:fence)   string  daemon replicas (infra/lock.py)          daemon replicas
  {p}:{ll}:worker-lock (+ :fence)  string  worker (job in progress)                 worker
  {p}:{ll}:sampling:<epoch>        hash    monitor (capped sampling, expires)       monitor (infra/sampling.py)

Unserved languages (``Keys.unserved(name)``; infra/unserved.py):

  {p}:{unserved}:counts            hash    monitor                                  daemon (and its API)
  {p}:{unserved}:offsets           hash    monitor                                  monitor
  {p}:{unserved}:bucket:<b>        hash    monitor (expires)                        daemon
  {p}:{unserved}:samples:<ll>      list    monitor (expires)                        daemon (language_emerging)
  {p}:{unserved}:emerging          string  daemon, fenced (+ emerging:fence)        daemon (and its API)
  {p}:{unserved}:lease (+ :fence)  string  daemon replicas                          daemon replicas

Worker queue (daemon/worker/queue.py), codebooks (infra/codebook/) and re-fits (daemon/worker/recluster.py), no
per-language tag:

  {p}:{worker}:pending             hash    worker intake                            worker
  {p}:{worker}:done:<job_id>       string  worker (expires)                         worker intake (redelivery)
  {p}:codebook:current             string  compass codebook publish, monitor         monitor, daemon, worker
  {p}:codebook:publisher           string  monitor (revision publisher lease)       monitor
  {{p}:codebook:publisher}:fence   string  the publisher lease's fencing counter    monitor
  {p}:recluster:lock (+ fence)     string  worker recluster job, compass codebook   the same (one re-fit at a time)
                                           build --from-windows
  {p}:recluster:last               string  the re-fit's switch (unix seconds)       worker (min interval)
  {p}:recluster:staged:<job_id>    string  a re-fit before its switch (JSON)        its retry (finishes the switch)
  {p}:serving:routes               hash    adapter sync (infra/routes.py)           gateway: language -> model name
  {p}:serving:targets              hash    adapter sync: target -> sync state JSON  status page, /v1/status

A fence (``fence(key)``) is ``key:fence`` when the key has a hash tag, else ``{key}:fence``: a script that
touches both must find them in one slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compass.errors import CompassError
from compass.params import bad_param

PREFIX = re.compile(r"^[A-Za-z0-9_.:-]+$")  # no glob characters or braces: keys are scanned with the prefix
UNSERVED = "unserved"  # the hash tag of the unserved-language keys (and the daemon's lease name for them)
WORKER = "worker"  # the hash tag of the worker's queue
WINDOW_KINDS = ("window", "counts", "offsets", "recent", "meta", "quality", "ids")
_HASH_TAG = re.compile(r"\{[^}]+\}")  # Redis Cluster hashes only the first non-empty {...} of a key


class KeyPrefixError(CompassError, ValueError):
    """A namespace prefix that cannot build keys (it would glob or add a hash tag)."""


def fence(key: str) -> str:
    """The fencing-token counter of ``key``, in the same Redis Cluster slot as ``key``."""
    return f"{key}:fence" if _HASH_TAG.search(key) else f"{{{key}}}:fence"


@dataclass(frozen=True)
class Keys:
    """The keys under ``prefix`` (see the module docstring for the table)."""

    prefix: str = "compass"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not PREFIX.match(self.prefix):
            raise bad_param("prefix", "Keys", "a non-empty string of letters, digits and _.:- only", self.prefix,
                            KeyPrefixError)

    # ------------------------------------------------------------------ one language

    def language(self, lang: str, name: str) -> str:
        """Key ``name`` of language ``lang`` (hash-tagged by the language)."""
        return f"{self.prefix}:{{{lang}}}:{name}"

    def window(self, lang: str) -> dict[str, str]:
        """The monitor window's keys of ``lang`` by kind (infra/window/)."""
        return {kind: self.language(lang, kind) for kind in WINDOW_KINDS}

    def status(self, lang: str) -> str:
        return self.language(lang, "status")

    def paused(self, lang: str) -> str:
        return self.language(lang, "paused")

    def force(self, lang: str) -> str:
        return self.language(lang, "force")

    def resume(self, lang: str) -> str:
        return self.language(lang, "resume")

    def quality(self, lang: str) -> str:
        return self.language(lang, "quality")

    def inbox(self, lang: str) -> str:
        return self.language(lang, "inbox")

    def snapshot(self, lang: str, job_id: str) -> str:
        return self.language(lang, f"snapshot:{job_id}")

    def reference(self, lang: str) -> str:
        return self.language(lang, "ref")

    def history_js(self, lang: str) -> str:
        return self.language(lang, "history:js")

    def history_events(self, lang: str) -> str:
        return self.language(lang, "history:events")

    def lease(self, lang: str) -> str:
        """The daemon's per-language lease (``lang`` may be ``UNSERVED``: the unserved check's lease)."""
        return self.language(lang, "lease")

    def worker_lock(self, lang: str) -> str:
        return self.language(lang, "worker-lock")

    # ------------------------------------------------------------------ families without a language

    def sampling(self, lang: str, epoch: int) -> str:
        """The traffic counts and frozen rates of capped sampling, one hash per epoch (infra/sampling.py)."""
        return self.language(lang, f"sampling:{int(epoch)}")

    def unserved(self, name: str) -> str:
        """Key ``name`` of the unserved-language counts (``counts``, ``offsets``, ``emerging``, ``bucket:*``...)."""
        return self.language(UNSERVED, name)

    def unserved_bucket(self, bucket: int) -> str:
        return self.unserved(f"bucket:{bucket}")

    def unserved_samples(self, lang: str) -> str:
        return self.unserved(f"samples:{lang}")

    def worker_pending(self) -> str:
        return self.language(WORKER, "pending")

    def worker_done(self, job_id: str) -> str:
        return self.language(WORKER, f"done:{job_id}")

    def codebook_current(self) -> str:
        return f"{self.prefix}:codebook:current"

    def codebook_publisher(self) -> str:
        return f"{self.prefix}:codebook:publisher"

    def recluster_lock(self) -> str:
        return f"{self.prefix}:recluster:lock"

    def recluster_last(self) -> str:
        return f"{self.prefix}:recluster:last"

    def serving_routes(self) -> str:
        return f"{self.prefix}:serving:routes"

    def serving_targets(self) -> str:
        return f"{self.prefix}:serving:targets"

    def recluster_staged(self, job_id: str) -> str:
        return f"{self.prefix}:recluster:staged:{job_id}"

    # ------------------------------------------------------------------ scans

    def everything(self) -> str:
        """SCAN pattern of every key under the prefix."""
        return f"{self.prefix}:*"

    def every_language(self, name: str) -> str:
        """SCAN pattern of key ``name`` of every language (and of the ``{unserved}``/``{worker}`` tags)."""
        return self.language("*", name)

    def language_of(self, key: str, name: str) -> str | None:
        """The tag of ``key`` when it is key ``name`` of some language under this prefix, else None."""
        head, tail = f"{self.prefix}:{{", f"}}:{name}"
        if len(key) < len(head) + len(tail) or not key.startswith(head) or not key.endswith(tail):
            return None
        return key[len(head):-len(tail)]
