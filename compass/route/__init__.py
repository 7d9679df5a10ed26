"""Multi-language routing (paper §3.2.5): detect a query's language, pick that language's adapter (or a fallback).

Pure method code: no Kafka, no Redis. The model server (``daemon/serving``) keeps the table fresh."""

from compass.route.router import KINDS, RouteDecision, RouteError, Router, RouteTarget

__all__ = ["KINDS", "RouteDecision", "RouteError", "RouteTarget", "Router"]
