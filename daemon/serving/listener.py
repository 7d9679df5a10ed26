"""Hot promotion: ``adapter_promoted`` events on ``compass.events`` make every server replica load the new version.

Every replica must see every promotion, so there is no shared consumer group: each process joins a group of its
own (``<serving.events_group_id>-<host>-<pid>-<random>``) and starts at the end of the topic
(``auto_offset_reset='latest'``); what it missed while down it gets from the registry sync at start-up. The
registry is also polled every ``poll_s`` seconds, which covers rollbacks (no event) and a Kafka outage.
A malformed event is logged and skipped; a version that fails to load leaves the language on its old version.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

from infra.messages import BadMessage, decode_event
from infra.settings import KafkaConfig

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from daemon.serving.server import AdapterServer

log = logging.getLogger(__name__)
RECONNECT_S = 5.0


def private_group(group_id: str) -> str:
    """A consumer group only this process uses, so it receives every event."""
    return f"{group_id}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class PromotionListener:
    """A daemon thread: Kafka promotions -> ``server.sync(lang)``; every ``poll_s`` -> ``server.sync()``."""

    def __init__(self, server: AdapterServer, cfg: KafkaConfig, group_id: str, poll_s: float = 30.0,
                 topic: str | None = None):
        self.server = server
        self.cfg = cfg
        self.group_id = private_group(group_id)
        self.topic = topic or cfg.events_topic
        self.poll_s = float(poll_s)
        self.state = "starting"  # starting | ok | unreachable (registry poll only)
        self.bad = 0  # malformed events skipped
        self.applied = 0  # promotions that changed what is served
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="compass-promotions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the consumer has its partitions and their end offsets (events from now on are seen)."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ----- the thread -----
    def _loop(self) -> None:
        consumer: KafkaConsumer | None = None
        next_poll = time.monotonic() + self.poll_s
        next_connect = 0.0
        while not self._stop.is_set():
            if consumer is None and time.monotonic() >= next_connect:
                consumer = self._connect()
                next_connect = time.monotonic() + RECONNECT_S
            if consumer is not None:
                try:
                    self._poll(consumer)
                except Exception as e:  # noqa: BLE001 - a broker failure must not end the thread
                    log.warning("serving: lost %s (%s); following the registry every %.0f s until it is back",
                                self.topic, e, self.poll_s)
                    self.state = "unreachable"
                    _close(consumer)
                    consumer = None
            else:
                self._stop.wait(0.5)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_s
                self._sync(None, None)
        if consumer is not None:
            _close(consumer)

    def _connect(self) -> KafkaConsumer | None:
        from infra.clients import kafka_consumer

        try:
            consumer = kafka_consumer(self.cfg, self.group_id, [self.topic], auto_offset_reset="latest",
                                      enable_auto_commit=False)
        except Exception as e:  # noqa: BLE001 - ServiceUnavailable, or a kafka error it does not wrap
            self.state = "unreachable"
            log.warning("serving: %s; following the registry every %.0f s", e, self.poll_s)
            return None
        self._ready.clear()
        return consumer

    def _poll(self, consumer: KafkaConsumer) -> None:
        batches = consumer.poll(timeout_ms=500)
        if not self._ready.is_set() and consumer.assignment():
            for tp in consumer.assignment():
                consumer.position(tp)  # resolve 'latest' now, so anything published after ready is seen
            self.state = "ok"
            self._ready.set()
            self._sync(None, None)  # promotions between start-up and now
        for records in batches.values():
            for rec in records:
                self._handle(rec)

    def _handle(self, rec) -> None:  # noqa: ANN001 - a kafka ConsumerRecord
        where = f"{rec.topic}:{rec.partition}@{rec.offset}"
        try:
            event = decode_event(rec.value)
        except BadMessage as e:
            self.bad += 1
            log.warning("serving: skipped event %s: %s", where, e)
            return
        if event.type != "adapter_promoted":
            return
        if event.language not in self.server.router.languages:
            log.info("serving: %s promoted %s, a language this server does not serve; ignored", where,
                     event.language)
            return
        version = event.data.get("adapter_version")
        if not isinstance(version, str) or not version:
            self.bad += 1
            log.warning("serving: event %s field 'data.adapter_version' is %r; syncing %s from the registry",
                        where, version, event.language)
            version = None
        self._sync(event.language, version)

    def _sync(self, lang: str | None, expect: str | None) -> None:
        try:
            changed = self.server.sync(lang, expect=expect)
        except Exception:  # noqa: BLE001 - keep serving whatever is loaded
            log.exception("serving: registry sync of %s failed", lang or "all languages")
            return
        self.applied += len(changed)


def _close(consumer: KafkaConsumer) -> None:
    try:
        consumer.close()
    except Exception:  # noqa: BLE001
        log.debug("serving: closing the events consumer failed", exc_info=True)
