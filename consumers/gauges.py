"""The monitor's gauges that read state back: consumer lag per partition and window fill per language."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from compass.languages import LanguagesConfig
from consumers.metrics import ConsumerMetrics
from infra.isolate import describe
from infra.window import WindowStore

log = logging.getLogger(__name__)

FILL_EVERY_S = 2.0  # a gauge, not a ledger: refreshing it every batch costs Redis reads


class Gauges:
    def __init__(self, consumer: Any, windows: WindowStore, languages: LanguagesConfig, metrics: ConsumerMetrics):
        self.consumer, self.windows, self.languages, self.metrics = consumer, windows, languages, metrics
        self._last_fill = 0.0

    def lag(self) -> int:
        """Set the lag gauge of every assigned partition; returns the total."""
        total = 0
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            lag = max(0, hw - self.consumer.position(tp))
            total += lag
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        return total

    def refresh_lag(self) -> None:
        """``lag()`` that only logs a failure (after a failed batch: the gauge must show a stalled partition)."""
        try:
            self.lag()
        except Exception as e:  # noqa: BLE001 - a gauge must not turn one failure into another
            log.warning("could not update the lag gauge", extra={"error": describe(e)})

    def fill(self, langs: Iterable[str], *, now: bool = False) -> None:
        """Set the fill gauge (size / window_size) of ``langs``, at most every FILL_EVERY_S unless ``now``."""
        t = time.monotonic()
        if not now and t - self._last_fill < FILL_EVERY_S:
            return
        self._last_fill = t
        for lang in langs:
            size = self.windows.snapshot(lang).size
            self.metrics.window_fill.labels(lang).set(size / self.languages.get(lang).window_size)
