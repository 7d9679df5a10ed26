"""One root error for compass; subclasses also inherit the builtin a caller would catch.

Messages name the field, the value received and the fix (scikit-learn's InvalidParameterError style),
so an on-call engineer can act on the message alone.
"""

from __future__ import annotations


class CompassError(Exception):
    """Root of every error compass raises on purpose."""


class ConfigError(CompassError, ValueError):
    """A configuration file or value is invalid; ``problems`` lists every problem found, not the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class DataError(CompassError, ValueError):
    """A data file is malformed. ``problems`` holds one 'line N, field F: ...' entry per problem."""

    def __init__(self, source: str, problems: list[str], max_shown: int = 50):
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:max_shown])
        more = len(self.problems) - max_shown
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{shown}{tail}")


class EmbedderError(CompassError, RuntimeError):
    """An embedding backend could not load or answer."""


class EmbedderUnavailable(EmbedderError, ConnectionError):
    """An embedding service did not answer after its retries (connection, timeout, 429/5xx): an outage, which the
    consumer rewinds and retries like a Kafka or Redis outage instead of blaming the messages (ConnectionError)."""


class LanguageIdError(CompassError, RuntimeError):
    """A language-ID backend could not load."""
