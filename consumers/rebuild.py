"""Rebuild: re-count the Redis windows from the whole queries topic (after a loss of Redis state).

The window keys are reset, the topic is read from the beginning under a temporary group id and applied, and
the run ends once every partition reached the end offset captured at start. Nothing is dead-lettered again
(``NullDeadLetters``: those messages were dead-lettered when first read; they are still counted), no centroid
moves, no quality score is pushed (the daemon's detector has seen them) and no offset of the live group is
touched (``NoCheckpoint``). A lost codebook pointer is set back to the newest stored codebook. The unserved
counts are not reset: their own offsets skip what they hold (after a loss of Redis they are re-counted).
Stop the live consumers first: their newer offsets would make the store skip the re-read items.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from kafka import TopicPartition

from compass.errors import CompassError
from consumers.checkpoint import Checkpoint, NoCheckpoint
from consumers.monitor import Monitor
from consumers.stats import RunStats
from infra import deadletter as dl
from infra.clients import kafka_consumer

log = logging.getLogger(__name__)


class Rebuild(Monitor):
    """The monitor on the rebuild path: ``Rebuild(config, languages, ...).run()`` re-counts and returns."""

    fixed_codebook = True
    restores_codebook = True

    def _connect(self, group_id: str, kafka_kw: dict[str, Any],
                 ) -> tuple[Any, Checkpoint, dl.DeadLetterWriter | dl.NullDeadLetters]:
        self.group_id = f"{group_id}-rebuild-{uuid.uuid4().hex[:8]}"
        consumer = kafka_consumer(self.config.kafka, self.group_id, [], **kafka_kw)
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            raise CompassError(f"rebuild: topic {self.topic!r} does not exist or has no partitions; check "
                               "kafka.queries_topic")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        self._ends: dict[TopicPartition, int] = consumer.end_offsets(tps)  # where to stop
        self.windows.reset()
        log.info("rebuild started", extra={"topic": self.topic,
                                           "end_offsets": {tp.partition: o for tp, o in self._ends.items()}})
        return consumer, NoCheckpoint(consumer), dl.NullDeadLetters()

    @property
    def quality_key(self) -> str | None:
        return None  # history the daemon's detector has already seen carries no scores

    def _end_offsets(self, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self._ends

    def run(self, stop_event: threading.Event | None = None, *, burst: bool = True,
            max_messages: int | None = None, retry_backoff_s: float = 1.0) -> RunStats:
        """Re-count until every partition reached the end offset captured at start (always a burst)."""
        return super().run(stop_event, burst=True, max_messages=max_messages, retry_backoff_s=retry_backoff_s)
