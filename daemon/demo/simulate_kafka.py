"""``compass simulate --through-kafka``: the Table 11 replay through the real consumers, Redis and daemon.

The in-process mode (``compass.drift.simulate``) calls ``compass.drift.lifecycle.step`` itself. This mode drives
the production pieces instead, once per (detector, theta) of the ``SimulationConfig``, each run under its own
queries/jobs/events/dead-letter topics, consumer groups, Redis key prefix and codebook directory (so runs neither
see nor disturb each other or a live deployment on the same servers), all removed afterwards:

  1. codebook: the same seeded k-means as the in-process mode (``fit_codebook``), published with
     ``CodebookStore.publish`` (the consumers load it from its files and the Redis pointer);
  2. P_ref: the initial training cycle's eq. 3 reference (``compass.drift.eq3.References``, the builder the
     in-process replay uses), stored with ``set_reference`` (adapter "a0") before the stream starts;
  3. per ``increment`` samples: the events are produced to the queries topic (``consumers.replay.replay``,
     ``lang`` set so language ID drops none), the ``Monitor`` consumes them until caught up (embed, assign,
     window update in Redis), then ``Daemon.check(lang, now=t)`` runs: the daemon reads the window, its new
     bucket ids and P_ref and calls the lifecycle with the run's ``LanguageSettings`` (a ``LanguagesConfig``
     object, no file), now = t, the samples seen, so every ``*_s`` setting is in samples;
  4. a dispatched update is answered by a simulated worker: the eq. 3 reference of the frozen window (the same
     builder; the window's rows are the last ``window_size`` samples, checked against the daemon's counts) under a
     new adapter version, then ``update_started``, ``adapter_promoted`` and ``update_finished`` (ok, promoted)
     published on the events topic and moved into the language's inbox by ``Daemon.poll_events``.

The daemon's far-share re-clustering check is off (``daemon.stale_far_max_texts`` = 0): like the in-process
replay, the run measures the drift lifecycle alone (the noise share stays 0 with a k-means codebook).

The dispatched updates are scored with ``compass.drift.scoring``, as in process; the ``fixed-interval`` and
``never`` rows need no run; every row also gives its times in seconds at ``arrival_rate`` (unsampled: one offered
query every 1 / arrival_rate s). Not supported here: ``eta > 0`` (it changes the codebook outside the production
path) and sampling (``sampling_rate`` < 1 or ``max_per_second``: the run's consumer would have to sample on its
own event ids and the daemon's checks be counted in kept queries; the in-process replay models it). The
consumers embed the texts with the ``embedder`` given (pass the one that embedded ``embeddings``; a
cached one makes the second pass cheap) and keep their codebook fixed (``consumer.eta`` = 0).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compass.drift.eq3 import Pool
from compass.drift.replay import batches, ready_threshold
from compass.drift.scoring import make_row
from compass.drift.simulate import SimulationConfig, Stream, SweepRow, assemble, fit_codebook, references_for
from compass.drift.timing import Clock, timed
from compass.langid import UND
from compass.languages import LanguagesConfig
from consumers.events import QueryEvent
from infra.settings import ServiceConfig

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
    if config.sampling.sampled:
        raise SimulationSetupError(f"SimulationConfig.sampling_rate {config.sampling_rate}, max_per_second "
                                   f"{config.max_per_second}: --through-kafka replays every query; drop the "
                                   "sampling (rate 1, no cap) or run in process, which samples")


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
        # the in-process replay models the drift lifecycle only: no far-share re-clustering (noise stays 0 with k-means)
        "daemon": service.daemon.model_copy(update={"events_group_id": f"{run}-daemon", "stale_far_max_texts": 0}),
    })


def _cleanup(cfg: ServiceConfig, client: Any) -> None:
    from infra.clients import kafka_admin
    from infra.keys import Keys

    k = cfg.kafka
    with contextlib.suppress(Exception):
        keys = list(client.scan_iter(match=Keys(cfg.redis.key_prefix).everything(), count=1000))
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


def _report_promoted(daemon: Any, lang: str, at: float, job_id: str, adapter: str) -> None:
    """The worker's reports of a promoted update, published, then queued by the daemon in the language's inbox."""
    from infra.messages import Event

    reports = [Event("update_started", lang, at, job_id, {}),
               Event("adapter_promoted", lang, at, job_id, {"adapter_version": adapter}),
               Event("update_finished", lang, at, job_id, {"ok": True, "outcome": "promoted",
                                                           "adapter_version": adapter})]
    for event in reports:
        daemon.dispatcher.emit(event)
    queued, deadline = 0, time.monotonic() + EVENT_WAIT_S
    while queued < len(reports):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(reports) - queued} report(s) of job {job_id} did not reach the daemon's inbox "
                               f"in {EVENT_WAIT_S:.0f} s (topic {daemon.config.kafka.events_topic}); check that "
                               "Kafka is healthy")
        queued += daemon.poll_events(timeout_ms=200)


def simulate_through_kafka(
    stream: Stream,
    embeddings: np.ndarray,
    config: SimulationConfig,
    service: ServiceConfig,
    *,
    embedder: Any,
    detector: str = "js",
    theta: float | None = None,
    pool: Pool | None = None,
    on_check: Callable[[], None] | None = None,
) -> SweepRow:
    """One (detector, theta) run through Kafka, the monitor, Redis and the daemon (see the module docstring)."""
    from consumers.monitor import Monitor
    from consumers.replay import replay
    from daemon.scheduler.service import Daemon
    from infra.clients import ensure_topics, redis_client
    from infra.codebook import CodebookStore
    from infra.reference import set_reference

    check_supported(config)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(stream):
        raise ValueError(f"embeddings: got shape {x.shape} for {len(stream)} samples; give one row per sample")
    if len(stream) < config.reference_samples:
        raise ValueError(f"SimulationConfig.reference_samples: got {config.reference_samples} but the stream has "
                         f"{len(stream)} samples; lower it or give a longer stream")
    lang = stream.lang
    settings = config.settings(detector, theta)
    book = fit_codebook(x, config)
    refs = references_for(book, x, lang, pool, config, settings)
    run = f"compass-sim-{uuid.uuid4().hex[:10]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    cfg = _run_config(service, run, tmp / "codebooks")
    languages = LanguagesConfig(languages={lang: settings})
    client = redis_client(cfg.redis)
    monitor: Monitor | None = None
    daemon: Daemon | None = None
    fired: list[int] = []
    detected: list[int] = []
    thresholds: list[dict[str, Any]] = []
    try:
        k = cfg.kafka
        ensure_topics(k, [k.queries_topic, k.jobs_topic, k.events_topic, k.dead_letter_topic])
        published = CodebookStore(cfg.consumer.codebook_dir, client, run).publish(book.clusterer, embedder.model_id,
                                                                                  languages=[lang])
        set_reference(client, lang, codebook_version=published.version, adapter_version="a0", counts=refs.initial(),
                      prefix=run)
        monitor = Monitor(cfg, languages, embedder=embedder, identifier=_GivenLanguage(), poll_timeout_ms=100)
        daemon = Daemon(cfg, languages, owner=f"{run}-daemon", client=client)
        _join_events(daemon)
        spent, n_checks = 0.0, 0
        detection: int | None = None
        learned_for: str | None = None
        for start, t in batches(len(stream), config.increment):
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
            drift = daemon.status(lang).drift
            learned = ready_threshold(drift, settings)
            if learned is not None and drift.ref_id != learned_for:
                thresholds.append({"at": t, **learned})
                learned_for = drift.ref_id
            if result.state == "settling" and detection is None:
                detection = t
            if result.fired and result.job is not None:
                fired.append(t)
                detected.append(t if detection is None else detection)
                detection = None
                adapter = f"a{len(fired)}"
                counts = _update_reference(daemon, refs, lang, x, t, settings.window_size)
                set_reference(client, lang, codebook_version=published.version, adapter_version=adapter,
                              counts=counts, prefix=run)
                _report_promoted(daemon, lang, float(t), result.job.job_id, adapter)
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
    extra = {} if detector == "js" else {"guard_theta": settings.theta}
    return make_row(detector, settings.theta if detector == "js" else None, fired, stream.transitions(), len(stream),
                    n_checks=n_checks, check_s=spent / max(1, n_checks), detected_at=detected, thresholds=thresholds,
                    extra=extra)


def _update_reference(daemon: Any, refs: Any, lang: str, x: np.ndarray, t: int, window: int) -> np.ndarray:
    """The eq. 3 counts of the update the daemon just dispatched at ``t``: its frozen window is samples
    [t - window, t), which must be what the daemon counted (else the replay and the daemon disagree)."""
    lo = max(0, t - window)
    snap = daemon.windows.snapshot(lang)
    ours = refs.book.counts(refs.book.assign(x[lo:t]))
    if len(snap.counts) != len(ours) or not np.array_equal(np.asarray(snap.counts, dtype=np.float64), ours):
        raise RuntimeError(f"the daemon's window at sample {t} has counts {list(snap.counts)} but samples [{lo}, {t}) "
                           f"have {ours.astype(int).tolist()}: the window is not the last {window} samples")
    return refs.after_update(x[lo:t])


def sweep_through_kafka(
    stream: Stream,
    embeddings: np.ndarray,
    config: SimulationConfig,
    service: ServiceConfig,
    *,
    embedder: Any,
    pool: Pool | None = None,
    on_check: Callable[[], None] | None = None,
) -> list[SweepRow]:
    """``simulate_through_kafka`` for every (detector, theta) of ``config.runs()`` (a fresh run each), and the
    rows that need no run, in the in-process order."""
    check_supported(config)
    replayed = {(d, theta): simulate_through_kafka(stream, embeddings, config, service, embedder=embedder,
                                                   detector=d, theta=theta, pool=pool, on_check=on_check)
                for d, theta in config.runs()}
    rows = assemble(config, replayed, stream.transitions(), len(stream))
    clock = Clock.unsampled(len(stream), stream.transitions(), config.arrival_rate)
    return [timed(row, clock, stream.transitions()) for row in rows]
