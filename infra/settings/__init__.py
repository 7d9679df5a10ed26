"""Service settings: ``configs/default.yaml`` validated into frozen pydantic models, one module per section.

Every problem in a file is reported at once with its key path, the value received and what is allowed;
nothing is half-loaded. Secrets never live in files: they come from environment variables only and are
held as ``SecretStr`` so they never appear in reprs or logs. The method's own sections (embedder, langid,
model, adapters, train/ecda/gate) are defined in ``compass/`` next to what they configure; the per-language
file is ``compass.languages``.

Environment variables:
  COMPASS_KAFKA_BOOTSTRAP      overrides kafka.bootstrap_servers (comma-separated host:port)
  COMPASS_REDIS_URL            overrides redis.host/port/db (redis://[:password@]host:port/db)
  COMPASS_STATE_DIR            overrides state_dir
  COMPASS_KAFKA_SASL_USERNAME  Kafka SASL user       (secret)
  COMPASS_KAFKA_SASL_PASSWORD  Kafka SASL password   (secret)
  COMPASS_REDIS_PASSWORD       Redis password        (secret)
  COMPASS_EMBEDDER_API_KEY     bearer token of an OpenAI-compatible embeddings endpoint (secret)
"""

from infra.settings.connections import KafkaConfig, RedisConfig
from infra.settings.consumer import CodebookConfig, ConsumerConfig
from infra.settings.daemon import DaemonConfig
from infra.settings.gateway import GatewayConfig
from infra.settings.service import (
    DEFAULT_CONFIG,
    REPLACED_KEYS,
    SECRET_ENV,
    ServiceConfig,
    check_file,
    load_service_config,
)
from infra.settings.serving import HttpConfig, ServingConfig
from infra.settings.stack import StackConfig
from infra.settings.worker import WorkerConfig

__all__ = [
    "DEFAULT_CONFIG",
    "REPLACED_KEYS",
    "SECRET_ENV",
    "CodebookConfig",
    "ConsumerConfig",
    "DaemonConfig",
    "GatewayConfig",
    "HttpConfig",
    "KafkaConfig",
    "RedisConfig",
    "ServiceConfig",
    "ServingConfig",
    "StackConfig",
    "WorkerConfig",
    "check_file",
    "load_service_config",
]
