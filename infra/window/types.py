"""The values of the monitor windows (infra/window/store.py): one query's ``Assignment``, an ``ApplyResult``, a
``WindowSnapshot``, and the input patterns they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from compass.params import is_int
from infra.window.errors import WindowInputError

LANG_RE = re.compile(r"^[a-z]{2,3}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # no path traversal; a non-empty lineage
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic alphabet; never contains ':'
MAX_OFFSET = 2**53  # offsets are compared as Lua numbers (doubles): exact below 2**53


@dataclass(frozen=True)
class Assignment:
    """One query's contribution to its language's window, with the Kafka position it came from."""

    query_id: str
    bucket: int  # cluster id in [0, K), or K for noise (Codebook.assign maps NOISE -> K)
    topic: str
    partition: int
    offset: int
    text: str | None = None  # stored only when the store's store_texts is true
    quality: float | None = None  # a finite quality score from the event (consumer.quality_meta_key)
    response: str | None = None  # the event's meta.response (a labelled query), stored beside the text

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.query_id, str) or not self.query_id:
            problems.append(f"query_id must be a non-empty string; got {self.query_id!r}")
        if not is_int(self.bucket, allow_numpy=True) or self.bucket < 0:
            problems.append(f"bucket must be an integer >= 0; got {self.bucket!r}")
        if not isinstance(self.topic, str) or not TOPIC_RE.match(self.topic):
            problems.append(f"topic must be a Kafka topic name ([A-Za-z0-9._-], 1-249 chars); got {self.topic!r}")
        if not is_int(self.partition, allow_numpy=True) or self.partition < 0:
            problems.append(f"partition must be an integer >= 0; got {self.partition!r}")
        if not is_int(self.offset, allow_numpy=True) or not 0 <= self.offset < MAX_OFFSET:
            problems.append(f"offset must be an integer in [0, 2**53); got {self.offset!r}")
        if self.text is not None and not isinstance(self.text, str):
            problems.append(f"text must be a string or None; got {type(self.text).__name__}")
        if self.quality is not None and (not isinstance(self.quality, (int, float)) or isinstance(self.quality, bool)
                                         or not np.isfinite(self.quality)):
            problems.append(f"quality must be a finite number or None; got {self.quality!r}")
        if problems:
            raise WindowInputError(f"Assignment {self.query_id!r}: " + "; ".join(problems))

    @property
    def position(self) -> str:
        """The offsets-hash field of this item's partition."""
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class ApplyResult:
    applied: int  # items counted into the window
    duplicates: int  # items at or below the language's last applied offset of their partition, or resent: skipped
    evicted: int  # oldest items removed to keep the window at window_size
    reset: bool = False  # the window was emptied first because the codebook version changed
    resent: int = 0  # of the duplicates: a new offset but an id applied within the dedup horizon


@dataclass(frozen=True)
class WindowSnapshot:
    lang: str
    counts: np.ndarray  # int64, (n_buckets,): P_mon of eq. 4 is counts / size
    size: int  # LLEN(window) == counts.sum()
    codebook_version: str | None  # the newest version applied in the window's lineage; None: no window yet
    offsets: dict[str, int]  # "topic:partition" -> last applied offset
    seen: int = 0  # items ever applied to the window (meta ``seen``): the cursor of the next ``snapshot(since=)``
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # bucket ids applied after
    # ``since``, oldest first (empty without ``since``)
    sampling_rate: float = 1.0  # the share of the language's queries kept when items were last applied (meta)
    sampled_out: int = 0  # queries of the language left out of its sample, ever (meta; at least once)
