"""The service file (``configs/default.yaml``): every section in one frozen ``ServiceConfig``, environment
overrides, and ``check_file`` for either kind of config file.

Secrets never live in files: they come from the environment variables of ``SECRET_ENV`` only; a secret key in a
file is reported as a problem naming its variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import Field

from compass.adapt_settings import AdaptersConfig, ModelConfig
from compass.embed.config import EmbedderConfig
from compass.errors import ConfigError
from compass.langid_config import LangIdConfig
from compass.languages import load_languages
from compass.paths import REPO_ROOT
from compass.validation import Frozen, read_yaml, validate_file
from infra.settings.connections import KafkaConfig, RedisConfig
from infra.settings.consumer import CodebookConfig, ConsumerConfig
from infra.settings.daemon import DaemonConfig
from infra.settings.gateway import GatewayConfig
from infra.settings.serving import HttpConfig, ServingConfig
from infra.settings.stack import StackConfig
from infra.settings.worker import WorkerConfig

DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"

SECRET_ENV = {
    "kafka.sasl_username": "COMPASS_KAFKA_SASL_USERNAME",
    "kafka.sasl_password": "COMPASS_KAFKA_SASL_PASSWORD",
    "redis.password": "COMPASS_REDIS_PASSWORD",
    "embedder.api_key": "COMPASS_EMBEDDER_API_KEY",
}

# Keys that once existed: an old config gets the replacement named instead of "unknown key".
REPLACED_KEYS = {
    "langid.restrict_to_configured": (
        "removed: language ID now answers every language its model knows and an unconfigured one routes to the "
        "base model; delete this key (langid.configured_tie_margin, default 0.1, sets how close a configured "
        "language must be to the top one to win a near-tie; 0 turns that off)"
    ),
}


class ServiceConfig(Frozen):
    """The whole service file: one section per part of the system; every section has working defaults."""

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
    gateway: GatewayConfig = GatewayConfig()


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
    raw = read_yaml(path)
    return validate_file(ServiceConfig, _apply_env(raw, env), str(path), _reject_secrets(raw), replaced=REPLACED_KEYS)


def check_file(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Validate a config file of either kind; returns (kind, problems). Kind is told by its top-level keys."""
    path = Path(path)
    try:
        data = read_yaml(path)
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
