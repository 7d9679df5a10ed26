"""Structured logs: one JSON object per line (ts, level, logger, msg, plus the record's own fields).

Fields travel in ``extra``: ``log.info("batch", extra={"batch_size": 256, "lag": 12})`` prints
``{"ts": "...", "level": "INFO", "logger": "consumers.monitor", "msg": "batch", "batch_size": 256, "lag": 12}``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # default=str: a Path or numpy scalar in ``extra`` must not turn a log line into a crash
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_json_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the root logger to ``stream`` (stderr) as JSON lines, replacing existing handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every group join at INFO
