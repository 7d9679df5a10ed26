"""The gateway's query events: one per answered chat/completion request, produced to ``kafka.queries_topic`` off
the request path.

``query_event`` builds the event (schema v1, consumers/events.py): ``lang`` is set only when the language is
served (a configured language identified with enough confidence, ``classify``), so the monitor counts the query
in the window of the language whose model answered it and need not identify it again; an unserved query
(``und`` or an unconfigured language) carries no ``lang`` and the consumers identify and count it as unserved
exactly as they do any producer's. ``meta.route`` records the routing decision.

``EventSink``: a bounded queue filled with ``put_nowait`` (a request never waits for Kafka; a full queue drops the
event, counted, with a warning at most every ``WARN_EVERY_S``) and a daemon thread that drains it into a
kafka-python producer (acks=1, linger), reconnecting with back-off (infra/retry.py) while Kafka is down; an event
whose send timed out is kept and sent again once Kafka answers. At most ``maxsize`` events are in the producer
unacknowledged (the rest wait in the queue), so the gateway never holds more than twice ``maxsize``; one Kafka does
not take within the producer's delivery timeout (120 s) is dropped as ``send_failed``. ``close`` sends what it can
within a timeout and logs what was lost.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from compass.route.decision import Served
from consumers.events import SCHEMA_HEADER, SCHEMA_VERSION, QueryEvent, encode_event
from daemon.gateway.metrics import GatewayMetrics
from daemon.gateway.routing import Choice
from infra.errors import ServiceUnavailable
from infra.retry import Backoff
from infra.settings import KafkaConfig

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
_HEADERS = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]


def query_event(text: str, served: Served, choice: Choice, *, requested: Any, endpoint: str, stream: bool,
                upstream_status: int, routes_version: int, ts_ms: int | None = None,
                event_id: str | None = None) -> QueryEvent:
    """The query event of one answered request (see the module docstring for ``lang``)."""
    route = {"language": served.language, "confidence": round(served.confidence, 4), "served": served.served,
             "reason": served.reason, "model": choice.model, "target": choice.target, "routed": choice.routed,
             "requested": requested if isinstance(requested, str) or requested is None else str(requested),
             "routes_version": routes_version, "endpoint": endpoint, "stream": stream,
             "upstream_status": upstream_status}
    return QueryEvent(id=event_id or f"gw-{uuid.uuid4().hex}", text=text,
                      lang=served.language if served.served else None,
                      ts_ms=int(time.time() * 1000) if ts_ms is None else ts_ms, meta={"route": route})


class _Every:
    """True at most once per ``period_s``; counts the calls in between (a rate-limited log line)."""

    def __init__(self, period_s: float):
        self.period_s, self._last, self.count = period_s, -float("inf"), 0
        self._lock = threading.Lock()

    def tick(self) -> int:
        """The calls since the last True (this one included) when it is time to log, else 0."""
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if now - self._last < self.period_s:
                return 0
            n, self.count, self._last = self.count, 0, now
            return n


STALL_S = 2.0  # pending sends with no acknowledgement this long: Kafka counts as down (a live broker acks in ms)


class EventSink:
    """The bounded buffer and its producer thread (see the module docstring)."""

    def __init__(self, kafka: KafkaConfig, topic: str, maxsize: int, metrics: GatewayMetrics, *,
                 linger_ms: int = 20, backoff: Backoff | None = None):
        self.kafka, self.topic, self.metrics, self.linger_ms = kafka, topic, metrics, linger_ms
        self.queue: queue.Queue[QueryEvent] = queue.Queue(maxsize)
        self.backoff = backoff or Backoff(base_s=0.5, max_s=30.0, jitter="half")
        metrics.buffered.set_function(self.buffered)
        self._producer: Any = None
        self._pending: QueryEvent | None = None  # taken from the queue, not yet handed to the producer
        self._in_flight = 0  # handed to the producer, not yet acknowledged or failed
        self._waiting_since: float | None = None  # since when sends are pending with no acknowledgement
        self._closing = False  # a forced close fails the in-flight sends: they are counted once, as shutdown
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._full_warn, self._fail_warn = _Every(WARN_EVERY_S), _Every(WARN_EVERY_S)
        self._down_since: float | None = None
        self.connected = False  # the producer reached Kafka and its last send was accepted

    def buffered(self) -> int:
        """Events waiting for Kafka: in the queue, being handed over, or sent and not yet acknowledged."""
        with self._lock:
            return self.queue.qsize() + (self._pending is not None) + self._in_flight

    # ----- the request side: never blocks -----
    def offer(self, event: QueryEvent) -> bool:
        """Buffer ``event``; False (dropped, counted) when the buffer is full."""
        try:
            self.queue.put_nowait(event)
            return True
        except queue.Full:
            self.metrics.dropped.labels("buffer_full").inc()
            if n := self._full_warn.tick():
                log.warning("gateway: event buffer full (%d events; Kafka at %s slow or down): dropped %d event(s) "
                            "since the last warning; requests are unaffected. Fix Kafka, or raise "
                            "gateway.buffer_size to ride out longer outages", self.queue.maxsize,
                            ",".join(self.kafka.bootstrap_servers), n)
            return False

    # ----- the producer thread -----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-events", daemon=True)
        self._thread.start()

    def _connect(self) -> bool:
        from infra.clients import kafka_producer

        try:
            self._producer = kafka_producer(self.kafka, acks=1, linger_ms=self.linger_ms, max_block_ms=5000,
                                            enable_idempotence=False)  # idempotence needs acks=all
        except (ServiceUnavailable, KafkaError) as e:
            self._down(e)
            return False
        self._up()
        return True

    def _down(self, error: BaseException) -> None:
        self.metrics.kafka_up.set(0)
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("gateway: cannot produce query events (%s); buffering up to %d and retrying with back-off; "
                        "requests are unaffected", error, self.queue.maxsize)

    def _up(self) -> None:
        self.metrics.kafka_up.set(1)
        self.connected = True
        if self._down_since is not None:
            log.info("gateway: producing query events again after %.1f s; %d buffered",
                     time.monotonic() - self._down_since, self.queue.qsize())
            self._down_since = None

    def _stalled(self) -> bool:
        """Sends pending and nothing acknowledged for STALL_S: the broker is gone even though ``send`` still
        accepts (kafka-python buffers until its delivery timeout, minutes later)."""
        since = self._waiting_since
        return self.connected and since is not None and time.monotonic() - since > STALL_S

    def _run(self) -> None:
        failures = 0
        while time.monotonic() < self._deadline:
            if self._stalled():
                self._down(KafkaTimeoutError(f"no acknowledgement from Kafka for {STALL_S:.0f} s"))
            if self._producer is None and not self._connect():
                if self._stopping.is_set():
                    return
                failures += 1
                self._stopping.wait(self.backoff.delay(failures))
                continue
            if self._in_flight >= self.queue.maxsize:  # Kafka is not acknowledging: hold the rest in the queue,
                self._stopping.wait(0.05)                # so at most twice buffer_size events are ever held
                continue
            event = self._pending
            if event is None:
                try:
                    event = self.queue.get(timeout=0.1)
                except queue.Empty:
                    if self._stopping.is_set():
                        return  # drained
                    continue
                self._pending = event
            try:
                future = self._producer.send(self.topic, key=event.id.encode(), value=encode_event(event),
                                             headers=_HEADERS)
            except KafkaTimeoutError as e:  # no metadata or the producer's own buffer full: Kafka is away
                self._down(e)
                if self._stopping.is_set():
                    return
                failures += 1
                self._stopping.wait(self.backoff.delay(failures))
                continue
            except KafkaError as e:  # this event cannot be sent (e.g. too large): drop it, keep going
                self._pending = None
                self._failed(e)
                continue
            failures = 0
            with self._lock:
                self._pending = None
                self._in_flight += 1
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
            future.add_callback(self._acked).add_errback(self._failed_in_flight)

    def _acked(self, _metadata: Any) -> None:
        with self._lock:
            if self._closing:
                return  # already counted as lost at shutdown
            self._in_flight -= 1
            self._waiting_since = time.monotonic() if self._in_flight else None
        self.metrics.produced.inc()
        if not self.connected:
            self._up()

    def _failed_in_flight(self, error: BaseException) -> None:
        with self._lock:
            if self._closing:
                return  # counted as lost at shutdown (close), not as send_failed
            self._in_flight -= 1
        self._down(error)
        self._failed(error)

    def _failed(self, error: BaseException) -> None:
        self.metrics.dropped.labels("send_failed").inc()
        if n := self._fail_warn.tick():
            log.warning("gateway: Kafka refused %d query event(s) since the last warning: %s", n, error)

    # ----- shutdown -----
    def close(self, timeout_s: float) -> int:
        """Send what is buffered within ``timeout_s``; returns (and counts, and logs) the events lost."""
        end = time.monotonic() + timeout_s
        self._deadline = end
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(max(0.0, end - time.monotonic()) + 1.0)
        if self._producer is not None:
            with contextlib.suppress(KafkaError):  # what stays unacknowledged is counted below
                self._producer.flush(timeout=max(0.0, end - time.monotonic()))
        with self._lock:  # what is still held is lost: counted once below, and no longer buffered
            lost = self.queue.qsize() + (self._pending is not None) + self._in_flight
            self._closing, self._pending, self._in_flight = True, None, 0
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except KafkaError:
                # kafka-python 3.0's close() flushes first and raises while sends are unacknowledged, before its
                # force-close: stop its sender thread ourselves, or it retries the dead broker for ever
                sender = getattr(self._producer, "_sender", None)
                if sender is not None and sender.is_alive():
                    sender.force_close()
        if lost:
            self.metrics.dropped.labels("shutdown").inc(lost)
            log.warning("gateway: shut down with %d query event(s) unsent (Kafka did not take them within "
                        "gateway.shutdown_flush_s = %.1f s)", lost, timeout_s)
        else:
            log.info("gateway: every buffered query event was sent before shutdown")
        return lost
