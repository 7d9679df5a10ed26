"""The ``kafka:`` and ``redis:`` sections: where the servers are and how to authenticate to them.

Passwords are ``SecretStr`` set from environment variables only (``infra/settings/service.py``), so they never
appear in reprs, logs or files.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from compass.validation import Frozen

_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


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


def _redis_cluster_db_rule(cluster: bool, db: int) -> str | None:
    # Redis Cluster has database 0 only (SELECT is refused), so any other db cannot be honoured
    if cluster and db != 0:
        return f"cluster true needs db 0 (Redis Cluster has no other database); got db {db}: set db to 0"
    return None


class KafkaConfig(Frozen):
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


class RedisConfig(Frozen):
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
