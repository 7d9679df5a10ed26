"""``compass simulate --through-kafka``: the Table 11 replay through the real consumers, Redis and daemon.

The in-process mode (``compass.drift.simulate``) recomputes P_mon, JS and eq. 6 itself. This mode drives the
production pieces instead, once per theta, each run under its own queries/jobs/events/dead-letter topics,
consumer groups, Redis key prefix and codebook directory (so runs neither see nor disturb each other or a
live deployment on the same servers), all removed afterwards:

  1. codebook: the same seeded k-means as the in-process mode (``fit_codebook``), published with
     ``CodebookStore.publish`` (the consumers load it from its files and the Redis pointer);
  2. P_ref: the first ``reference_samples`` samples' bucket counts, stored with ``set_reference`` (adapter "a0");
  3. per ``increment`` samples: the events are produced to the queries topic (``consumers.replay.replay``,
     ``lang`` set so language ID drops none), the ``Monitor`` consumes them until caught up (embed, assign,
     window update in Redis), then ``Daemon.check(lang, now=t)`` runs with a languages.yaml whose theta,
     min_samples, window_size, rearm_ratio and cooldown match the ``SimulationConfig`` (now = t, the samples
     seen, so the cooldown in seconds is a cooldown in samples);
  4. a check that fires stands in for the worker: P_ref becomes the window's counts under a new adapter
     version (the daemon re-arms on a new reference), and ``update_finished`` is published on the events
     topic and moved into the language's inbox by ``Daemon.poll_events``, as the worker's report would be.

The daemon's far-share re-clustering check is off (``daemon.stale_far_max_texts`` = 0): like the in-process
replay, the run measures the drift trigger alone (the noise share stays 0 with a k-means codebook).

The fired checks are scored with ``compass.drift.simulate.score``, as in process. Not supported here (they
change the codebook or the update timing outside the production path): ``eta > 0`` and ``update_lag > 0``.
The consumers embed the texts with the ``embedder`` given (pass the one that embedded ``embeddings``; a
cached one makes the second pass cheap) and keep their codebook fixed (``consumer.eta`` = 0).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compass.config import LanguagesConfig, ServiceConfig
from compass.drift.simulate import SimulationConfig, Stream, SweepRow, fit_codebook, score
from compass.langid import UND
from consumers.events import QueryEvent

EVENT_WAIT_S = 60.0  # how long the daemon's events consumer may take to join, and a report to reach the inbox


class SimulationSetupError(ValueError):
    """The simulation cannot run through Kafka as configured."""


@dataclass(frozen=True)
class _Identified:
    lang: str
    confidence: float


class _GivenLanguage:
    """Language ID for events that carry ``lang``: the monitor asks it about none of them."""

    def identify_batch(self, texts: list[str]) -> list[_Identified]:
        return [_Identified(UND, 0.0) for _ in texts]


def check_supported(config: SimulationConfig) -> None:
    """Raise ``SimulationSetupError`` for settings the through-Kafka mode does not reproduce."""
    if config.eta != 0:
        raise SimulationSetupError(f"SimulationConfig.eta: got {config.eta}; --through-kafka keeps the codebook "
                                   "fixed: use eta 0 (or run in process)")
    if config.update_lag != 0:
        raise SimulationSetupError(f"SimulationConfig.update_lag: got {config.update_lag}; --through-kafka updates "
                                   "at the triggering check: use update_lag 0 (or run in process)")


def languages_yaml(lang: str, config: SimulationConfig, theta: float) -> str:
    """The languages.yaml of one sweep point: ``lang`` only, cooldown_s = cooldown in samples (now = t)."""
    s = config.settings(theta)
    body = {"theta": s.theta, "min_samples": s.min_samples, "window_size": s.window_size,
            "cooldown_s": s.cooldown_s, "rearm_ratio": s.rearm_ratio}
    return json.dumps({"languages": {lang: body}}) + "\n"  # JSON is YAML


def _run_config(service: ServiceConfig, run: str, codebook_dir: Path) -> ServiceConfig:
    k = service.kafka.model_copy(update={
        "queries_topic": f"{run}.queries", "jobs_topic": f"{run}.jobs", "events_topic": f"{run}.events",
        "dead_letter_topic": f"{run}.dead-letter",
    })
    return service.model_copy(update={
        "kafka": k,
        "redis": service.redis.model_copy(update={"key_prefix": run}),
        "consumer": service.consumer.model_copy(update={"group_id": f"{run}-monitor", "eta": 0.0,
                                                        "codebook_dir": codebook_dir, "metrics_port": 0}),
        # the in-process replay models the drift trigger only: no far-share re-clustering (noise stays 0 with k-means)
        "daemon": service.daemon.model_copy(update={"events_group_id": f"{run}-daemon", "stale_far_max_texts": 0}),
    })


def _cleanup(cfg: ServiceConfig, client: Any) -> None:
    from consumers.clients import kafka_admin

    k = cfg.kafka
    with contextlib.suppress(Exception):
        keys = list(client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    with contextlib.suppress(Exception):
        admin = kafka_admin(k)
        try:
            admin.delete_topics([k.queries_topic, k.jobs_topic, k.events_topic, k.dead_letter_topic],
                                raise_errors=False)
        finally:
            admin.close()


def _join_events(daemon: Any) -> None:
    """Let the daemon's events consumer join its group before the stream starts (a fresh broker is slow at it)."""
    deadline = time.monotonic() + EVENT_WAIT_S
    daemon.poll_events(timeout_ms=200)
    while daemon.inbox is not None and not daemon.inbox.consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon's consumer of {daemon.config.kafka.events_topic} got no partition in "
                               f"{EVENT_WAIT_S:.0f} s; check that Kafka is healthy")
        daemon.poll_events(timeout_ms=200)


def _report_finished(daemon: Any, lang: str, at: float, job_id: str, adapter: str) -> None:
    """The worker's report: publish update_finished, then let the daemon queue it in the inbox."""
    from daemon.messages import Event

    daemon.dispatcher.emit(Event("update_finished", lang, at, job_id, {"adapter_version": adapter}))
    deadline = time.monotonic() + EVENT_WAIT_S
    while time.monotonic() < deadline:
        if daemon.poll_events(timeout_ms=200):
            return
    raise TimeoutError(f"update_finished of job {job_id} did not reach the daemon's inbox in {EVENT_WAIT_S:.0f} s "
                       f"(topic {daemon.config.kafka.events_topic}); check that Kafka is healthy")


def simulate_through_kafka(
    stream: Stream,
    embeddings: np.ndarray,
    config: SimulationConfig,
    service: ServiceConfig,
    *,
    theta: float,
    embedder: Any,
    on_check: Callable[[], None] | None = None,
) -> SweepRow:
    """One theta of the sweep through Kafka, the monitor, Redis and the daemon (see the module docstring)."""
    from consumers.clients import ensure_topics, redis_client
    from consumers.codebook import CodebookStore
    from consumers.monitor import Monitor
    from consumers.replay import replay
    from daemon.reference import set_reference
    from daemon.service import Daemon

    check_supported(config)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(stream):
        raise ValueError(f"embeddings: got shape {x.shape} for {len(stream)} samples; give one row per sample")
    if len(stream) < config.reference_samples:
        raise ValueError(f"SimulationConfig.reference_samples: got {config.reference_samples} but the stream has "
                         f"{len(stream)} samples; lower it or give a longer stream")
    lang = stream.lang
    book = fit_codebook(x, config)
    run = f"compass-sim-{uuid.uuid4().hex[:10]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    cfg = _run_config(service, run, tmp / "codebooks")
    langs_path = tmp / "languages.yaml"
    langs_path.write_text(languages_yaml(lang, config, theta), encoding="utf-8")
    languages = LanguagesConfig.model_validate(json.loads(langs_path.read_text(encoding="utf-8")))
    client = redis_client(cfg.redis)
    monitor: Monitor | None = None
    daemon: Daemon | None = None
    try:
        k = cfg.kafka
        ensure_topics(k, [k.queries_topic, k.jobs_topic, k.events_topic, k.dead_letter_topic])
        published = CodebookStore(cfg.consumer.codebook_dir, client, run).publish(book.clusterer, embedder.model_id,
                                                                                  languages=[lang])
        ref_counts = book.counts(book.assign(x[: config.reference_samples]))
        set_reference(client, lang, codebook_version=published.version, adapter_version="a0", counts=ref_counts,
                      prefix=run)
        monitor = Monitor(cfg, languages, embedder=embedder, identifier=_GivenLanguage(), poll_timeout_ms=100)
        daemon = Daemon(cfg, langs_path, owner=f"{run}-daemon", client=client)
        _join_events(daemon)
        fired: list[int] = []
        spent, n_checks = 0.0, 0
        for start in range(0, len(stream), config.increment):
            t = min(len(stream), start + config.increment)
            events = [QueryEvent(id=f"{run}:{i}", text=stream.texts[i], lang=lang) for i in range(start, t)]
            replay(k, events)
            stats = monitor.run(burst=True)
            if stats.applied + stats.duplicates != len(events):
                raise RuntimeError(f"the monitor applied {stats.applied} of {len(events)} events of samples "
                                   f"[{start}, {t}) (dead letters by reason: {dict(stats.reasons)}); see "
                                   f"topic {k.dead_letter_topic}")
            t0 = time.perf_counter()
            result = daemon.check(lang, now=float(t))
            spent += time.perf_counter() - t0
            n_checks += 1
            if result.state == "error":
                raise RuntimeError(f"daemon check at sample {t} failed: {result.detail}")
            if result.fired and result.job is not None:
                fired.append(t)
                adapter = f"a{len(fired)}"
                snap = daemon.windows.snapshot(lang)
                set_reference(client, lang, codebook_version=snap.codebook_version or published.version,
                              adapter_version=adapter, counts=snap.counts, prefix=run)
                _report_finished(daemon, lang, float(t), result.job.job_id, adapter)
            if on_check is not None:
                on_check()
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.close()
        if daemon is not None:
            with contextlib.suppress(Exception):
                daemon.stop()
        _cleanup(cfg, client)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    change_points = stream.transitions()
    delays, fps = score(fired, change_points)
    hit = [d for d in delays if d is not None]
    return SweepRow(
        theta=theta, updates=len(fired), transitions=len(change_points), detected=len(hit),
        avg_delay=float(np.mean(hit)) if hit else None, false_positives=fps,
        fp_rate=100.0 * fps / len(fired) if fired else 0.0, fired_at=tuple(fired), delays=tuple(delays),
        n_checks=n_checks, check_ms=1000.0 * spent / max(1, n_checks),
    )


def sweep_through_kafka(
    stream: Stream,
    embeddings: np.ndarray,
    config: SimulationConfig,
    service: ServiceConfig,
    *,
    embedder: Any,
    on_check: Callable[[], None] | None = None,
) -> list[SweepRow]:
    """``simulate_through_kafka`` for every theta of ``config.thetas``, in order (a fresh run each)."""
    check_supported(config)
    return [simulate_through_kafka(stream, embeddings, config, service, theta=theta, embedder=embedder,
                                   on_check=on_check) for theta in config.thetas]
