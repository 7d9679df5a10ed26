"""The daemon's HTTP API (FastAPI): health, readiness, metrics, per-language status and operator actions."""

from daemon.api.app import create_app

__all__ = ["create_app"]
