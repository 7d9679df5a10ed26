"""The demo's view of compass.events: every event of the run, kept in order and printed as a line as it arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from compass.errors import CompassError
from daemon.demo.settings import Say
from infra.settings import ServiceConfig


class EventLog:
    """Reads the demo's events topic from the end, in a thread, and keeps every event of this run.

    Partitions are assigned by hand, without a consumer group: a group member whose heartbeats stall while the
    worker trains in this same process (minutes of CPU-bound steps) is expelled, and kafka-python then spun in
    coordinator lookup without reading again (seen in a demo run); a reader with no group has no session to lose.
    """

    def __init__(self, cfg: ServiceConfig, say: Say):
        from infra.clients import kafka_consumer

        self.events: list[dict[str, Any]] = []
        self.say = say
        self.topic = cfg.kafka.events_topic
        self._stop = threading.Event()
        self._consumer = kafka_consumer(cfg.kafka, None, [], auto_offset_reset="latest")
        self._thread = threading.Thread(target=self._run, name="demo-events", daemon=True)

    def start(self) -> EventLog:
        from kafka import TopicPartition

        deadline = time.monotonic() + 30
        parts = self._consumer.partitions_for_topic(self.topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            raise CompassError(f"demo: the events topic {self.topic!r} has no partitions after 30 s; is Kafka up?")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so no event published from here on is missed
            self._consumer.position(tp)
        self._thread.start()
        return self

    def _run(self) -> None:
        from infra.messages import BadMessage, decode_event

        while not self._stop.is_set():
            for msgs in self._consumer.poll(timeout_ms=300).values():
                for msg in msgs:
                    try:
                        ev = decode_event(msg.value)
                    except BadMessage as e:
                        self.say(f"[red]unreadable event skipped: {e}[/]")
                        continue
                    self.events.append(ev.to_json())
                    self.say(describe_event(ev.to_json()))

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.5)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def describe_event(ev: dict[str, Any]) -> str:
    d, lang, t = ev.get("data") or {}, ev["language"], ev["type"]
    stamp = time.strftime("%H:%M:%S", time.localtime(ev["at"]))
    if t == "drift_detected":
        js = d.get("js")
        return (f"{stamp} [bold yellow]{lang}: drift detected[/] JS {js:.3f} > theta {d.get('theta')} "
                f"over {d.get('n_samples')} queries" if js is not None else f"{stamp} {lang}: trigger ({d})")
    if t == "update_enqueued":
        return f"{stamp} {lang}: update job {ev.get('job_id')} enqueued"
    if t == "update_started":
        return f"{stamp} {lang}: worker started the update (reselection + ECDA), attempt {d.get('attempt')}"
    if t == "adapter_promoted":
        g = d.get("gate") or {}
        return (f"{stamp} [bold green]{lang}: adapter {d.get('adapter_version')} promoted[/] "
                f"(adaptation {_pct(g.get('adaptation_change'))}, retention {_pct(g.get('retention_change'))})")
    if t == "adapter_rejected":
        return f"{stamp} [bold red]{lang}: candidate {d.get('adapter_version')} rejected[/]: {d.get('reasons')}"
    if t == "update_finished":
        return f"{stamp} {lang}: update finished ({d.get('outcome')}); serving {d.get('adapter_version')}"
    return f"{stamp} {lang}: {t} {d}"


def _pct(x: Any) -> str:
    from infra.logs import human_pct

    return human_pct(x)  # 3 significant digits: -0.0423 -> "-4.23%"
