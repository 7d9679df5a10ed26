"""What the monitor did: ``BatchStats`` for one ``run_once``, ``RunStats`` summed over a ``run``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class BatchStats:
    """What one ``run_once`` did. ``committed``: next offset committed per (topic, partition)."""

    polled: int = 0
    applied: int = 0
    duplicates: int = 0  # served messages a window had applied already (re-delivered, or resent: see below)
    resent: int = 0  # of the duplicates: a new offset but an id counted within consumer.dedup_horizon_s
    truncated: int = 0  # texts cut to consumer.max_embed_chars before embedding
    unserved: int = 0  # messages of unserved languages counted (first deliveries)
    unserved_duplicates: int = 0  # unserved messages counted already (re-delivered)
    sampled_out: int = 0  # served messages outside their language's sample (sampling.rate < 1): not embedded
    dead_lettered: int = 0
    reasons: Counter = field(default_factory=Counter)  # dead letters by reason
    langs: Counter = field(default_factory=Counter)  # applied per language
    sampled_out_langs: Counter = field(default_factory=Counter)  # sampled out per language
    unserved_langs: Counter = field(default_factory=Counter)  # unserved counted per detected language
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    seconds: float = 0.0
    codebook_version: str | None = None
    published: str | None = None  # the revision this batch published, if any


@dataclass
class RunStats:
    """The batches of one ``run`` added up (empty polls are left out)."""

    batches: int = 0
    polled: int = 0
    applied: int = 0
    duplicates: int = 0
    resent: int = 0
    truncated: int = 0
    failed_batches: int = 0  # batches rewound after a failure (outage or error), counted in run()
    worst_message_s: float = 0.0  # the slowest batch's seconds per message: bounds what one message can cost
    unserved: int = 0
    unserved_duplicates: int = 0
    sampled_out: int = 0
    dead_lettered: int = 0
    reasons: Counter = field(default_factory=Counter)
    unserved_langs: Counter = field(default_factory=Counter)
    sampled_out_langs: Counter = field(default_factory=Counter)
    batch_seconds: list[float] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    first_batch: tuple[float, int] | None = None  # (wall time its commit ended, its size): for throughput
    last_batch_end: float | None = None

    def add(self, b: BatchStats) -> None:
        if b.polled == 0:
            return
        now = time.time()
        if self.first_batch is None:
            self.first_batch = (now, b.polled)
        self.last_batch_end = now
        self.batches += 1
        self.polled += b.polled
        self.applied += b.applied
        self.duplicates += b.duplicates
        self.resent += b.resent
        self.truncated += b.truncated
        self.worst_message_s = max(self.worst_message_s, b.seconds / b.polled)
        self.unserved += b.unserved
        self.unserved_duplicates += b.unserved_duplicates
        self.sampled_out += b.sampled_out
        self.dead_lettered += b.dead_lettered
        self.reasons.update(b.reasons)
        self.unserved_langs.update(b.unserved_langs)
        self.sampled_out_langs.update(b.sampled_out_langs)
        self.batch_seconds.append(b.seconds)
        if b.published:
            self.published.append(b.published)
