"""``compass langid-demo``: the first half of the main job alone: replay real multilingual queries through Kafka and
watch language ID + embedding come back per language (``compass demo`` runs the whole loop).

1. brings the local stack up (Kafka + Redis on 127.0.0.1; idempotent),
2. loads real multilingual queries (chatterbot-corpus user utterances, fetched and cached at setup),
3. replays them as query events, without ``lang``, onto the queries topic,
4. consumes them back as a consumer group: language ID + one batched embedding call per poll,
   committing offsets after each processed batch,
5. prints per-language counts and the languages detected, and writes a JSON summary under state_dir.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

CONFIG = typer.Option(None, "--config", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", help="languages YAML (default: configs/languages.yaml)")


def _bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _sample(records: list, per_language: int, seed: int) -> list:
    """Up to ``per_language`` utterances of every corpus language, seeded, then shuffled together."""
    rng = random.Random(seed)
    by_lang: dict[str, list] = defaultdict(list)
    for r in records:
        by_lang[r.lang].append(r)
    picked = []
    for lang in sorted(by_lang):
        pool = by_lang[lang]
        picked += rng.sample(pool, min(per_language, len(pool)))
    rng.shuffle(picked)
    return picked


def langid_demo(
    config: Path | None = CONFIG,
    languages: Path | None = LANGUAGES,
    per_language: int = typer.Option(100, min=1, help="utterances replayed per corpus language"),
    seed: int = typer.Option(0, help="seed of the sample and its order"),
    batch_size: int = typer.Option(64, min=1, max=2000, help="max events per poll (one embedding call each)"),
    timeout_s: float = typer.Option(600.0, min=1, help="give up consuming after this many seconds"),
    stack: bool = typer.Option(True, help="start the local stack first; --no-stack uses running servers"),
) -> None:
    """Replay real multilingual queries through Kafka, identify and embed them, print per-language counts."""
    from compass.corpora import chatterbot
    from compass.langid import make_identifier
    from compass.languages import load_languages
    from consumers.enrich import enrich
    from consumers.events import BadEvent, decode_event
    from consumers.replay import replay, to_event
    from daemon.cli.stack import up as stack_up
    from infra.clients import ensure_topics, kafka_consumer
    from infra.embedders import make_embedder
    from infra.settings import load_service_config

    console = Console(soft_wrap=True)
    cfg = load_service_config(config)
    langs = load_languages(languages)
    phases: dict[str, float] = {}

    console.rule("1. local stack")
    t0 = time.perf_counter()
    if stack:
        stack_up(only=None, config=config)
    else:
        console.print(f"using running servers: Kafka {','.join(cfg.kafka.bootstrap_servers)}, "
                      f"Redis {cfg.redis.address}")
    phases["stack_up_s"] = time.perf_counter() - t0

    console.rule("2. real multilingual queries (chatterbot-corpus)")
    t0 = time.perf_counter()
    with console.status("loading chatterbot-corpus"):
        corpus = chatterbot.load()
    sample = _sample(corpus.records, per_language, seed)
    truth = Counter(r.lang for r in sample)
    console.print(f"{len(corpus.records)} utterances in {len(corpus.counts())} languages "
                  f"({len(corpus.skipped)} malformed file(s) skipped); replaying {len(sample)}: "
                  f"up to {per_language} per language")
    phases["load_corpus_s"] = time.perf_counter() - t0

    console.rule(f"3. replay onto Kafka topic {cfg.kafka.queries_topic}")
    run_id = uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    ensure_topics(cfg.kafka, [cfg.kafka.queries_topic], partitions=3)
    events = [to_event(r, run_id) for r in sample]
    with _bar(console) as bar:
        task = bar.add_task("producing", total=len(events))
        replay(cfg.kafka, events, on_sent=lambda n: bar.advance(task, n))
    phases["produce_s"] = time.perf_counter() - t0

    console.rule("4. consume as a group: language ID + embedding per batch")
    t0 = time.perf_counter()
    with console.status("loading language ID and the embedder"):
        identifier = make_identifier(cfg.langid, langs.enabled)
        embedder = make_embedder(cfg.embedder)
    phases["load_models_s"] = time.perf_counter() - t0
    consumer = kafka_consumer(cfg.kafka, f"compass-demo-{run_id}", [cfg.kafka.queries_topic],
                              auto_offset_reset="earliest", max_poll_records=batch_size)
    detected: dict[str, Counter] = defaultdict(Counter)
    bad: Counter = Counter()
    dims: set[int] = set()
    seen = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        with _bar(console) as bar:
            task = bar.add_task("identifying + embedding", total=len(events))
            while seen < len(events) and time.monotonic() < deadline:
                polled = consumer.poll(timeout_ms=1000, max_records=batch_size)
                batch = []
                for msgs in polled.values():
                    for msg in msgs:
                        try:
                            event = decode_event(msg.value)
                        except BadEvent as e:  # earlier runs' traffic may hold anything: count it
                            bad[e.reason] += 1
                            continue
                        if event.meta.get("run") == run_id:
                            batch.append(event)
                if batch:
                    out = enrich(batch, identifier, embedder)
                    dims.add(out.embeddings.shape[1])
                    for event, lang in zip(out.events, out.langs, strict=True):
                        detected[event.meta["corpus_lang"]][lang] += 1
                    seen += len(batch)
                    bar.advance(task, len(batch))
                if polled:
                    consumer.commit()  # after the batch was processed: at-least-once
    finally:
        consumer.close()
    phases["consume_s"] = time.perf_counter() - t0
    if seen < len(events):
        raise typer.BadParameter(f"only {seen} of {len(events)} events came back within {timeout_s} s")

    console.rule("5. per-language counts and the languages detected")
    _report(console, truth, detected, set(langs.enabled))
    counts = Counter()
    for c in detected.values():
        counts.update(c)
    summary = {
        "run_id": run_id, "events": len(events), "per_language_sent": dict(truth),
        "detected_counts": dict(counts.most_common()),
        "detected_by_corpus_language": {k: dict(v) for k, v in detected.items()},
        "embedding_dim": sorted(dims), "embedder": embedder.model_id, "other_events_skipped": dict(bad),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "events_per_s": round(seen / max(phases["consume_s"], 1e-9), 1),
    }
    out_dir = Path(cfg.state_dir) / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}.json"
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    console.print(f"detected per language: {dict(counts.most_common())}")
    console.print(f"phases (s): {summary['phases_s']}; {summary['events_per_s']} events/s identified + "
                  f"embedded ({embedder.model_id}, dim {sorted(dims)})")
    console.print(f"summary written to {out}")
    if stack:
        console.print("The stack keeps running: `compass stack down` (or `make stack-down`) stops it.")


def _report(console: Console, truth: Counter, detected: dict[str, Counter], configured: set[str]) -> None:
    table = Table("corpus language", "sent", "configured", "identified as (top 3)", "correct")
    for lang in sorted(truth, key=lambda x: (-truth[x], x)):
        got = detected.get(lang, Counter())
        top = ", ".join(f"{k} {v}" for k, v in got.most_common(3))
        share = got[lang] / max(truth[lang], 1)
        table.add_row(lang, str(truth[lang]), "yes" if lang in configured else "no", top, f"{share:.0%}")
    console.print(table)
    ok = sum(detected.get(lang, Counter())[lang] for lang in truth if lang in configured)
    total = sum(truth[lang] for lang in truth if lang in configured)
    if total:
        console.print(f"language ID on configured languages: {ok}/{total} = {ok / total:.1%} "
                      "(short chat utterances; 'und' = below langid.min_confidence)")
    # an unconfigured language belongs on the base model: count what language ID sends to a configured one
    unserved = [lang for lang in truth if lang not in configured]
    leaked = sum(n for lang in unserved for got, n in detected.get(lang, Counter()).items() if got in configured)
    total = sum(truth[lang] for lang in unserved)
    if total:
        console.print(f"utterances of unconfigured languages identified as a configured one (they would reach "
                      f"its adapter): {leaked}/{total} = {leaked / total:.1%}")
