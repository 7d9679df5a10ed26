"""Step 2 of the demo, data: the scenario (chatterbot-corpus utterances -> target data, auxiliary pool, a stream
with a topic shift) written under the demo's state dir, the demo's configs, an empty Redis namespace and the
per-run topics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from compass.data import write_records
from compass.languages import LanguagesConfig
from daemon.demo.scenario import Scenario
from daemon.demo.settings import PREFIX, DemoSettings, Say, demo_configs
from infra.keys import Keys
from infra.settings import ServiceConfig


@dataclass
class Prepared:
    """What the later steps run on."""

    scenario: Scenario
    cfg: ServiceConfig
    langs: LanguagesConfig
    client: redis.Redis
    model_dir: Path
    gguf: str | None  # the GGUF file in model_dir, when the model is one


def prepare(base: ServiceConfig, settings: DemoSettings, root: Path, run_id: str, say: Say) -> Prepared:
    from compass.adapt import packaged_model
    from compass.corpora import chatterbot
    from daemon.demo.scenario import build
    from infra.clients import ensure_topics, redis_client

    say("[bold]2. data[/]: chatterbot-corpus utterances -> target data, auxiliary pool, a stream with a topic shift")
    scenario = build(chatterbot.load().records, settings.languages, settings.shift_language,
                     settings.phase1_per_language, settings.phase2_size, settings.pool_cap, settings.seed)
    write_data(scenario, root)
    if settings.model == "smollm2":
        model_dir, gguf = packaged_model("smollm2")
    else:
        model_dir, gguf = Path(settings.model), None
    cfg, langs = demo_configs(base, settings, root, model_dir, gguf, run_id)
    say(f"  D_t per language {({k: len(v) for k, v in scenario.targets.items()})}, pool {len(scenario.pool)} "
        f"utterances in {len({r.lang for r in scenario.pool})} languages; stream: {len(scenario.phase1)} queries, "
        f"then {len(scenario.phase2)} in which [bold]{scenario.shift_language}[/] moves to new topics")
    client = redis_client(cfg.redis)
    flush_prefix(client)
    ensure_topics(cfg.kafka, [cfg.kafka.queries_topic], partitions=3)
    ensure_topics(cfg.kafka, [cfg.kafka.jobs_topic, cfg.kafka.events_topic, cfg.kafka.dead_letter_topic],
                  partitions=1)
    return Prepared(scenario, cfg, langs, client, model_dir, gguf)


def write_data(scenario: Scenario, root: Path) -> None:
    data = root / "data"
    write_records(scenario.pool, data / "pool.jsonl")
    for lang, records in scenario.targets.items():
        write_records(records, data / "targets" / f"{lang}.jsonl")
    for lang, records in scenario.proxy.items():
        write_records(records, data / "proxy" / f"{lang}.jsonl")


def flush_prefix(client: Any, prefix: str = PREFIX) -> int:
    """Delete every key of the demo's namespace (a fresh run starts from nothing but the cached bootstrap)."""
    n = 0
    batch = []
    for key in client.scan_iter(match=Keys(prefix).everything(), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            n += client.delete(*batch)
            batch = []
    if batch:
        n += client.delete(*batch)
    return n
