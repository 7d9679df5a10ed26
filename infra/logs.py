"""Structured logs: one JSON object per line (ts, level, logger, msg, plus the record's own fields).
On a console: ``PlainFormatter`` (the same fields as ``key=value`` after the message) and ``configure_logging``.

Fields travel in ``extra``: ``log.info("batch", extra={"batch_size": 256, "lag": 12})`` prints
``{"ts": "...", "level": "INFO", "logger": "consumers.monitor", "msg": "batch", "batch_size": 256, "lag": 12}``.
"""

from __future__ import annotations

import json
import logging
import math
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
    configure_logging(level, json_lines=True, stream=stream)


# ------------------------------------------------------------------------------------- console setup (every command)

OWN = ("compass", "consumers", "daemon", "uvicorn.error")  # ours; uvicorn.error says where the API listens
# third-party loggers whose INFO lines drown ours (faiss.loader: six lines per start; kafka: every group join);
# torch is left alone: it configures its own loggers (TORCH_LOGS)
THIRD_PARTY = ("faiss", "kafka", "apscheduler", "httpx", "httpcore", "urllib3", "uvicorn.access", "asyncio",
               "filelock", "fsspec", "huggingface_hub", "transformers", "peft", "sentence_transformers",
               "multipart", "python_multipart", "botocore", "s3transfer")


def human(value: Any) -> str:
    """A number as people read it: 3 significant digits, no exponent between 0.001 and 10^6; others as str."""
    if not isinstance(value, float):
        return "n/a" if value is None else str(value)
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    rounded = float(f"{value:.3g}")  # 0.9999 -> 1.0: the digits count from the rounded value
    magnitude = math.floor(math.log10(abs(rounded)))
    if not -3 <= magnitude < 6:
        return f"{value:.3g}"
    return f"{rounded:,.{max(0, 2 - magnitude)}f}"


def human_pct(fraction: float | None) -> str:
    """A signed fraction as a percentage with 3 significant digits: -0.04231 -> '-4.23%'."""
    if fraction is None:
        return "n/a"
    text = human(fraction * 100)
    return f"{'+' if fraction > 0 else ''}{text}%"


def _field(value: Any) -> str:
    if isinstance(value, float):
        return human(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if not value or any(c in value for c in ' ="') else value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return str(value)


_CONSOLE_SKIP = {"color_message"}  # uvicorn's coloured copy of the message


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``: the record's ``extra`` fields follow the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={_field(v)}" for k, v in vars(record).items()
                          if k not in _STANDARD and k not in _CONSOLE_SKIP and not k.startswith("_"))
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {fields}{sep}{tail}"


def verbosity_level(quiet: bool = False, verbose: bool = False, default: int | str = logging.INFO) -> int:
    """--quiet: WARNING, --verbose: DEBUG, neither: ``default``."""
    if quiet and verbose:
        raise ValueError("--quiet and --verbose exclude each other")
    if quiet:
        return logging.WARNING
    if verbose:
        return logging.DEBUG
    if isinstance(default, int):
        return default
    level = logging.getLevelName(default.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {default!r}; use DEBUG, INFO, WARNING or ERROR")
    return level


def configure_logging(level: int | str = logging.INFO, *, json_lines: bool = False,
                      stream: TextIO | None = None) -> None:
    """One handler on the root logger (plain, or JSON lines) on ``stream`` (stderr), replacing existing handlers.

    Our loggers (``OWN``) log at ``level``; the third-party ones at WARNING, or INFO when ``level`` is DEBUG.
    """
    level = verbosity_level(default=level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    others = logging.INFO if level <= logging.DEBUG else logging.WARNING
    root.setLevel(max(level, others))
    for name in OWN:
        logging.getLogger(name).setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(others)
