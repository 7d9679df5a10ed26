"""``compass simulate``: replay a labelled multi-period stream through the drift lifecycle, print Table 11.

The replay runs in process (``compass.drift.simulate``): embed the stream's texts (cached on disk), fit the
k-means codebook once, feed the stream in ``--increment`` batches and run one ``lifecycle.step`` per batch,
once per (detector, theta): ``js`` for every theta of ``--thetas``, ``calibrated``, ``sequential``, plus the
``fixed-interval`` oracle (the paper's "Fixed" row) and ``never`` (the static adapter). An update installs the
eq. 3 reference (usage window + COMPASS's selection from the pool; ``--reference window``: the window alone).
The stream is a JSONL of {text, lang, topic, period} (``--stream``) or is built from chatterbot-corpus categories
in the five periods of App. D.2 (``--lang``; ``--stable``: the no-change control). The pool is ``--pool`` (a JSONL
of {text, lang}) or the stream's distinct texts.

``--recluster auto`` acts on stale clusters (§6.1) as the worker does with ``daemon.recluster: auto``: past
``--stale-far-share`` of recent points beyond the codebook's calibrated distance, the codebook is re-fitted on the
window plus the pool, the last cycle's P_ref recomputed on it and the window restarted (at most one per
``--recluster-min-interval`` samples); the table counts them (``reclusterings``). ``--codebook-fit reference``
(alias ``--fit-on``) fits the first codebook on the reference period only, as a production codebook is.

``--languages FILE`` replays each language with its settings in that languages.yaml (as the daemon reads them;
seconds are read as samples; its ``sampling`` applied), instead of the flags that set them here.

Sampling (issue 20): the language's queries arrive at ``--arrival-rate`` a second (default 10) and are sampled as
the consumers sample them, by a hash of each query's event id (``sim:{lang}:{i}``): a fixed ``--sampling-rate``
or a cap ``--max-per-second`` (the rate of each ``--sampling-bucket-s`` bucket from the traffic of the 10 s before it).
The lifecycle sees the kept queries: samples are kept queries, and every delay, update and false-alarm spacing is
also given in seconds (the offered queries from the change through the detecting one, / the arrival rate).

``--through-kafka`` drives the production pieces instead (``daemon/demo/simulate_kafka.py``): per run, the stream is
produced to Kafka in ``--increment`` batches, the monitor consumer fills the window in Redis and the daemon
checks it (an update is answered by a simulated worker: the eq. 3 P_ref, update_started / adapter_promoted /
update_finished). It uses the Kafka and Redis of ``--config`` (every run under its own topics and key prefix,
removed afterwards); with ``--stack`` it starts a temporary local stack on free 127.0.0.1 ports in a temporary
state directory and stops it at the end. It needs ``--eta 0``; ms/check is then the daemon's check alone.
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

# flags a --languages file sets instead (the daemon's settings of each language)
_FROM_LANGUAGES = {"thetas": "--thetas (theta)", "window_size": "--window-size (window_size)",
                   "min_samples": "--min-samples (min_samples)", "cooldown": "--cooldown (cooldown_s)",
                   "settle": "--settle (settle_s)", "update_lag": "--update-lag (settle_s)",
                   "rearm_ratio": "--rearm-ratio (rearm_ratio)", "budget": "--budget (budget)",
                   "false_alarm_every": "--false-alarm-every (false_alarm_every)", "burn_in": "--burn-in (burn_in)",
                   "guard_theta": "--guard-theta (theta)", "sampling_rate": "--sampling-rate (sampling.rate)",
                   "max_per_second": "--max-per-second (sampling.max_per_second)"}


def _embedder(config: Path | None) -> Any:
    """The configured embedder (a seam: tests replace it with a fake)."""
    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    return make_embedder(load_service_config(config).embedder)


@contextmanager
def _services(config: Path | None, stack: bool, console: Console) -> Iterator[Any]:
    """The service config whose Kafka and Redis the through-Kafka run uses: a temporary stack's with ``stack``."""
    import tempfile

    from infra.settings import load_service_config

    base = load_service_config(config)
    if not stack:
        _check_reachable(base)
        yield base
        return
    from deploy.local.stack import Stack

    with tempfile.TemporaryDirectory(prefix="compass-sim-stack-") as state:
        temporary = Stack.on_free_ports(base, Path(state), progress=console.status)
        try:
            temporary.up()
            yield temporary.config
        finally:
            temporary.down()


def _check_reachable(cfg: Any) -> None:
    from infra.clients import kafka_admin, redis_client

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


def _floats(value: str, flag: str, what: str) -> tuple[Any, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; give comma-separated {what}", param_hint=flag) from None


def _names(value: str) -> tuple[str, ...]:
    from compass.drift.simulate import DETECTORS

    names = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [n for n in names if n not in DETECTORS]
    if bad or not names:
        raise typer.BadParameter(f"got {value!r}; give comma-separated names among {','.join(DETECTORS)}",
                                 param_hint="--detectors")
    return names


def _configs(codes: list[str], languages: Path | None, common: dict[str, Any], flags: dict[str, Any],
             detectors: tuple[str, ...]) -> dict[str, Any]:
    """One SimulationConfig per language: from the flags, or from each language's settings in ``languages``."""
    from compass.drift.simulate import BASELINES, SimulationConfig, detector_label

    def build(make: Any) -> Any:
        try:
            return make()
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

    if languages is None:
        sim = build(lambda: SimulationConfig(**common, **{k: v for k, v in flags.items() if v is not None},
                                             detectors=detectors))
        return dict.fromkeys(codes, sim)
    given = [_FROM_LANGUAGES[k] for k, v in flags.items() if v is not None]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} come(s) from the languages file; drop the flag(s) or edit "
                                 f"{languages}", param_hint="--languages")
    from compass.errors import ConfigError
    from compass.languages import load_languages

    try:
        cfg = load_languages(languages)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--languages") from None
    extra = tuple(d for d in detectors if d in BASELINES)
    out = {}
    for code in codes:
        settings = cfg.get(code)
        if code not in cfg.languages:
            typer.echo(f"note: {code} is not under languages: in {languages}; replayed with its defaults", err=True)
        elif not settings.enabled:
            typer.echo(f"note: {code} is disabled in {languages}; its lifecycle never checks (no update)", err=True)
        out[code] = build(lambda s=settings: SimulationConfig.from_settings(s, detectors=(detector_label(s), *extra),
                                                                            **common))
    return out


def _streams(stream: Path | None, lang: str | None, stable: bool, period_samples: int, seed: int,
             save_stream: Path | None) -> dict[str, Any]:
    from compass.drift.simulate import build_chatterbot_stream, read_stream, write_stream

    wanted = [x.strip() for x in (lang or ("" if stream else "it")).split(",") if x.strip()]
    if stream is not None:
        if stable:
            raise typer.BadParameter("--stable builds a no-change stream from chatterbot-corpus; drop --stream",
                                     param_hint="--stable")
        streams = read_stream(stream)
        if wanted:
            from compass import langcodes

            codes = [langcodes.normalize(x) for x in wanted]
            missing = [c for c in codes if c not in streams]
            if missing:
                raise typer.BadParameter(f"{stream} has no lines in {missing}; it has {sorted(streams)}",
                                         param_hint="--lang")
            streams = {c: streams[c] for c in codes}
        return streams
    streams = {}
    for code in wanted:
        s = build_chatterbot_stream(code, seed=seed, period_samples=period_samples, stable=stable)
        streams[s.lang] = s
    if save_stream is not None:
        for code, s in streams.items():
            target = save_stream if len(streams) == 1 else save_stream.with_name(f"{code}.{save_stream.name}")
            write_stream(target, s)
    return streams


def _embed(embedder: Any, texts: list[str]) -> Any:
    """Rows for ``texts``, each distinct text embedded once (a replayed stream repeats texts)."""
    import numpy as np

    unique = sorted(set(texts))
    vectors = np.asarray(embedder.encode(unique), dtype=np.float32) if unique else np.zeros((0, 0), np.float32)
    row_of = {t: i for i, t in enumerate(unique)}
    return vectors[[row_of[t] for t in texts]] if texts else vectors


def simulate(
    stream: Path | None = typer.Option(None, "--stream", help="JSONL of {text, lang, topic, period}, in arrival order"),
    lang: str | None = typer.Option(None, "--lang", help="language(s), comma-separated: built from chatterbot-corpus "
                                    "without --stream (default it); with it, which of the stream's languages to run"),
    stable: bool = typer.Option(False, "--stable", help="build the no-change control: every period from T1's "
                                "categories, one period label (each update is a false positive)"),
    pool: Path | None = typer.Option(None, "--pool", help="JSONL of {text, lang}: the auxiliary pool eq. 3's "
                                     "selection draws from (default: the stream's distinct texts)"),
    languages: Path | None = typer.Option(None, "--languages", help="languages.yaml: replay each language with its "
                                          "settings there (detector, threshold, theta, window_size, min_samples, "
                                          "cooldown_s, settle_s, budget, ...); seconds are read as samples"),
    thetas: str | None = typer.Option(None, "--thetas", help="fixed JS thresholds of the js rows"
                                      " (default: 0.05,0.10,0.15,0.20,0.25,0.30)"),
    detectors: str = typer.Option("js,calibrated,sequential,fixed-interval,never", "--detectors",
                                  help="rows to produce; with --languages the language's own detector is replayed "
                                  "and only fixed-interval / never are taken from here"),
    false_alarm_every: float | None = typer.Option(None, "--false-alarm-every", help="calibrated / sequential: "
                                                   "expected samples between false alarms (default: 50000)"),
    burn_in: int | None = typer.Option(None, "--burn-in", min=1, help="calibrated / sequential: samples observed "
                                       "after each new reference before they take over (default: window)"),
    guard_theta: float | None = typer.Option(None, "--guard-theta", help="calibrated / sequential: the fixed theta "
                                             "guarding their burn-in (default: 0.15)"),
    reference: str = typer.Option("eq3", "--reference", help="P_ref after an update: eq3 (window + COMPASS "
                                  "selection from the pool) or window (the window's mix)"),
    budget: float | None = typer.Option(None, "--budget", help="B of eq. 3's selection (default: 0.8)"),
    increment: int = typer.Option(100, min=1, help="samples per batch; one lifecycle check after each"),
    window_size: int | None = typer.Option(None, "--window-size", min=1, help="W_recent: P_mon is over the last "
                                           "this many samples (default: 500)"),
    min_samples: int | None = typer.Option(None, "--min-samples", min=1, help="samples the window needs to fire "
                                           "(default: window)"),
    reference_samples: int | None = typer.Option(None, "--reference-samples", min=1, help="initial training data: "
                                                 "the first this many samples (D_t; default: window)"),
    cooldown: float | None = typer.Option(None, "--cooldown", min=0, help="cooldown after an update, in samples "
                                          "(default: window)"),
    settle: float | None = typer.Option(None, "--settle", min=0, help="samples between a detection and the update "
                                        "freezing the window (languages.yaml settle_s) (default: 0)"),
    update_lag: float | None = typer.Option(None, "--update-lag", min=0, hidden=True, help="deprecated: --settle"),
    rearm_ratio: float | None = typer.Option(None, "--rearm-ratio", help="hysteresis: re-arm once JS < "
                                             "rearm_ratio * theta (default: 0.8)"),
    n_clusters: int = typer.Option(20, min=1, help="k-means clusters of the codebook"),
    fit_on: str = typer.Option("pool", "--fit-on", "--codebook-fit", help="fit the codebook on the stream's unique "
                               "texts (pool) or on the reference part (reference)"),
    recluster: str = typer.Option("off", "--recluster", help="auto: re-fit the codebook when the far share says the "
                                  "clusters are stale (the worker's daemon.recluster: auto); off: never"),
    recluster_min_interval: float = typer.Option(1000, "--recluster-min-interval", min=0, help="samples between two "
                                                 "re-clusterings (--recluster auto)"),
    stale_far_share: float = typer.Option(0.3, "--stale-far-share", help="re-cluster when more than this share of "
                                          "recent points is far from every centroid (--recluster auto)"),
    eta: float = typer.Option(0.0, help="eq. 2 learning rate at each simulated update (0: fixed codebook)"),
    period_samples: int = typer.Option(2000, min=1, help="samples per period of a chatterbot-built stream"),
    seed: int = typer.Option(0, help="seed of the built stream, k-means and the selection"),
    arrival_rate: float = typer.Option(10.0, "--arrival-rate", help="the language's offered queries a second: "
                                       "the clock of every time in seconds (default: 10)"),
    sampling_rate: float | None = typer.Option(None, "--sampling-rate", help="keep this share of the queries, "
                                               "in (0, 1], decided by a hash of each query's id as the consumers "
                                               "do (languages.yaml sampling.rate; default: 1, every query)"),
    max_per_second: float | None = typer.Option(None, "--max-per-second", help="or keep at most this many "
                                                "queries a second: each bucket's rate comes from the traffic of "
                                                "the 10 s before it (sampling.max_per_second)"),
    sampling_bucket_s: float = typer.Option(1.0, "--sampling-bucket-s", help="seconds per bucket of "
                                            "--max-per-second's rate (consumer.sampling_bucket_s; default: 1)"),
    save_stream: Path | None = typer.Option(None, "--save-stream", help="also write the built stream as JSONL"),
    as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON instead of tables"),
    config: Path | None = typer.Option(None, "--config", "-c", help="service config YAML (embedder; Kafka and "
                                       "Redis with --through-kafka)"),
    through_kafka: bool = typer.Option(False, "--through-kafka", help="drive the real monitor consumer, Redis and "
                                       "daemon instead of the in-process replay (the servers of --config)"),
    stack: bool = typer.Option(False, "--stack", help="with --through-kafka: start a temporary local stack on free "
                               "ports for the run and stop it afterwards"),
) -> None:
    """Replay T1-T5 streams through the drift lifecycle; print Table 11, one row per (detector, theta).

    Times are samples: cooldown_s, settle_s and backoff_max_s (flags or a --languages file) are read as samples.
    Delays, updates and false-alarm spacing are also given in seconds at --arrival-rate."""
    import numpy as np

    from compass.drift.simulate import Pool, SimulationReport, Stream, read_pool, sample
    from compass.drift.simulate import simulate as run_simulation

    _check_sampling(arrival_rate, sampling_rate, max_per_second, sampling_bucket_s)

    if recluster not in ("off", "auto"):
        raise typer.BadParameter(f"got {recluster!r}; use off or auto", param_hint="--recluster")
    if fit_on not in ("pool", "reference"):
        raise typer.BadParameter(f"got {fit_on!r}; use pool or reference", param_hint="--codebook-fit")
    if through_kafka and recluster != "off":
        raise typer.BadParameter("--recluster auto is modelled in process only; drop --through-kafka or use "
                                 "--recluster off", param_hint="--recluster")
    if reference not in ("eq3", "window"):
        raise typer.BadParameter(f"got {reference!r}; use eq3 or window", param_hint="--reference")
    if stack and not through_kafka:
        raise typer.BadParameter("--stack starts servers for --through-kafka only; add --through-kafka",
                                 param_hint="--stack")
    if settle is not None and update_lag is not None:
        raise typer.BadParameter("--update-lag is the old name of --settle; give one", param_hint="--update-lag")
    if through_kafka and (sampling_rate not in (None, 1.0) or max_per_second is not None):
        given = f"--sampling-rate {sampling_rate}" if max_per_second is None else f"--max-per-second {max_per_second}"
        raise typer.BadParameter(f"{given}: --through-kafka replays every query (sampling is modelled in process "
                                 "only); drop the flag or --through-kafka", param_hint="--through-kafka")
    if through_kafka and eta != 0:
        raise typer.BadParameter(f"--eta {eta}: --through-kafka keeps the codebook fixed; use --eta 0 (or run in "
                                 "process)", param_hint="--through-kafka")
    streams = _streams(stream, lang, stable, period_samples, seed, save_stream)
    pool_rows = None
    if pool is not None:
        from compass.errors import DataError

        try:
            pool_rows = read_pool(pool)
        except DataError as e:
            raise typer.BadParameter(str(e), param_hint="--pool") from None
    flags = {"thetas": None if thetas is None else _floats(thetas, "--thetas", "JS thresholds, e.g. 0.05,0.10,0.15"),
             "window_size": window_size, "min_samples": min_samples, "cooldown": cooldown, "settle": settle,
             "update_lag": update_lag, "rearm_ratio": rearm_ratio, "budget": budget,
             "false_alarm_every": false_alarm_every, "burn_in": burn_in, "guard_theta": guard_theta,
             "sampling_rate": sampling_rate, "max_per_second": max_per_second}
    common = {"increment": increment, "n_clusters": n_clusters, "fit_on": fit_on, "eta": eta, "seed": seed,
              "reference": reference, "recluster": recluster, "recluster_min_interval": recluster_min_interval,
              "stale_far_share": stale_far_share, "arrival_rate": arrival_rate,
              "sampling_bucket_s": sampling_bucket_s}
    if languages is None:
        window = window_size or 500
        common["reference_samples"] = reference_samples or window
        renamed = {"cooldown": "cooldown_samples", "settle": "settle_samples", "update_lag": "settle_samples"}
        flags = {renamed.get(k, k): v for k, v in flags.items() if v is not None}
        flags.setdefault("window_size", window)
        flags.setdefault("min_samples", window)
        flags.setdefault("cooldown_samples", window)
        configs = _configs(list(streams), None, common, flags, _names(detectors))
    else:
        if reference_samples is not None:
            common["reference_samples"] = reference_samples
        configs = _configs(list(streams), languages, common, flags, _names(detectors))

    sampled_langs = [code for code, c in configs.items() if c.sampling.sampled]
    if through_kafka and sampled_langs:
        raise typer.BadParameter(f"{languages} samples {', '.join(sampled_langs)} (sampling:): --through-kafka "
                                 "replays every query; replay in process or drop their sampling",
                                 param_hint="--through-kafka")
    console = Console(stderr=as_json, soft_wrap=True)
    if not console.is_terminal:  # a pipe or a log: room for the table's eleven columns
        console = Console(stderr=as_json, soft_wrap=True, width=160)
    embedder = _embedder(config)
    reports = []
    with contextlib.ExitStack() as scope:
        scope.callback(embedder.close)
        service = scope.enter_context(_services(config, stack, console)) if through_kafka else None
        aux = None
        if pool_rows is not None:
            with console.status(f"pool: embedding {len(pool_rows)} texts"):
                aux = Pool(_embed(embedder, [t for t, _ in pool_rows]), tuple(code for _, code in pool_rows))
        for code, s in streams.items():
            sim = configs[code]
            try:
                sampled = sample(s.periods, sim, code)
            except ValueError as e:
                raise typer.BadParameter(str(e)) from None
            if len(sampled.kept) < sim.reference_samples:
                raise typer.BadParameter(f"{code}: sampling keeps {len(sampled.kept)} of {len(s)} samples, fewer than "
                                         f"--reference-samples {sim.reference_samples}; raise --sampling-rate or "
                                         "--max-per-second, or give a longer stream (--period-samples)")
            t0 = time.perf_counter()
            with console.status(f"{code}: embedding {len(set(s.texts))} distinct texts of {len(s)} samples"):
                x = _embed(embedder, list(s.texts))
            embed_s = time.perf_counter() - t0
            n_checks = len(sim.runs()) * -(-len(sampled.kept) // sim.increment)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=as_json) as bar:
                task = bar.add_task(f"{code}: checks", total=n_checks)
                advance = functools.partial(bar.advance, task)
                if service is not None:
                    from daemon.demo.simulate_kafka import sweep_through_kafka

                    rows_out = sweep_through_kafka(s, x, sim, service, embedder=embedder, pool=aux, on_check=advance)
                else:
                    rows_out = run_simulation(x, s.periods, sim, advance, pool=aux, lang=code)
            kept = Stream(code, tuple(s.texts[int(i)] for i in sampled.kept), sampled.periods)
            reports.append(SimulationReport(code, len(kept), kept.period_lengths(), sampled.transitions,
                                            {**sim.to_dict(), "through_kafka": through_kafka, "stable": stable,
                                             "pool": str(pool) if pool else "stream",
                                             "languages": str(languages) if languages else None},
                                            rows_out, embed_s, sampled.summary()))
    if as_json:
        typer.echo(json.dumps({"languages": [r.to_dict() for r in reports]}, indent=2))
        return
    what = ("the daemon's check: Redis window + P_ref, the lifecycle step" if through_kafka
            else "assign the batch + P_mon + the lifecycle step")
    for r in reports:
        console.print(_table(r))
        for row in r.rows:
            if row.detector in ("js", "calibrated", "sequential"):
                settled = "" if row.detected_at == row.fired_at else f" (detected at {list(row.detected_at)})"
                reclustered = f", re-clustered at {list(row.reclustered_at)}" if row.reclusterings else ""
                x = row.extra
                spacing = ("" if x["false_alarm_spacing"] is None else f", a false alarm every "
                           f"{x['false_alarm_spacing']:,.0f} samples = {x['false_alarm_spacing_s']:,.1f} s")
                console.print(f"  {_label(row)}: updates at samples {list(row.fired_at)} = {_secs(x['fired_at_s'])} s"
                              f"{settled}, delay per transition {list(row.delays)} samples = "
                              f"{_secs(x['delays_s'])} s{spacing}{reclustered}")
        periods = ", ".join(f"{p} {n}" for p, n in r.periods)
        ms = [row.check_ms for row in r.rows if row.n_checks]
        timing = f"time per check {np.mean(ms):.2f} ms (min {min(ms):.2f}, max {max(ms):.2f}; {what})" if ms else ""
        console.print(f"{r.lang}: periods {periods}; transitions at samples {r.transitions} = "
                      f"{_secs(r.sampling['transitions_s'])} s; embedding {r.embed_s:.1f} s; {timing}")
        console.print(f"{r.lang}: {_sampling_line(r.config, r.sampling)}")


def _check_sampling(arrival_rate: float, rate: float | None, cap: float | None, bucket_s: float) -> None:
    """The sampling flags' errors, naming the flag, the value and the fix."""
    import math

    if not math.isfinite(arrival_rate) or arrival_rate <= 0:
        raise typer.BadParameter(f"got {arrival_rate}; give the language's offered queries a second, > 0, e.g. 10",
                                 param_hint="--arrival-rate")
    if rate is not None and not 0.0 < rate <= 1.0:
        raise typer.BadParameter(f"got {rate}; give the share of queries kept, in (0, 1], e.g. 0.25 (1 keeps all)",
                                 param_hint="--sampling-rate")
    if cap is not None and (not math.isfinite(cap) or cap <= 0):
        raise typer.BadParameter(f"got {cap}; give the most queries kept a second, > 0, e.g. 50",
                                 param_hint="--max-per-second")
    if rate is not None and cap is not None:
        raise typer.BadParameter(f"--sampling-rate {rate} and --max-per-second {cap}: give one, a fixed share or a "
                                 "cap that adapts to the traffic (as languages.yaml's sampling does)",
                                 param_hint="--max-per-second")
    if not math.isfinite(bucket_s) or bucket_s <= 0:
        raise typer.BadParameter(f"got {bucket_s}; give the seconds per bucket of the cap's rate, > 0, e.g. 1",
                                 param_hint="--sampling-bucket-s")


def _secs(values: Any) -> str:
    """Seconds, short: [20.1, None] -> '[20.1, -]'."""
    return "[" + ", ".join("-" if v is None else f"{v:,.1f}" for v in values) + "]"


def _sampling_line(cfg: dict[str, Any], summary: dict[str, Any]) -> str:
    if cfg["max_per_second"] is not None:
        how = f"cap {cfg['max_per_second']:g}/s (rate per {cfg['sampling_bucket_s']:g} s bucket)"
    else:
        how = f"rate {cfg['sampling_rate']:g}"
    return (f"sampling {how} of {cfg['arrival_rate']:g} queries/s: kept {summary['kept']} of {summary['offered']} "
            f"offered ({summary['kept_per_s']:.3g}/s), {summary['duration_s']:,.1f} s of traffic; samples are kept "
            "queries")


def _label(row: Any) -> str:
    return f"{row.detector} {row.theta:.2f}" if row.theta is not None else row.detector


def _threshold(row: Any) -> str:
    """What the row's detector compared with: theta, or the learned thresholds (one per reference)."""
    if row.detector == "js":
        return f"{row.theta:.2f} bits"
    if not row.thresholds:
        return f"guard {row.extra.get('guard_theta', '-')}" if row.detector in ("calibrated", "sequential") else "-"
    values = [t["value"] for t in row.thresholds]
    unit = row.thresholds[0]["unit"]
    span = f"{values[0]:.3f}" if len(set(values)) == 1 else f"{min(values):.3f}-{max(values):.3f}"
    return f"{span} {unit}"


def _table(report: Any) -> Table:
    cfg = report.config
    table = Table(title=f"Table 11 ({report.lang}): {report.n_samples} samples in {len(report.periods)} periods, "
                        f"{cfg['increment']}-sample increments, window {cfg['window_size']}, K={cfg['n_clusters']}, "
                        f"P_ref {cfg['reference']}, codebook fit on {cfg['fit_on']}, recluster {cfg['recluster']}")
    for col in ("detector", "theta", "updates", "detected", "avg delay (samples)", "avg delay (s)", "false pos",
                "FP rate (%)", "FP / 10k", "threshold", "reclusterings", "ms/check"):
        table.add_column(col, justify="left" if col in ("detector", "threshold") else "right")
    for r in report.rows:
        delay = "-" if r.avg_delay is None else f"{r.avg_delay:,.0f}"
        seconds = r.extra.get("avg_delay_s")
        table.add_row(r.detector, "-" if r.theta is None else f"{r.theta:.2f}", str(r.updates),
                      f"{r.detected} of {r.transitions}", delay, "-" if seconds is None else f"{seconds:,.1f}",
                      str(r.false_positives), f"{r.fp_rate:.1f}",
                      f"{r.false_alarms_per_10k:.2f}", _threshold(r), str(r.reclusterings),
                      f"{r.check_ms:.2f}" if r.n_checks else "-")
    return table
