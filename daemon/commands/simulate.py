"""``compass simulate``: replay a labelled multi-period stream through the monitor and trigger, print Table 11.

The replay runs in process (``compass.drift.simulate``): embed the stream's texts (cached on disk), fit the
k-means codebook once, feed the stream in ``--increment`` batches and run one trigger check per batch, once per
theta of ``--thetas``. The stream is a JSONL of {text, lang, topic, period} (``--stream``) or is built from
chatterbot-corpus categories in the five periods of App. D.2 (``--lang``; see ``CHATTERBOT_PERIODS``).

``--through-kafka`` drives the production pieces instead (``daemon/simulate_kafka.py``): per theta, the stream
is produced to Kafka in ``--increment`` batches, the monitor consumer fills the window in Redis and the daemon
checks it (a fired check is answered by a simulated worker: new P_ref, ``update_finished``). It uses the Kafka
and Redis of ``--config`` (every run under its own topics and key prefix, removed afterwards); with ``--stack``
it starts a temporary local stack on free 127.0.0.1 ports in a temporary state directory and stops it at the
end. It needs ``--eta 0`` and ``--update-lag 0``; ms/check is then the daemon's check alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _embedder(config: Path | None) -> Any:
    """The configured embedder (a seam: tests replace it with a fake)."""
    from compass.config import load_service_config
    from compass.embed import make_embedder

    return make_embedder(load_service_config(config).embedder)


@contextmanager
def _services(config: Path | None, stack: bool, console: Console) -> Iterator[Any]:
    """The service config whose Kafka and Redis the through-Kafka run uses: a temporary stack's with ``stack``."""
    import tempfile

    from compass.config import load_service_config

    base = load_service_config(config)
    if not stack:
        _check_reachable(base)
        yield base
        return
    from deploy.local.process import free_ports
    from deploy.local.stack import Stack

    kafka_port, controller_port, redis_port = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="compass-sim-stack-") as state:
        cfg = base.model_copy(update={
            "state_dir": Path(state),
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": (f"127.0.0.1:{kafka_port}",)}),
            "redis": base.redis.model_copy(update={"host": "127.0.0.1", "port": redis_port}),
            "stack": base.stack.model_copy(update={"kafka_controller_port": controller_port}),
        })
        temporary = Stack(cfg, progress=console.status)
        try:
            temporary.up()
            yield cfg
        finally:
            temporary.down()


def _check_reachable(cfg: Any) -> None:
    from consumers.clients import kafka_admin, redis_client

    try:
        client = redis_client(cfg.redis)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:
        raise typer.BadParameter(f"Redis at {cfg.redis.address} does not answer ({e}); start it with `compass stack "
                                 "up`, point redis.* of --config at a server, or pass --stack",
                                 param_hint="--through-kafka") from None
    try:
        kafka_admin(cfg.kafka).close()
    except Exception as e:
        servers = ",".join(cfg.kafka.bootstrap_servers)
        raise typer.BadParameter(f"Kafka at {servers} does not answer ({e}); start it with `compass stack up`, "
                                 "point kafka.bootstrap_servers of --config at a broker, or pass --stack",
                                 param_hint="--through-kafka") from None


def _close(embedder: Any) -> None:
    close = getattr(embedder, "close", None)
    if callable(close):
        close()


def _thetas(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; give comma-separated JS thresholds, e.g. 0.05,0.10,0.15") from None


def _table(report: Any) -> Table:
    cfg = report.config
    table = Table(title=f"Table 11 ({report.lang}): {report.n_samples} samples in {len(report.periods)} periods, "
                        f"{cfg['increment']}-sample increments, window {cfg['window_size']}, K={cfg['n_clusters']}")
    for col in ("theta", "updates", "detected", "avg delay (samples)", "false pos", "FP rate (%)", "ms/check"):
        table.add_column(col, justify="right")
    for r in report.rows:
        delay = "-" if r.avg_delay is None else f"{r.avg_delay:,.0f}"
        table.add_row(f"{r.theta:.2f}", str(r.updates), f"{r.detected} of {r.transitions}", delay,
                      str(r.false_positives), f"{r.fp_rate:.1f}", f"{r.check_ms:.2f}")
    return table


def simulate(
    stream: Path | None = typer.Option(None, "--stream", help="JSONL of {text, lang, topic, period}, in arrival order"),
    lang: str | None = typer.Option(None, "--lang", help="language(s), comma-separated: built from chatterbot-corpus "
                                    "without --stream (default it); with it, which of the stream's languages to run"),
    thetas: str = typer.Option("0.05,0.10,0.15,0.20,0.25,0.30", "--thetas", help="JS thresholds to sweep"),
    increment: int = typer.Option(100, min=1, help="samples per batch; one trigger check after each"),
    window_size: int = typer.Option(500, min=1, help="W_recent: P_mon is over the last this many samples"),
    min_samples: int | None = typer.Option(None, min=1, help="samples the window needs to fire (default: window)"),
    reference_samples: int | None = typer.Option(None, min=1, help="initial training data: the first this many "
                                                                   "samples form P_ref (default: window)"),
    cooldown: int | None = typer.Option(None, min=0, help="cooldown after an update, in samples (default: window)"),
    rearm_ratio: float = typer.Option(0.8, help="hysteresis: re-arm once JS < rearm_ratio * theta"),
    n_clusters: int = typer.Option(20, min=1, help="k-means clusters of the codebook"),
    fit_on: str = typer.Option("pool", help="fit the codebook on the stream's unique texts (pool) or on the "
                                            "reference part (reference)"),
    eta: float = typer.Option(0.0, help="eq. 2 learning rate at each simulated update (0: fixed codebook)"),
    update_lag: int = typer.Option(
        0, min=0, help="samples between a trigger and the update taking its window (languages.yaml settle_s)"
    ),
    period_samples: int = typer.Option(2000, min=1, help="samples per period of a chatterbot-built stream"),
    seed: int = typer.Option(0, help="seed of the built stream and of k-means"),
    save_stream: Path | None = typer.Option(None, "--save-stream", help="also write the built stream as JSONL"),
    as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON instead of tables"),
    config: Path | None = typer.Option(None, "--config", "-c", help="service config YAML (embedder; Kafka and "
                                       "Redis with --through-kafka)"),
    through_kafka: bool = typer.Option(False, "--through-kafka", help="drive the real monitor consumer, Redis and "
                                       "daemon instead of the in-process replay (the servers of --config)"),
    stack: bool = typer.Option(False, "--stack", help="with --through-kafka: start a temporary local stack on free "
                               "ports for the run and stop it afterwards"),
) -> None:
    """Replay a T1-T5 stream through the drift monitor and trigger and print Table 11 for a theta sweep."""
    import numpy as np

    from compass.drift.simulate import SimulationConfig, SimulationReport, build_chatterbot_stream, read_stream
    from compass.drift.simulate import simulate as run_simulation

    sim = SimulationConfig(
        thetas=_thetas(thetas), increment=increment, window_size=window_size,
        min_samples=window_size if min_samples is None else min_samples,
        reference_samples=window_size if reference_samples is None else reference_samples,
        cooldown_samples=window_size if cooldown is None else cooldown, rearm_ratio=rearm_ratio,
        n_clusters=n_clusters, fit_on=fit_on, eta=eta, update_lag=update_lag, seed=seed,  # type: ignore[arg-type]
    )
    console = Console(stderr=as_json, soft_wrap=True)
    if stack and not through_kafka:
        raise typer.BadParameter("--stack starts servers for --through-kafka only; add --through-kafka",
                                 param_hint="--stack")
    if through_kafka:
        from daemon.simulate_kafka import SimulationSetupError, check_supported

        try:
            check_supported(sim)
        except SimulationSetupError as e:
            raise typer.BadParameter(str(e), param_hint="--through-kafka") from None
    wanted = [x.strip() for x in (lang or ("" if stream else "it")).split(",") if x.strip()]
    if stream is not None:
        streams = read_stream(stream)
        if wanted:
            from compass import langcodes

            codes = [langcodes.normalize(x) for x in wanted]
            missing = [c for c in codes if c not in streams]
            if missing:
                raise typer.BadParameter(f"{stream} has no lines in {missing}; it has {sorted(streams)}",
                                         param_hint="--lang")
            streams = {c: streams[c] for c in codes}
    else:
        streams = {}
        for code in wanted:
            s = build_chatterbot_stream(code, seed=seed, period_samples=period_samples)
            streams[s.lang] = s
        if save_stream is not None:
            from compass.drift.simulate import write_stream

            for code, s in streams.items():
                target = save_stream if len(streams) == 1 else save_stream.with_name(f"{code}.{save_stream.name}")
                write_stream(target, s)

    embedder = _embedder(config)
    reports = []
    with contextlib.ExitStack() as scope:
        scope.callback(_close, embedder)
        service = scope.enter_context(_services(config, stack, console)) if through_kafka else None
        for code, s in streams.items():
            t0 = time.perf_counter()
            unique = sorted(set(s.texts))  # a replayed stream repeats texts; embed each once
            with console.status(f"{code}: embedding {len(unique)} distinct texts of {len(s)} samples"):
                vectors = embedder.encode(unique)
            row_of = {t: i for i, t in enumerate(unique)}
            x = np.asarray(vectors, dtype=np.float32)[[row_of[t] for t in s.texts]]
            embed_s = time.perf_counter() - t0
            n_checks = len(sim.thetas) * -(-len(s) // sim.increment)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=as_json) as bar:
                task = bar.add_task(f"{code}: checks", total=n_checks)
                advance = functools.partial(bar.advance, task)
                if service is not None:
                    from daemon.simulate_kafka import sweep_through_kafka

                    rows = sweep_through_kafka(s, x, sim, service, embedder=embedder, on_check=advance)
                else:
                    rows = run_simulation(x, s.periods, sim, on_check=advance)
            reports.append(SimulationReport(code, len(s), s.period_lengths(), s.transitions(),
                                            {**{k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in sim.__dict__.items()}, "through_kafka": through_kafka},
                                            rows, embed_s))

    if as_json:
        typer.echo(json.dumps({"languages": [r.to_dict() for r in reports]}, indent=2))
        return
    what = ("the daemon's check: Redis window + P_ref, JS, decide" if through_kafka
            else f"assign {sim.increment} samples + P_mon + JS + decide")
    for r in reports:
        console.print(_table(r))
        for row in r.rows:
            console.print(f"  theta {row.theta:.2f}: updates at samples {list(row.fired_at)}, delay per transition "
                          f"{list(row.delays)}")
        periods = ", ".join(f"{p} {n}" for p, n in r.periods)
        ms = [row.check_ms for row in r.rows]
        console.print(f"{r.lang}: periods {periods}; transitions at samples {r.transitions}; embedding "
                      f"{r.embed_s:.1f} s; time per check {np.mean(ms):.2f} ms (min {min(ms):.2f}, max "
                      f"{max(ms):.2f}; {what})")
