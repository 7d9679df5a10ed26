"""Errors of the I/O layer: a server that cannot be reached, a step of the local stack that failed.

Both subclass compass's ``CompassError`` (one root to catch) and the builtin a caller would catch.
"""

from __future__ import annotations

from compass.errors import CompassError


class ServiceUnavailable(CompassError, ConnectionError):
    """Kafka or Redis cannot be reached at the configured address."""

    def __init__(self, service: str, address: str, detail: str = ""):
        self.service = service
        self.address = address
        hint = "start the local stack with `compass stack up`, or point the config at a running server"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{service} is not reachable at {address}{extra}. Hint: {hint}.")


class StackError(CompassError, RuntimeError):
    """A step of the local stack failed. Names the step and carries the tail of its log."""

    def __init__(self, step: str, message: str, log_tail: str = ""):
        self.step = step
        self.log_tail = log_tail
        tail = f"\n--- last lines of the log ---\n{log_tail.rstrip()}" if log_tail else ""
        super().__init__(f"[{step}] {message}{tail}")
