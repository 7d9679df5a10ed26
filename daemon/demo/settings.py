"""The sizes of one demo run (``DemoSettings``), what it returns (``DemoResult``), and the service and languages
configs it runs with (its own Redis namespace, per-run topics, registry and work dirs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compass.languages import LanguagesConfig
from infra.settings import ServiceConfig

PREFIX = "compass-demo"  # the demo's Redis namespace: flushed at the start of every run
Say = Callable[[str], None]  # prints one line (rich markup)


@dataclass
class DemoSettings:
    """Sizes of one run. The defaults fit the 2-core machine in about 10 minutes with SmolLM2-135M."""

    model: str = "smollm2"  # "smollm2" (packaged) or a local model directory
    languages: tuple[str, ...] = ("it", "es", "en")
    shift_language: str = "it"
    phase1_per_language: int = 150
    phase2_size: int = 260
    pool_cap: int = 40
    n_clusters: int = 16
    window_size: int = 150
    min_samples: int = 80
    # Eq. 3 puts the selected pool rows into P_ref, so even a steady window sits ~0.15-0.2 bits from it with K=16
    # and 100-150 queries (measured in this scenario); the shift takes the shifting language to ~0.4.
    theta: float = 0.25
    check_interval_s: float = 2.0
    # SmolLM2-135M with DoRA on all 7 projections: ~6.5 s per step of 8 x 64 tokens on 2 cores
    train: dict[str, Any] = field(default_factory=lambda: {
        "rank": 8, "alpha": 16, "lr": 1e-3, "max_epochs": 1, "batch_size": 8, "max_length": 64, "max_examples": 96,
    })
    gate: dict[str, Any] = field(default_factory=dict)
    update_timeout_s: float = 900.0
    http: bool = True  # serve the status page while the run lasts
    seed: int = 0


@dataclass
class DemoResult:
    run_dir: Path
    phases: dict[str, float]
    events: list[dict[str, Any]]
    bootstrap: dict[str, str]  # language -> adapter version bootstrapped (or reused)
    final_versions: dict[str, str | None]
    updates: list[dict[str, Any]]  # job reports of this run
    report: Path | None = None

    @property
    def promoted(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "adapter_promoted"]


def demo_configs(base: ServiceConfig, settings: DemoSettings, root: Path, model_dir: Path,
                 gguf_file: str | None, run_id: str) -> tuple[ServiceConfig, LanguagesConfig]:
    """The service config of the demo (its own Redis prefix, per-run topics, registry, work dirs) and its
    languages config (also written to ``root/languages.yaml`` as a record, for `compass simulate --languages`).
    Per-run topics keep an earlier run's messages out of this one."""
    data = root / "data"
    topic = f"compass-demo.{run_id}"
    cfg = base.model_copy(update={
        "redis": base.redis.model_copy(update={"key_prefix": PREFIX}),
        "kafka": base.kafka.model_copy(update={
            "queries_topic": f"{topic}.queries", "jobs_topic": f"{topic}.jobs",
            "events_topic": f"{topic}.events", "dead_letter_topic": f"{topic}.dead-letter"}),
        "consumer": base.consumer.model_copy(update={
            "group_id": "compass-demo-monitor", "codebook_dir": root / "codebooks", "metrics_port": 0,
            "max_poll_records": 64}),
        "daemon": base.daemon.model_copy(update={
            "check_interval_s": settings.check_interval_s, "lease_ttl_ms": int(settings.check_interval_s * 5000),
            "events_group_id": "compass-demo-daemon", "stale_far_max_texts": 0}),
        "model": base.model.model_copy(update={"path": model_dir, "gguf_file": gguf_file}),
        "adapters": base.adapters.model_copy(update={"registry": str(root / "adapters")}),
        "worker": base.worker.model_copy(update={
            "group_id": "compass-demo-worker", "pool": data / "pool.jsonl", "targets_dir": data / "targets",
            "work_dir": root / "worker", "retry_backoff_s": 2.0, "checkpoint_every": 10,
            "train": base.worker.train.model_copy(update=settings.train),
            "gate": base.worker.gate.model_copy(update=settings.gate)}),
    })
    raw = {"defaults": {"theta": settings.theta, "window_size": settings.window_size,
                        "min_samples": settings.min_samples, "cooldown_s": 3600, "budget": 0.8},
           "languages": {lang: {} for lang in settings.languages}}
    (root / "languages.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg, LanguagesConfig.model_validate(raw)
