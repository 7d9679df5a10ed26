"""The leases this daemon replica holds or tries, one per language (and one for the unserved languages).

A lease (infra/lock.py) makes one replica act for a language across processes; the lock beside it makes one check
at a time act for it in this process (the scheduler and an API trigger must not interleave one language).
"""

from __future__ import annotations

import contextlib
import threading

import redis

from infra.clients import REDIS_ERRORS
from infra.lock import LanguageLease


class Leases:
    """``LanguageLease`` and a thread lock per language, made on first use."""

    def __init__(self, client: redis.Redis, owner: str, ttl_ms: int, prefix: str):
        self.client = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self._leases: dict[str, LanguageLease] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, lang: str) -> tuple[LanguageLease, threading.Lock]:
        """``lang``'s lease and the lock its checks take in this process."""
        with self._guard:
            if lang not in self._leases:
                self._leases[lang] = LanguageLease(self.client, lang, self.owner, self.ttl_ms, self.prefix)
                self._locks[lang] = threading.Lock()
            return self._leases[lang], self._locks[lang]

    def release(self, lang: str) -> None:
        """Hand ``lang``'s lease back when held: another replica takes over at once, not after the TTL."""
        lease = self._leases.get(lang)
        if lease is not None and lease.token is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                lease.release()

    def release_all(self) -> None:
        for lang in list(self._leases):
            self.release(lang)
