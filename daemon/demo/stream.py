"""Steps 5-7 of the demo: start the consumers, the daemon, the worker (and the status page) side by side in
threads, replay phase 1 (the usual topics) through Kafka and wait for every window to fill and be checked, then
phase 2 (the shift) and wait for the update of the shifting language to finish (trigger, reselection, ECDA, gate)
and for a check against its new P_ref."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from daemon.demo.bootstrap import Bootstrapped
from daemon.demo.events import EventLog
from daemon.demo.prepare import Prepared
from daemon.demo.settings import DemoSettings, Say
from daemon.demo.timing import PhaseTimer
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)

Component = tuple[str, Callable[[threading.Event], Any]]  # (thread name, target(stop_event))


def stream(p: Prepared, settings: DemoSettings, boot: Bootstrapped, run_id: str, say: Say,
           timer: PhaseTimer) -> tuple[EventLog, float]:
    """Steps 5-7 (laps ``start_s``, ``phase1_s``, ``update_cycle_s``); the events of the run and when it started
    streaming (unix seconds). Every component is stopped on the way out, also on an error."""
    from consumers.monitor import Monitor
    from consumers.replay import replay, to_event
    from daemon.scheduler.service import Daemon
    from daemon.worker import Worker
    from infra.embedders import make_embedder

    cfg, langs, scenario = p.cfg, p.langs, p.scenario
    say("[bold]5. start[/]: consumers, daemon, worker" + (" and the status page" if settings.http else ""))
    monitor = Monitor(cfg, langs, embedder=make_embedder(cfg.embedder), group_id=f"compass-demo-monitor-{run_id}")
    daemon = Daemon(cfg, langs)
    worker = Worker(cfg, langs, client=p.client, model=boot.model, tokenizer=boot.tokenizer)
    events = EventLog(cfg, say).start()
    since = time.time()
    components: list[Component] = [("consumers", lambda stop: monitor.run(stop)),
                                   ("worker", lambda stop: worker.run(stop))]
    server = _http_server(cfg, daemon, say) if settings.http else None
    if server is not None:
        components.append(("http", lambda stop: _serve_until(server, stop)))
    try:
        with running(components):
            daemon.start(interval_s=settings.check_interval_s)
            timer.lap("start_s")

            say(f"[bold]6. phase 1[/]: {len(scenario.phase1)} queries on the usual topics")
            # the events carry their language, as a model server that knows its users' locale sends it: the demo
            # is about the drift loop, and the short chat lines here are often too short for the full language-ID
            # model's min_confidence (`compass langid-demo` shows identification on its own). They also carry the
            # bot's reviewed answer (meta.response): labelled queries the worker's data plan may select for D_new
            replay(cfg.kafka, [to_event(r, run_id, with_lang=True, with_response=True) for r in scenario.phase1])
            wait_windows(daemon, settings, say, timeout_s=300)
            wait_checked(daemon, settings.languages, time.time(), timeout_s=10 * settings.check_interval_s + 30)
            show_js(daemon, settings.languages, say)
            timer.lap("phase1_s")

            say(f"[bold]7. phase 2[/]: {len(scenario.phase2)} queries; {scenario.shift_language} shifts topics")
            replay(cfg.kafka, [to_event(r, run_id, with_lang=True, with_response=True) for r in scenario.phase2])
            lang = scenario.shift_language
            done = events.wait_for(lambda e: e["type"] == "update_finished" and e["language"] == lang,
                                   settings.update_timeout_s)
            if done is None:
                say(f"[red]no update finished for {lang} within {settings.update_timeout_s:.0f} s[/]")
            else:  # the new P_ref (eq. 3 of this cycle) is in force: JS of the same window against it
                wait_checked(daemon, (lang,), time.time(), timeout_s=5 * settings.check_interval_s + 10)
            show_js(daemon, settings.languages, say)
            timer.lap("update_cycle_s")
    finally:
        daemon.stop()
        events.close()
        with contextlib.suppress(Exception):
            monitor.close()
        with contextlib.suppress(Exception):
            worker.close()
    return events, since


@contextlib.contextmanager
def running(threads: list[Component]) -> Iterator[None]:
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


def wait_windows(daemon: Any, settings: DemoSettings, say: Say, timeout_s: float) -> None:
    """Until every language's window holds min_samples (language ID may route a few queries elsewhere)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sizes = {lang: daemon.windows.snapshot(lang).size for lang in settings.languages}
        if all(n >= settings.min_samples for n in sizes.values()):
            return
        time.sleep(1.0)
    say(f"[yellow]windows after {timeout_s:.0f} s: {sizes}[/]")


def wait_checked(daemon: Any, languages: tuple[str, ...], since: float, timeout_s: float) -> None:
    """Until the daemon has checked every language on a filled window (a JS value) after ``since``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checks = [daemon.status(lang).last_check or {} for lang in languages]
        if all(c.get("at", 0) >= since and c.get("js") is not None for c in checks):
            return
        time.sleep(0.5)


def show_js(daemon: Any, languages: tuple[str, ...], say: Say) -> None:
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
