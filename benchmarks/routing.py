"""Latency of routing (§3.2.5: language ID + table lookup) and of routed generation with a tiny model.

Routing runs over real multilingual chatbot utterances (chatterbot-corpus); the router's table is cached, so
a request costs py3langid (the full model) plus one dict lookup; the lookup alone is
timed too. Generation uses a tiny random llama (tests/tinylm.py) with DoRA adapters for a few languages, per
request (batch 1) and per routed batch, against the base model without adapters: the ratio is the overhead of
the adapter path (DoRA recomputes its weight norm each forward). Numbers on a shared 2-core CPU are noisy.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/routing.py [--n 2000] [--gen 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summary(name: str, secs: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in secs]
    row = {"p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99), "mean_ms": statistics.fmean(ms), "n": len(ms)}
    print(f"{name:<34} p50 {row['p50_ms']:8.3f} ms   p99 {row['p99_ms']:8.3f} ms   mean {row['mean_ms']:8.3f} ms"
          f"   (n={len(ms)})")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="routing requests")
    ap.add_argument("--gen", type=int, default=40, help="generation requests per variant")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from test_serving import register  # the tests' seeded tiny adapters
    from tinylm import make_tiny_lm

    from compass.corpora import chatterbot
    from compass.langid import make_identifier
    from compass.langid_config import LangIdConfig
    from compass.languages import load_languages
    from compass.registry import AdapterRegistry
    from compass.route import Router
    from daemon.serving import AdapterServer
    from infra.settings import ServiceConfig

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    langs = load_languages().enabled
    records = [r for r in chatterbot.load().records if r.lang in langs and r.text.strip()]
    texts = [r.text for r in rng.sample(records, min(args.n, len(records)))]
    served = ["en", "es", "it", "pt"]
    results: dict[str, object] = {"n_texts": len(texts), "languages": sorted({r.lang for r in records})}

    with tempfile.TemporaryDirectory() as tmp:
        lm = make_tiny_lm(Path(tmp) / "lm", texts[:500], seed=args.seed, hidden=64, layers=2)
        reg = AdapterRegistry(Path(tmp) / "adapters")
        for i, lang in enumerate(served):
            register(reg, lm, lang, f"{lang}-v1", seed=args.seed + i)

        router = Router(make_identifier(LangIdConfig(), langs), reg, langs)
        router.refresh()
        for t in texts[:50]:  # warm-up
            router.route(t)
        route_s, lookup_s, kinds = [], [], {}
        for t in texts:
            t0 = time.perf_counter()
            d = router.route(t)
            route_s.append(time.perf_counter() - t0)
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        ident = router.identifier.identify(texts[0])
        for _ in range(len(texts)):
            t0 = time.perf_counter()
            router.decide(ident)
            lookup_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        router.refresh()
        refresh_s = time.perf_counter() - t0
        print(f"routing over {len(texts)} chatterbot utterances in {len(results['languages'])} languages; "
              f"decisions {kinds}")
        results["route"] = summary("route (langid + lookup)", route_s)
        results["lookup"] = summary("table lookup only (decide)", lookup_s)
        results["refresh_ms"] = refresh_s * 1000
        print(f"{'registry refresh (' + str(len(langs)) + ' languages)':<34} {refresh_s * 1000:8.1f} ms (off the "
              "request path)")

        cfg = ServiceConfig()
        cfg = cfg.model_copy(update={
            "adapters": cfg.adapters.model_copy(update={"registry": str(Path(tmp) / "adapters")}),
            "model": cfg.model.model_copy(update={"device": "cpu"}),
            "serving": cfg.serving.model_copy(update={"max_new_tokens": 16, "max_batch": 8})})
        server = AdapterServer(cfg, langs, model=str(lm))
        bare = AdapterServer(cfg, langs, model=str(lm), registry=AdapterRegistry(Path(tmp) / "none"))
        sample = [t for t in texts if router.route(t).kind != "base"][: args.gen]
        for s in (server, bare):
            s.generate(sample[:4])
        gen_s, base_s = [], []
        for t in sample:
            t0 = time.perf_counter()
            server.generate([t])
            gen_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare.generate([t])
            base_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        server.generate(sample)
        batch_s = time.perf_counter() - t0
        print(f"generation, tiny llama (hidden 64, 2 layers), 16 new tokens, {len(served)} DoRA adapters loaded:")
        results["generate_adapter"] = summary("  routed to an adapter, batch 1", gen_s)
        results["generate_base"] = summary("  base model, no adapters, batch 1", base_s)
        ratio = statistics.median(gen_s) / statistics.median(base_s)
        results["adapter_over_base_p50"] = ratio
        results["batched_ms_per_request"] = batch_s * 1000 / len(sample)
        print(f"  adapter / base p50 ratio {ratio:.2f}; grouped batches (max_batch 8): "
              f"{batch_s * 1000 / len(sample):.2f} ms per request")
        print(f"  routing share of a routed request at p50: "
              f"{results['route']['p50_ms'] / results['generate_adapter']['p50_ms']:.1%}")
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
