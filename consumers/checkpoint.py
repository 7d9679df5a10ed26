"""Consumer offsets, committed only after the state they describe was written (quix-streams' Checkpoint).

Delivery: ``stage(records)`` notes offset+1 per partition once a batch's Redis writes and dead-letter acks
succeeded; ``commit()`` sends them. A crash between a write and the commit re-delivers the batch; the window
store and the unserved store each skip items at or below the last offset they applied per (topic, partition),
so counts are exact (no loss, no double count). Dead letters are at-least-once.

On a rebalance the staged offsets are committed when partitions are *revoked* (still ours) and dropped when
they are *lost* (another member may own them already). ``commit(reason="close")`` is the final commit on stop.
A rebuild reads under a temporary group whose offsets nobody needs: ``NoCheckpoint`` never commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)


class Checkpoint:
    """The offsets written to Redis but not yet committed, per partition, and their commit."""

    def __init__(self, consumer: KafkaConsumer):
        self.consumer = consumer
        self.pending: dict[TopicPartition, int] = {}  # next offset per partition: written, not yet committed

    def stage(self, records: Iterable[Any]) -> None:
        """Note ``records`` as written: their partitions' next offsets become offset + 1."""
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self.pending[tp] = max(self.pending.get(tp, 0), r.offset + 1)

    def commit(self, reason: str = "batch", blocking: bool = True) -> dict[tuple[str, int], int]:
        """Commit the staged offsets; returns them by (topic, partition), or {} when the commit failed (the
        batch will be re-delivered and skipped as duplicates) or nothing was staged."""
        if not self.pending:
            return {}
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self.pending.items()}
        if not blocking:
            def done(_offsets: Any, response: Any) -> None:
                if isinstance(response, Exception):
                    log.warning("offset commit on revoke failed; the batch will be re-delivered and skipped as "
                                "duplicates", extra={"error": repr(response)})

            self.consumer.commit_async(offsets, callback=done)
            self.pending.clear()
            return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # The window already holds this batch with its offsets; a re-delivery is skipped as duplicates.
            log.warning("offset commit failed; the batch will be re-delivered and skipped as duplicates",
                        extra={"reason": reason, "error": repr(e)})
            return {}
        done = {(tp.topic, tp.partition): o for tp, o in self.pending.items()}
        self.pending.clear()
        return done

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the staged offsets of ``partitions`` (lost to another member: never commit them)."""
        for tp in partitions:
            self.pending.pop(tp, None)


class NoCheckpoint(Checkpoint):
    """Stages and forgets: for a temporary group (a rebuild) whose offsets must not be committed."""

    def commit(self, reason: str = "batch", blocking: bool = True) -> dict[tuple[str, int], int]:
        self.pending.clear()
        return {}


class CommitOnRevoke(ConsumerRebalanceListener):
    """Commits the checkpoint when partitions are revoked, never when they are lost."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Written-but-uncommitted offsets are committed while the partitions are still ours. kafka-python 3
        # runs listeners on its IO thread, where a blocking commit is refused: the async commit is sent ahead
        # of the JoinGroup request on the same coordinator connection. (Normally nothing is pending here: each
        # batch commits before the next poll, and close() commits before leaving the group.)
        self.checkpoint.commit(reason="revoke", blocking=False)

    def on_partitions_lost(self, lost: Sequence[TopicPartition]) -> None:
        # Another member may own them already: never commit on loss. The window store's offsets make a
        # re-delivery harmless.
        self.checkpoint.forget(lost)
        log.warning("partitions lost", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in lost]})

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)})
