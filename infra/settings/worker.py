"""The ``worker:`` section: the adapter worker's inputs, retries, lock and the train/ecda/gate settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compass.adapt_settings import ECDASettings, GateSettings, SelectionClusteringSettings, TrainSettings
from compass.validation import Frozen


class WorkerConfig(Frozen):
    """The adapter worker (`compass worker`): reselection + ECDA update + gate per job on compass.jobs."""

    group_id: str = Field("compass-worker", min_length=1, description="Kafka consumer group reading compass.jobs")
    pool: Path | None = Field(None, description="auxiliary pool D_aux: a records file (.jsonl, .jsonl.gz, .parquet)")
    targets_dir: Path | None = Field(
        None, description="directory of per-language target data D_t: <lang>.jsonl (records format)"
    )
    work_dir: Path = Field(Path(".compass/worker"), description="checkpoints and per-job reports")
    metrics_port: int = Field(9480, ge=0, le=65535, description="Prometheus /metrics port on 127.0.0.1; 0 = off")
    max_attempts: int = Field(3, ge=1, le=100, description="tries per job before it is dead-lettered, in [1, 100]")
    retry_backoff_s: float = Field(30.0, ge=0, description="seconds before a failed job is tried again, >= 0")
    lock_ttl_ms: int = Field(120_000, ge=1000, description="per-language in-progress lock TTL (renewed), ms >= 1000")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints, >= 1")
    max_message_failures: int = Field(
        3, ge=1, le=1000, description="a job message whose queue write failed this many times in a row (Redis "
        "answering) is dead-lettered, in [1, 1000]",
    )
    train_on_queries: bool = Field(
        False, description="let COMPASS select unlabelled window queries (no response) into D_new; by default only "
        "labelled window rows are candidates"
    )
    selection: SelectionClusteringSettings = SelectionClusteringSettings()
    train: TrainSettings = TrainSettings()
    ecda: ECDASettings = ECDASettings()
    gate: GateSettings = GateSettings()
