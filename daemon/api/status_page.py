"""The live status page for on-call: ``GET /`` (a self-contained HTML page) and ``GET /v1/status`` (its JSON).

The page (``daemon/api/static/status.html``: inline CSS and JS drawing SVG, nothing fetched from outside, the
machines are offline) polls ``/v1/status`` and shows one card per language: JS(P_ref || P_mon) over time against
theta (eq. 5, eq. 6) and the effective threshold of a calibrated detector, with trigger markers, the detector's
mode, effective threshold and burn-in progress, the window's cluster proportions P_mon (eq. 4) against P_ref (eq. 3),
the clusters driving JS with their labels (``explanation``),
the adapter versions and promotions of the registry, and the events timeline (infra/history.py). Above the cards,
a panel lists the unserved languages (``Daemon.describe_unserved``: queries and share over the horizon, emerged or
not, sample ids, and how to start serving one).

One language's failure (a corrupt window, an unreadable registry) is reported in its card, never a 500; a failure
of the unserved panel is reported in the panel.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from compass.registry import AdapterRegistry
from infra import history
from infra.reference import BadReference, get_reference

if TYPE_CHECKING:
    from daemon.scheduler.service import Daemon

log = logging.getLogger(__name__)
POLL_S = 5.0  # how often the page asks for /v1/status
RECENT = 10  # adapter versions and promotions shown per language
# check states that dispatched a job (CheckResult.state of Daemon._fire): the chart's trigger markers
FIRED_STATES = ("drift", "manual", "quality", "stale_clusters")
_BADGES = {
    "ok": ("below_threshold", "rearmed", "disarmed"),
    "drift": (*FIRED_STATES, "awaiting_quality", "settling"),
    "cooldown": ("cooldown", "backoff"),  # backoff: the longer wait after unsuccessful updates
    "warming": ("insufficient_samples", "calibrating"),  # calibrating: a burn-in learns the threshold
    "stuck": ("stuck",),  # max_rejections updates did not promote: ops must act (POST .../resume)
    "attention": ("no_reference", "bad_reference", "codebook_mismatch", "dispatch_failed", "error"),
    "standby": ("standby",),
    "paused": ("paused",),
    "disabled": ("disabled",),
}
BADGE_OF = {state: badge for badge, states in _BADGES.items() for state in states}


def badge(state: str | None, phase: str | None) -> str:
    """The one word on a card's badge: ok, drift, updating, stuck, cooldown, warming, attention, standby, paused..."""
    if state == "paused":
        return "paused"
    if phase in ("updating", "stuck"):
        return phase
    return BADGE_OF.get(state or "", "unknown")


def proportions(daemon: Daemon, lang: str) -> dict[str, Any]:
    """P_mon of the window (eq. 4) next to P_ref (eq. 3), bucket by bucket; the last bucket is noise."""
    snap = daemon.windows.snapshot(lang)
    window = (snap.counts / snap.size).tolist() if snap.size else [0.0] * len(snap.counts)
    out: dict[str, Any] = {"window": window, "counts": snap.counts.tolist(), "size": snap.size,
                           "codebook_version": snap.codebook_version, "reference": None, "reference_error": None}
    try:
        ref = get_reference(daemon.client, lang, daemon.prefix)
    except BadReference as e:
        out["reference_error"] = str(e)
        return out
    if ref is not None:
        out["reference"] = ref.probs
        out["reference_codebook_version"] = ref.codebook_version
    return out


def adapters(registry: AdapterRegistry, lang: str) -> dict[str, Any]:
    """Current version, the newest versions and promotions (newest first); an empty or missing registry is []."""
    try:
        versions = registry.versions(lang)
        return {"current": registry.current(lang), "n_versions": len(versions),
                "versions": versions[::-1][:RECENT], "promotions": registry.history(lang)[::-1][:RECENT],
                "error": None}
    except Exception as e:  # a corrupt pointer, an unreachable bucket: the rest of the card still helps on-call
        return {"current": None, "n_versions": 0, "versions": [], "promotions": [],
                "error": f"registry {registry.url}: {type(e).__name__}: {e}"}


def language_status(daemon: Daemon, registry: AdapterRegistry, lang: str, points: int | None = None,
                    events: int | None = 50) -> dict[str, Any]:
    """Everything one card shows; a failure becomes ``{"language", "error"}`` instead of an exception."""
    try:
        d = daemon.describe(lang)
        d["badge"] = badge(d.get("state"), d.get("phase"))
        d["proportions"] = proportions(daemon, lang)
        d["js_history"] = history.js_history(daemon.client, lang, daemon.prefix, limit=points)
        d["timeline"] = history.timeline(daemon.client, lang, daemon.prefix, limit=events)
        d["adapters"] = adapters(registry, lang)
        d["error"] = None
        return d
    except Exception as e:
        log.warning("status of %s failed: %s", lang, e)
        return {"language": lang, "badge": "attention", "error": f"{type(e).__name__}: {e}"}


def unserved_status(daemon: Daemon) -> dict[str, Any]:
    """The unserved-languages panel; a failure becomes ``{"error"}`` instead of an exception."""
    try:
        return {**daemon.describe_unserved(), "error": None}
    except Exception as e:
        log.warning("unserved languages failed: %s", e)
        return {"languages": [], "error": f"{type(e).__name__}: {e}"}


def status_router(daemon: Daemon, registry: AdapterRegistry | None = None) -> APIRouter:
    """``GET /`` and ``GET /v1/status`` over ``daemon`` (the registry: ``daemon.config.adapters.registry``)."""
    registry = registry or AdapterRegistry(daemon.config.adapters.registry)
    page = files("daemon.api").joinpath("static/status.html").read_text(encoding="utf-8")
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> HTMLResponse:
        return HTMLResponse(page.replace("__POLL_MS__", str(int(POLL_S * 1000))))

    @router.get("/v1/status")
    def status(
        points: int | None = Query(None, ge=0, le=history.JS_MAX * 10,
                                   description="JS readings per language (newest); all kept when omitted"),
        events: int = Query(50, ge=0, le=history.EVENTS_MAX * 10, description="timeline events per language"),
    ) -> dict[str, Any]:
        """Every known language's card data at once (the status page polls this)."""
        langs = daemon.known_languages()
        return {"generated_at": time.time(), "owner": daemon.owner, "poll_s": POLL_S,
                "languages": [language_status(daemon, registry, lang, points, events) for lang in langs],
                "unserved": unserved_status(daemon)}

    return router
