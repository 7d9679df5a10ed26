"""The ``stack:`` section: the local development stack's ports, memory and timeouts (``deploy/local``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compass.paths import CACHE_ROOT
from compass.validation import Frozen


class StackConfig(Frozen):
    """The local development stack (`compass stack up`): a KRaft broker and redis-server on 127.0.0.1."""

    kafka_controller_port: int = Field(39093, ge=1, le=65535, description="a TCP port in [1, 65535]")
    kafka_heap_mb: int = Field(512, ge=256, le=16384, description="an integer in [256, 16384]")
    start_timeout_s: float = Field(90.0, gt=0, le=900, description="seconds in (0, 900]")
    stop_timeout_s: float = Field(
        30.0, gt=0, le=600, description="seconds in (0, 600] between SIGTERM and SIGKILL on `stack down`"
    )
    maven_repo: Path = Field(CACHE_ROOT / "m2", description="local Maven repository for the broker jars")
