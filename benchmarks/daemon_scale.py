"""CPU share of one drift daemon checking 200 languages every 2 s, before and after batching a round's Redis I/O
(issue 20: "stays under 10% of one core"), its Redis round trips per round, and the status JSON's render time.

    .venv/bin/python benchmarks/daemon_scale.py [--langs 200] [--interval 2] [--seconds 60]
        [--mode both|before|after] [--bootstrap HOST:PORT --redis redis://HOST:PORT/DB]
    .venv/bin/python benchmarks/daemon_scale.py --profile 10 [--redis redis://HOST:PORT/DB] [--profile-out FILE]

Setup: 200 language codes from compass/langcodes.py (its 120 ISO 639-1 codes, then ISO 639-3 codes of the same
table: compass knows fewer than 200 languages), each with a full window of 2000 synthetic cluster ids over 33
buckets and a P_ref near the window's distribution, so that every check goes through the whole JS rule (and the
stale rule's far share, whose recent texts are ids only here, as with consumer.store_texts false: the far share
reads them and finds no text, it never embeds). A feeder in its own process applies new queries at Zipf rates
(50/rank queries/s; the first 20 languages' meta says they were sampled at 10%), so the windows move as in
production: a few busy languages, a long tail.

Each mode runs the real ``Daemon`` with its real schedule (``Daemon.start``, APScheduler, the events poller on
Kafka) in this process and measures process CPU seconds (``time.process_time``: all threads) over wall seconds
after a warm-up: the share of one core. ``before``: one job per language, each reading and writing on its own
(``start(batched=False)``, the far share reading all the newest recent entries on every check: the path before
issue 20). ``after``: one round per interval (``check_round``): the leases, the reads, the far share's new recent
entries, the fenced status writes and the JS history appends each in one pipeline for all languages, the far share
measured incrementally (only the entries added since the last check). Redis round trips are counted by wrapping
redis-py's ``Connection.send_packed_command`` (one per command, one per pipeline). The status JSON
(``GET /v1/status``) is timed after the ``after`` run, with the default 25 cards per page and with all 200 cards
(what the page fetched before issue 20).

``--profile ROUNDS`` (Redis only: ``--redis``, or the temporary stack) runs ``check_round`` directly instead, ROUNDS
rounds unprofiled (their CPU ms per round) then ROUNDS under cProfile, and prints the top entries by own and by
cumulative time (``--profile-out``: the stats file, for ``python -m pstats``).

Without --bootstrap/--redis a temporary stack (deploy.local.stack) is started on free ports in a tmp dir and
stopped at the end; with them, the running servers are used under a unique Redis key prefix deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

K = 33  # buckets: 32 clusters + noise
WINDOW = 2000
GOAL = 0.10  # of one core
SAMPLED = 20  # the busiest languages, whose meta says sampling.rate 0.1


def codes(n: int) -> list[str]:
    """``n`` distinct codes: compass's ISO 639-1 codes, then ISO 639-3 codes of the same table."""
    from compass import langcodes

    out = sorted(langcodes.LANGUAGES)
    out += [c for c in sorted(langcodes._BY_ISO3) if c not in out]
    if len(out) < n:
        raise SystemExit(f"--langs {n}: compass/langcodes.py has {len(out)} distinct codes; ask for at most that")
    return out[:n]


def rates(langs: list[str]) -> dict[str, float]:
    return {lang: 50.0 / (i + 1) for i, lang in enumerate(langs)}  # Zipf: 50, 25, 16.7, ... q/s


# ------------------------------------------------------------------------------------------ feeder process


def _feed(redis_url: str, prefix: str, langs_json: str, seconds: float) -> None:
    """Apply each language's queries at its rate, one batch per second, for ``seconds``."""
    from infra.clients import redis_client
    from infra.settings import load_service_config
    from infra.window import Assignment, WindowStore

    cfg = load_service_config(env={"COMPASS_REDIS_URL": redis_url})
    store = WindowStore(redis_client(cfg.redis), prefix)
    langs = json.loads(langs_json)
    per_s = rates(langs)
    rng = np.random.default_rng(1)
    offset, owed = dict.fromkeys(langs, 10**6), dict.fromkeys(langs, 0.0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        batch = {}
        for lang in langs:
            owed[lang] += per_s[lang]
            n = int(owed[lang])
            owed[lang] -= n
            if n:
                ids = rng.integers(0, K, size=n)
                batch[lang] = (WINDOW, [Assignment(f"f{offset[lang] + i}", int(b), "bench", 0, offset[lang] + i)
                                        for i, b in enumerate(ids)])
                offset[lang] += n
        if batch:
            store.apply_batch(batch, "v1", K)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


# ------------------------------------------------------------------------------------------ parent side


def seed(client, prefix: str, langs: list[str]) -> None:
    """Full windows, a P_ref near each, the sampled languages' meta."""
    from infra.reference import set_reference
    from infra.window import Assignment, WindowStore

    store = WindowStore(client, prefix)
    rng = np.random.default_rng(0)
    for lang in langs:
        p = rng.dirichlet(np.full(K, 5.0))
        ids = rng.choice(K, size=WINDOW, p=p)
        store.apply_batch({lang: (WINDOW, [Assignment(f"s{i}", int(b), "bench", 0, i) for i, b in enumerate(ids)])},
                          "v1", K)
        set_reference(client, lang, probs=p.tolist(), codebook_version="v1", adapter_version="a1", prefix=prefix)
    for lang in langs[:SAMPLED]:
        client.hset(store.keys(lang)["meta"], "sampling_rate", "0.1")


class Calls:
    """Counts redis-py's sends in this process: one per command or pipeline, i.e. round trips."""

    def __init__(self) -> None:
        import redis.connection

        self.n = 0
        cls = redis.connection.Connection
        send = cls.send_packed_command

        def counted(conn, *a, **kw):
            self.n += 1
            return send(conn, *a, **kw)

        cls.send_packed_command = counted


def run_mode(mode: str, cfg, languages, langs: list[str], args, calls: Calls) -> tuple[dict, object]:
    from tqdm import tqdm

    from daemon.scheduler.farshare import RecentFarShare
    from daemon.scheduler.service import Daemon

    d = Daemon(cfg, languages, owner=f"bench-{mode}-{uuid.uuid4().hex[:4]}")
    if mode == "before":  # the far share measured on every check, as before issue 20
        d.far_share = d.reader.far_share = RecentFarShare(cfg, d.windows, d.client, incremental=False)
    d.start(interval_s=args.interval, batched=mode == "after")
    time.sleep(args.warmup)
    checks0 = _checks(d)
    n0, cpu0, t0 = calls.n, time.process_time(), time.perf_counter()
    with tqdm(total=args.seconds, desc=f"{mode:>6}", unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total} s") as bar:
        while (left := args.seconds - (time.perf_counter() - t0)) > 0:
            time.sleep(min(1.0, left))
            bar.n = min(args.seconds, time.perf_counter() - t0)
            bar.refresh()
    cpu, wall, sends = time.process_time() - cpu0, time.perf_counter() - t0, calls.n - n0
    checks = _checks(d) - checks0
    rounds = checks / len(langs)
    states = _states(d)
    d.scheduler.stop() if d.scheduler else None
    d.scheduler = None
    return {"mode": mode, "cpu_s": cpu, "wall_s": wall, "cpu_share": cpu / wall, "checks": checks,
            "rounds": rounds, "expected_rounds": wall / args.interval, "redis_calls": sends,
            "redis_calls_per_round": sends / rounds if rounds else None,
            "cpu_ms_per_round": 1000 * cpu / rounds if rounds else None, "states": states}, d


def _checks(d) -> float:
    return sum(s.value for m in d.metrics.checks.collect() for s in m.samples if s.name.endswith("_total"))


def _states(d) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in d.metrics.checks.collect():
        for s in m.samples:
            if s.name.endswith("_total"):
                out[s.labels["state"]] = out.get(s.labels["state"], 0) + s.value
    return out


def time_status(d, tries: int = 5) -> dict:
    from fastapi.testclient import TestClient

    from daemon.api.app import create_app

    client = TestClient(create_app(d))
    out = {}
    for name, params in (("page_25_cards", {}), ("all_200_cards", {"per_page": 200})):
        secs, size = [], 0
        for _ in range(tries):
            t0 = time.perf_counter()
            r = client.get("/v1/status", params=params)
            secs.append(time.perf_counter() - t0)
            r.raise_for_status()
            size = len(r.content)
        out[name] = {"median_ms": 1000 * statistics.median(secs), "bytes": size,
                     "summary_rows": len(r.json()["summary"]), "cards": len(r.json()["languages"])}
    t0 = time.perf_counter()
    client.get("/").raise_for_status()
    out["page_html_ms"] = 1000 * (time.perf_counter() - t0)
    return out


def profile_rounds(cfg, languages, langs: list[str], args, calls: Calls) -> dict:
    """``--profile``: ``check_round`` alone under cProfile (no schedule, no Kafka: a dispatcher that never sends),
    ``args.profile`` rounds, each after one interval's queries applied in this process (not profiled). Prints the
    top entries by own time and by cumulative time; the CPU ms and Redis round trips per round."""
    import cProfile
    import io
    import pstats

    from daemon.scheduler.dispatch import Dispatcher
    from daemon.scheduler.service import Daemon
    from infra.window import Assignment, WindowStore

    class Unsent:  # every check stays below its threshold: nothing is ever published
        def close(self, timeout: float | None = None) -> None:
            pass

    d = Daemon(cfg, languages, owner=f"bench-profile-{uuid.uuid4().hex[:4]}",
               dispatcher=Dispatcher(cfg.kafka, producer=Unsent()))  # type: ignore[arg-type]
    store, rng, per_s = WindowStore(d.client, d.prefix), np.random.default_rng(2), rates(langs)
    owed, offset = dict.fromkeys(langs, 0.0), dict.fromkeys(langs, 10**7)

    def feed() -> None:
        batch = {}
        for lang in langs:
            owed[lang] += per_s[lang] * args.interval
            n, owed[lang] = int(owed[lang]), owed[lang] - int(owed[lang])
            if n:
                batch[lang] = (WINDOW, [Assignment(f"p{offset[lang] + i}", int(b), "bench", 0, offset[lang] + i)
                                        for i, b in enumerate(rng.integers(0, K, size=n))])
                offset[lang] += n
        store.apply_batch(batch, "v1", K)

    now = time.time()
    d.check_round(langs, now)  # the first round takes the leases and reads whole windows: not the steady state
    prof, cpu, sends, plain = cProfile.Profile(), 0.0, 0, 0.0
    for i in range(2 * args.profile):  # first unprofiled (the CPU time per round), then under cProfile
        feed()
        n0, c0 = calls.n, time.process_time()
        profiled = i >= args.profile
        prof.enable() if profiled else None
        d.check_round(langs, now + (i + 1) * args.interval)
        prof.disable() if profiled else None
        if profiled:
            cpu, sends = cpu + time.process_time() - c0, sends + calls.n - n0
        else:
            plain += time.process_time() - c0
    d.stop()
    d.client.close()
    if args.profile_out:
        prof.dump_stats(str(args.profile_out))
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(25)
        print(out.getvalue())
    res = {"rounds": args.profile, "cpu_ms_per_round": 1000 * plain / args.profile,
           "cpu_ms_per_round_profiled": 1000 * cpu / args.profile,
           "redis_calls_per_round": sends / args.profile}
    print(json.dumps(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", type=int, default=200)
    ap.add_argument("--interval", type=float, default=2.0, help="check interval, seconds")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured wall seconds per mode")
    ap.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring (first checks, leases)")
    ap.add_argument("--mode", choices=("both", "before", "after"), default="both")
    ap.add_argument("--bootstrap", help="a running Kafka, host:port")
    ap.add_argument("--redis", help="a running Redis, redis://host:port/db")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "daemon_scale")
    ap.add_argument("--profile", type=int, default=0, metavar="ROUNDS",
                    help="instead of the modes: cProfile ROUNDS direct check_round calls (Redis only, no schedule)")
    ap.add_argument("--profile-out", type=Path, help="with --profile: write the cProfile stats here")
    ap.add_argument("--_feed", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._feed:
        _feed(args._feed[0], args._feed[1], args._feed[2], float(args._feed[3]))
        return
    logging.basicConfig(level=logging.ERROR)  # the far share's "no recent texts" warnings: 200 of them

    import yaml

    from compass.languages import LanguagesConfig
    from deploy.local.stack import Stack
    from infra.clients import redis_client
    from infra.keys import Keys
    from infra.settings import load_service_config

    tmp = Path(tempfile.mkdtemp(prefix="compass-bench-"))
    stack = None
    if args.redis and (args.bootstrap or args.profile):  # a profile needs no Kafka
        env = {"COMPASS_REDIS_URL": args.redis}
        base = load_service_config(env=env | ({"COMPASS_KAFKA_BOOTSTRAP": args.bootstrap} if args.bootstrap else {}))
    else:
        stack = Stack.on_free_ports(load_service_config(env={}), tmp / "stack")
        print("starting a temporary stack ...", file=sys.stderr)
        stack.up()
        base = stack.config
    prefix = f"compass-bench-{uuid.uuid4().hex[:8]}"
    cfg = base.model_copy(update={
        "redis": base.redis.model_copy(update={"key_prefix": prefix}),
        "adapters": base.adapters.model_copy(update={"registry": str(tmp / "adapters")}),
        "consumer": base.consumer.model_copy(update={"codebook_dir": tmp / "codebooks"}),
        "daemon": base.daemon.model_copy(update={"events_group_id": f"bench-{uuid.uuid4().hex[:8]}"}),
    })
    redis_url = f"redis://{cfg.redis.address}/{cfg.redis.db}"
    langs = codes(args.langs)
    languages = LanguagesConfig.model_validate(yaml.safe_load(yaml.safe_dump(
        {"defaults": {"window_size": WINDOW, "min_samples": 200, "theta": 0.15, "cooldown_s": 3600},
         "languages": {lang: {} for lang in langs}})))
    client = redis_client(cfg.redis)
    modes = ("before", "after") if args.mode == "both" else (args.mode,)
    results, status = [], None
    calls = Calls()
    try:
        seed(client, prefix, langs)
        if args.profile:
            profile_rounds(cfg, languages, langs, args, calls)
            return
        feed_s = len(modes) * (args.seconds + args.warmup + 10) + 30
        feeder = subprocess.Popen([sys.executable, __file__, "--_feed", redis_url, prefix, json.dumps(langs),
                                   str(feed_s)], cwd=REPO)
        try:
            for mode in modes:
                res, d = run_mode(mode, cfg, languages, langs, args, calls)
                results.append(res)
                if mode == "after" or len(modes) == 1:
                    status = time_status(d)
                d.stop()
                d.client.close()
        finally:
            feeder.terminate()
            feeder.wait(10)
    finally:
        keys = list(client.scan_iter(match=Keys(prefix).everything(), count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i:i + 1000])
        client.close()
        if stack is not None:
            stack.down()

    import os
    import platform

    report = {"langs": args.langs, "interval_s": args.interval, "seconds": args.seconds, "goal_cpu_share": GOAL,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "python": platform.python_version(), "results": results, "status_json": status}
    print(f"\n{args.langs} languages every {args.interval:g} s, {args.seconds:g} s measured per mode")
    print(f"{'mode':>7} {'CPU share':>10} {'vs 10% goal':>12} {'rounds':>7} {'CPU ms/round':>13} "
          f"{'Redis calls/round':>18}")
    for r in results:
        print(f"{r['mode']:>7} {100 * r['cpu_share']:>9.1f}% {r['cpu_share'] / GOAL:>11.2f}x {r['rounds']:>7.1f} "
              f"{r['cpu_ms_per_round']:>13.1f} {r['redis_calls_per_round']:>18.0f}")
    if status:
        for name in ("page_25_cards", "all_200_cards"):
            s = status[name]
            print(f"GET /v1/status {name}: {s['median_ms']:.0f} ms median, {s['bytes'] / 1024:.0f} KiB, "
                  f"{s['summary_rows']} summary rows")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"langs{args.langs}_every{args.interval:g}s.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
