"""The ``consumer:`` and ``codebook:`` sections: the streaming monitor and the cluster labels it stores."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compass.validation import Frozen


def _sampling_rule(sampling_bucket_s: int, sampling_lookback_s: int) -> str | None:
    # the look-back is counted in whole buckets, and infra/sampling.py reads at most one epoch (600 buckets) back
    if sampling_lookback_s % sampling_bucket_s or not 1 <= sampling_lookback_s // sampling_bucket_s <= 600:
        return (f"sampling_lookback_s ({sampling_lookback_s}) must be a multiple of sampling_bucket_s "
                f"({sampling_bucket_s}), 1 to 600 buckets; e.g. sampling_lookback_s: {10 * sampling_bucket_s}")
    return None


class ConsumerConfig(Frozen):
    """The streaming monitor (`compass consume`): Kafka consumer group -> language ID -> embed -> assign -> Redis."""

    group_id: str = Field("compass-monitor", min_length=1, description="Kafka consumer group id")
    max_poll_records: int = Field(256, ge=1, le=100_000, description="max events per batch, in [1, 100000]")
    max_poll_bytes: int = Field(8 << 20, ge=1024, description="max bytes fetched per partition and poll, >= 1024")
    max_message_bytes: int = Field(
        64 << 10, ge=64, description="larger messages are dead-lettered as oversize; bytes >= 64"
    )
    store_texts: bool = Field(True, description="keep recent query texts in Redis; false keeps ids only (privacy)")
    recent_max: int = Field(5000, ge=1, description="recent queries kept per language for reselection, >= 1")
    recent_ttl_s: int = Field(7 * 86400, ge=60, description="expiry of the recent-queries list in seconds, >= 60")
    codebook_dir: Path = Field(Path(".compass/codebooks"), description="directory of versioned cluster codebooks")
    eta: float = Field(0.05, ge=0.0, le=1.0, description="eq. 2 centroid learning rate in [0, 1]; 0 freezes centroids")
    revision_interval_s: float = Field(
        300.0, gt=0, description="seconds between persisted centroid revisions of the incremental k-means, > 0"
    )
    metrics_port: int = Field(9470, ge=0, le=65535, description="Prometheus /metrics port on 127.0.0.1; 0 = off")
    session_timeout_ms: int = Field(10000, ge=1000, le=300000, description="Kafka group session timeout in ms")
    quality_meta_key: str | None = Field(
        None, min_length=1, max_length=64,
        description="event meta field carrying a numeric quality score (e.g. user feedback) that feeds the "
        "daemon's quality_signal; null = off",
    )
    unserved_bucket_s: int = Field(
        60, ge=1, le=86400, description="seconds per time bucket of the unserved-language counts, in [1, 86400]"
    )
    sampling_bucket_s: int = Field(
        1, ge=1, le=60, description="seconds per time bucket of capped sampling (languages.yaml "
        "sampling.max_per_second): each bucket's rate is set from the traffic before it, in [1, 60]"
    )
    sampling_lookback_s: int = Field(
        10, ge=1, le=600, description="seconds of traffic a capped language's rate is measured over (a multiple "
        "of sampling_bucket_s, at most 600 buckets), in [1, 600]"
    )
    sampling_ttl_s: int = Field(
        3600, ge=60, le=7 * 86400, description="how long the frozen rates and traffic counts of capped sampling "
        "are kept in Redis (a re-delivery or replay within it samples alike), seconds in [60, 604800]"
    )
    unserved_samples_max: int = Field(
        20, ge=1, le=10_000, description="sample query ids kept per unserved language, in [1, 10000]"
    )
    max_embed_chars: int = Field(
        1024, ge=16, le=1_000_000, description="query texts are cut to this many characters before embedding (the "
        "model reads ~512 tokens anyway; bounds the cost of one message), in [16, 1000000]",
    )
    max_json_depth: int = Field(
        32, ge=2, le=500, description="deeper nesting of objects/arrays in a message is dead-lettered, in [2, 500]"
    )
    max_number_digits: int = Field(
        32, ge=20, le=4000, description="a JSON number with more digits is dead-lettered, in [20, 4000]"
    )
    max_batch_failures: int = Field(
        5, ge=1, le=1000, description="a batch failing this often in a row (not Kafka/Redis/disk) is retried one "
        "message at a time and the failing message dead-lettered as internal_error, in [1, 1000]",
    )
    dedup_horizon_s: int = Field(
        86400, ge=0, le=30 * 86400, description="an event id already counted within this many seconds is a "
        "duplicate (a re-send at a new offset); 0 = off, in [0, 2592000]",
    )
    max_dead_letter_bytes: int = Field(
        1_000_000, ge=4096, le=100 << 20, description="dead letters are truncated to fit this many bytes (keep it "
        "below the dead-letter topic's max.message.bytes), in [4096, 104857600]",
    )
    _rules = (_sampling_rule,)


class CodebookConfig(Frozen):
    """Cluster labels stored with a codebook when it is fitted (compass/cluster/labels.py)."""

    store_examples: bool = Field(
        True, description="keep a few representative query texts per cluster with the codebook; false keeps none "
        "(privacy) and labels use only terms of >= label_min_docs distinct texts",
    )
    label_min_docs: int = Field(
        3, ge=1, le=1000, description="with store_examples false, a label term must occur in at least this many "
        "distinct texts of the cluster, in [1, 1000]",
    )
    label_terms: int = Field(3, ge=1, le=20, description="terms per cluster label, in [1, 20]")
    examples: int = Field(3, ge=0, le=20, description="representative texts kept per cluster, in [0, 20]")
