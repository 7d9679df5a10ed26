"""The one error the expand package raises on purpose."""

from __future__ import annotations

from compass.errors import CompassError


class ExpandError(CompassError, ValueError):
    """Language expansion cannot proceed: the message says what must hold, what was got, and the fix."""
