"""The main job's loop, in one process: bootstrap adapters, then consumers, daemon, worker and the status page run
side by side (threads) while a real query stream with a topic shift is replayed through Kafka.

Steps (each timed for the summary by ``PhaseTimer``), one module each:

  1. stack      the local stack (Kafka + Redis on 127.0.0.1), when ``stack_up`` is given
  2. data       the scenario, the demo's configs, an empty namespace, the topics (demo/prepare.py)
  3. codebook   embed and fit k-means, or the cached codebook (demo/bootstrap.py)
  4. bootstrap  initial COMPASS adaptation per language (§3.2.4), cached in ``<state_dir>/demo`` so later runs
                reuse it (demo/bootstrap.py)
  5-7. stream   start the components; phase 1 (steady streaming); phase 2 (the shift: JS rises past theta, the
                daemon triggers, the worker reselects and runs the ECDA update, the gate decides) (demo/stream.py)
  8. report     everything the run saw lands in a run directory that ``compass report`` renders (demo/record.py)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.demo.bootstrap import BootstrapCache, bootstrap_adapters, fit_codebook, scenario_key
from daemon.demo.prepare import prepare
from daemon.demo.record import record_run
from daemon.demo.settings import DemoResult, DemoSettings, Say
from daemon.demo.stream import stream
from daemon.demo.timing import PhaseTimer
from infra.settings import ServiceConfig


def run_demo(base: ServiceConfig, settings: DemoSettings, say: Say, *, stack_up: Callable[[], None] | None = None,
             progress: Any = None) -> DemoResult:
    """The whole main job; ``say`` prints a line (rich markup), ``stack_up()`` starts the local stack first,
    ``progress`` receives the bootstrap's training events."""
    from infra.embedders import make_embedder

    timer = PhaseTimer()
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    root = Path(base.state_dir).resolve() / "demo"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    if stack_up is not None:
        say("[bold]1. local stack[/] (Kafka + Redis on 127.0.0.1)")
        stack_up()
    timer.lap("stack_s")

    p = prepare(base, settings, root, run_id, say)
    timer.lap("data_s")

    embedder = make_embedder(p.cfg.embedder)
    cache = BootstrapCache.load(root, scenario_key(p.scenario, settings, f"{p.model_dir}/{p.gguf or ''}"))
    codebook = fit_codebook(p, settings, embedder, cache, say)
    timer.lap("codebook_s")

    boot = bootstrap_adapters(p, settings, root, codebook, cache, say, progress)
    timer.lap("bootstrap_s")

    events, since = stream(p, settings, boot, run_id, say, timer)
    return record_run(p, settings, boot, events.events, since, run_dir, run_id, timer, say)
