"""Wall-clock seconds of the demo's phases, for its summary."""

from __future__ import annotations

import time


class PhaseTimer:
    """Laps of named phases, one after the other: ``lap(name)`` ends the phase running since the last lap."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        """Record the phase ``name`` (seconds, rounded to 0.01) and start the next one; the seconds recorded."""
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 2)
        self._last = now
        return self.phases[name]

    def total(self, name: str = "total_s") -> float:
        """Record the seconds since the timer started under ``name``."""
        self.phases[name] = round(time.perf_counter() - self._start, 2)
        return self.phases[name]
