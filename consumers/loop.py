"""The monitor's outer loop: batch after batch until stopped, caught up or ``max_messages`` polled.

A batch that fails is rewound (``Monitor.run_once``) and retried: an outage (Kafka, Redis unreachable) without
end, waiting the project's retry policy (infra/retry.py, no jitter: ``retry_backoff_s`` doubling, at most 32
times that and 30 s); any other failure ``consumer.max_batch_failures`` times in a row switches to one message
at a time, so that only the message that keeps failing is dead-lettered. A dead letter the broker refuses
stops the consumer (``DeadLetterError``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from kafka.errors import KafkaError

from compass.errors import CompassError
from consumers.stats import RunStats
from infra import deadletter as dl
from infra.isolate import OUTAGE, describe
from infra.retry import Backoff

if TYPE_CHECKING:
    from consumers.monitor import Monitor

log = logging.getLogger("consumers.monitor")  # one logger for the loop and its monitor, as operators know it

MAX_OUTAGE_WAIT_S = 30.0
PROGRESS_EVERY_S = 5.0


def run(monitor: Monitor, stop_event: threading.Event, *, burst: bool, max_messages: int | None,
        retry_backoff_s: float) -> RunStats:
    """See ``Monitor.run``."""
    m = monitor
    total = RunStats()
    last_log, failures = time.monotonic(), 0
    backoff = Backoff(base_s=retry_backoff_s, max_s=min(MAX_OUTAGE_WAIT_S, retry_backoff_s * 32), jitter=False)
    while not stop_event.is_set():
        remaining = None if max_messages is None else max_messages - total.polled
        if remaining is not None and remaining <= 0:
            break
        try:
            b = m.run_once(max_records=remaining)
        except dl.DeadLetterError:
            log.critical("a dead letter cannot be written; stopping (the batch is not committed)")
            raise
        except Exception as e:  # noqa: BLE001 - rewound; see the module docstring for what is retried how
            failures += 1
            total.failed_batches += 1
            outage = isinstance(e, OUTAGE)
            m.metrics.failed_batches.labels("outage" if outage else "error").inc()
            m.metrics.consecutive_failures.set(failures)
            m.gauges.refresh_lag()  # the gauge must show a stalled partition
            if not outage and failures >= m.cc.max_batch_failures and m.one_by_one == 0:
                # Something in this batch fails every time: handle the next messages alone, so only the
                # one that keeps failing is dead-lettered.
                m.one_by_one = m.cc.max_poll_records
                log.error("batch failed %d times in a row; handling its messages one at a time", failures,
                          extra={"error": describe(e)})
                continue
            delay = backoff.delay(failures)
            log.error("batch failed; it is rewound and retried",
                      extra={"error": describe(e), "outage": outage, "retry_in_s": delay, "failures": failures},
                      exc_info=not outage and not isinstance(e, (KafkaError, CompassError)))
            stop_event.wait(delay)
            continue
        if failures:
            m.metrics.consecutive_failures.set(0)
        failures = 0
        total.add(b)
        if b.polled == 0 and burst and m.caught_up():
            break
        if time.monotonic() - last_log >= PROGRESS_EVERY_S or (b.polled and log.isEnabledFor(logging.DEBUG)):
            last_log = time.monotonic()
            log.info("progress", extra={"batches": total.batches, "messages": total.polled,
                                        "applied": total.applied, "unserved": total.unserved,
                                        "dead_lettered": total.dead_lettered,
                                        "batch_size": b.polled, "lag": m.gauges.lag(),
                                        "codebook": m.codebook_version})
    m.gauges.lag()
    m.gauges.fill(m.windows.languages(), now=True)
    log.info("stopped", extra={"batches": total.batches, "messages": total.polled, "applied": total.applied,
                               "duplicates": total.duplicates, "unserved": dict(total.unserved_langs),
                               "unserved_duplicates": total.unserved_duplicates,
                               "sampled_out": dict(total.sampled_out_langs),
                               "dead_lettered": total.dead_lettered, "reasons": dict(total.reasons)})
    return total
