"""What `compass gateway` adds in front of an OpenAI-compatible server (issue 17): latency per request (p50/p99,
with and without streaming), requests/s under concurrency, and query events/s its producer sends to Kafka.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gateway.py [--n 300] [--concurrency 8] [--seconds 15]
        [--events 50000] [--out benchmarks/results/gateway] [--bootstrap HOST:PORT --redis redis://HOST:PORT/DB]

Setup: the upstream is `compass serve` (a subprocess) over a tiny random llama (tests/tinylm.py: hidden 16, one
layer, word-level tokenizer) with DoRA adapters for Italian and Spanish, so generation is cheap and the gateway's
share is visible; a real model makes the added milliseconds a far smaller share. The gateway is `compass gateway`
(a subprocess) in front of it with the routing table switched to those adapters, producing to a real Kafka. The
client is this process (httpx, one connection per thread). Requests are chat completions (max_tokens 4, greedy)
over real sentences of five languages, ``model: "auto"``.

  latency     ``--n`` requests one at a time, direct and through the gateway interleaved (so drift hits both);
              non-streaming: the whole answer; streaming: the first content chunk and the whole stream. Added =
              gateway - direct, per percentile.
  throughput  ``--concurrency`` threads for ``--seconds`` each way: requests/s (all three processes share the
              machine's cores, as they would on one box).
  events/s    an ``EventSink`` in this process, ``--events`` events offered at once into a buffer that holds them
              all, timed until Kafka acknowledged every one.

Without --bootstrap/--redis a temporary stack (deploy.local.stack) is started on free ports and stopped at the end.
Results: ``--out``/results.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

MAX_TOKENS = 4


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def row(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 0.5), 3), "p99_ms": round(pct(ms, 0.99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout_s} s")


def body(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": stream}


def one(client: Any, base: str, text: str, stream: bool) -> tuple[float, float]:
    """(seconds to the first content, seconds to the end) of one chat completion."""
    t0 = time.perf_counter()
    if not stream:
        r = client.post(f"{base}/v1/chat/completions", json=body(text, False))
        r.raise_for_status()
        r.json()
        t = time.perf_counter() - t0
        return t, t
    first = None
    with client.stream("POST", f"{base}/v1/chat/completions", json=body(text, True)) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return (first if first is not None else end), end


def latency(direct: str, gateway: str, texts: list[str], n: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(timeout=60) as client:
        for stream in (False, True):
            got: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
            for i in range(n + 20):
                for name, base in (("direct", direct), ("gateway", gateway)):
                    t = one(client, base, texts[i % len(texts)], stream)
                    if i >= 20:  # warm-up
                        got[name].append(t)
            key = "stream" if stream else "plain"
            out[key] = {}
            for part, idx in (("first", 0), ("total", 1)) if stream else (("total", 1),):
                d, g = ([t[idx] * 1000 for t in got[k]] for k in ("direct", "gateway"))
                out[key][part] = {"direct": row(d), "gateway": row(g),
                                  "added_p50_ms": round(pct(g, 0.5) - pct(d, 0.5), 3),
                                  "added_p99_ms": round(pct(g, 0.99) - pct(d, 0.99), 3)}
    return out


def throughput(base: str, texts: list[str], concurrency: int, seconds: float, stream: bool) -> float:
    import httpx

    done = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = k
            while time.monotonic() < stop:
                one(client, base, texts[i % len(texts)], stream)
                done[k] += 1
                i += concurrency

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(sum(done) / (time.monotonic() - t0), 1)


def produced(metrics: Any) -> float:
    return metrics.registry.get_sample_value("compass_gateway_events_produced_total") or 0.0


def events_per_s(cfg: Any, n: int) -> dict[str, Any]:
    from consumers.events import QueryEvent
    from daemon.gateway.events import EventSink
    from daemon.gateway.metrics import GatewayMetrics
    from infra.clients import ensure_topics

    topic = f"bench.gateway.{uuid.uuid4().hex[:8]}"
    ensure_topics(cfg.kafka, [topic])
    metrics = GatewayMetrics()
    sink = EventSink(cfg.kafka, topic, n, metrics, linger_ms=20)
    sink.start()
    sink.offer(QueryEvent(id="warm", text="warm-up"))  # connecting is not part of the rate
    while produced(metrics) < 1:
        time.sleep(0.01)
    start_count = produced(metrics)
    route = {"route": {"language": "it", "confidence": 0.99, "served": True, "reason": "served", "model": "it@it-v1",
                       "target": "adapter", "routed": True, "requested": "auto", "routes_version": 1,
                       "endpoint": "chat", "stream": False, "upstream_status": 200}}
    events = [QueryEvent(id=f"gw-{i:08d}", text=f"Mi piacerebbe sapere come funziona il programma numero {i}.",
                         lang="it", ts_ms=1_700_000_000_000 + i, meta=route) for i in range(n)]
    t0 = time.perf_counter()
    offered = sum(sink.offer(e) for e in events)
    offer_s = time.perf_counter() - t0
    while produced(metrics) - start_count < n:
        time.sleep(0.005)
    total_s = time.perf_counter() - t0
    sink.close(5)
    return {"events": n, "offered": offered, "offer_us_per_event": round(offer_s / n * 1e6, 3),
            "produced_per_s": round(n / total_s), "seconds": round(total_s, 3)}


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="sequential requests per variant and way")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15, help="per throughput run")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--bootstrap", help="Kafka host:port (default: a temporary stack)")
    ap.add_argument("--redis", help="redis://host:port/db (with --bootstrap)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gateway")
    args = ap.parse_args()

    import httpx
    import yaml
    from test_route import SENTENCES
    from test_serving import register
    from tinylm import make_tiny_lm

    from compass.registry import AdapterRegistry
    from deploy.local.stack import Stack
    from infra.clients import ensure_topics, redis_client
    from infra.routes import RoutingTable
    from infra.settings import load_service_config

    texts = list(SENTENCES.values())
    procs: list[subprocess.Popen] = []
    stack = None
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            if args.bootstrap:
                env = {"COMPASS_KAFKA_BOOTSTRAP": args.bootstrap, "COMPASS_REDIS_URL": args.redis or ""}
                base = load_service_config(env=env)
            else:
                stack = Stack.on_free_ports(load_service_config(env={}), tmp / "stack")
                print("starting a temporary stack ...", file=sys.stderr)
                stack.up()
                base = stack.config
            prefix = f"benchgw{uuid.uuid4().hex[:6]}"
            topic = f"bench.gateway.queries.{uuid.uuid4().hex[:8]}"
            ensure_topics(base.kafka, [topic])
            lm = make_tiny_lm(tmp / "lm", texts * 3, seed=0, hidden=16)
            reg = AdapterRegistry(tmp / "adapters")
            register(reg, lm, "it", "it-v1", seed=1)
            register(reg, lm, "es", "es-v1", seed=2)
            up_port, gw_port = free_port(), free_port()
            cfg = base.model_copy(update={
                "kafka": base.kafka.model_copy(update={"queries_topic": topic}),
                "redis": base.redis.model_copy(update={"key_prefix": prefix}),
                "model": base.model.model_copy(update={"path": lm, "device": "cpu"}),
                "adapters": base.adapters.model_copy(update={"registry": str(tmp / "adapters")}),
                "serving": base.serving.model_copy(update={"port": up_port, "max_new_tokens": MAX_TOKENS}),
                "gateway": base.gateway.model_copy(update={"port": gw_port,
                                                           "upstream": f"http://127.0.0.1:{up_port}"}),
            })
            c, lg = tmp / "service.yaml", tmp / "languages.yaml"
            c.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
            lg.write_text(yaml.safe_dump({"languages": {k: {} for k in SENTENCES}}))
            env = {k: v for k, v in os.environ.items() if not k.startswith("COMPASS_")}
            env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
            log = (tmp / "procs.log").open("w")
            cli = [sys.executable, "-m", "daemon.cli"]
            procs.append(subprocess.Popen([*cli, "serve", "-c", str(c), "-l", str(lg), "-q"], cwd=REPO, env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
            wait_ready(f"http://127.0.0.1:{up_port}/readyz", procs[0], "compass serve")
            r = redis_client(cfg.redis)
            RoutingTable(r, prefix).switch_many({"it": "it@it-v1", "es": "es@es-v1"})
            procs.append(subprocess.Popen([*cli, "gateway", "-c", str(c), "-l", str(lg), "-q"], cwd=REPO, env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
            wait_ready(f"http://127.0.0.1:{gw_port}/readyz", procs[1], "compass gateway")
            direct, gateway = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
            check = httpx.post(f"{gateway}/v1/chat/completions", json=body(SENTENCES["it"], False), timeout=60).json()
            assert check["model"] == "it@it-v1", check  # the table routes

            print(f"latency: {args.n} sequential requests per variant ...", file=sys.stderr)
            lat = latency(direct, gateway, texts, args.n)
            print(f"throughput: {args.concurrency} threads x {args.seconds} s per run ...", file=sys.stderr)
            tput = {f"{way}_{'stream' if s else 'plain'}": throughput(u, texts, args.concurrency, args.seconds, s)
                    for s in (False, True) for way, u in (("direct", direct), ("gateway", gateway))}
            time.sleep(1.0)
            m = httpx.get(f"{gateway}/metrics").text
            gw_events = {"produced": metric_value(m, "compass_gateway_events_produced_total"),
                         "dropped_buffer_full": metric_value(
                             m, 'compass_gateway_events_dropped_total{reason="buffer_full"}'),
                         "requests": sum(float(ln.rsplit(" ", 1)[1]) for ln in m.splitlines()
                                         if ln.startswith("compass_gateway_requests_total{"))}
            print(f"events/s: {args.events} events into an EventSink ...", file=sys.stderr)
            ev = events_per_s(cfg, args.events)
            r.delete(f"{prefix}:serving:routes")
            r.close()
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            if stack is not None:
                stack.down()

    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "processor": platform.processor() or platform.machine()},
              "upstream": "compass serve, tiny random llama (hidden 16, 1 layer), DoRA adapters it/es, CPU",
              "max_tokens": MAX_TOKENS, "latency": lat, "throughput_rps": tput,
              "concurrency": args.concurrency, "gateway_events": gw_events, "event_sink": ev}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
