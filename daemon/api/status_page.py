"""The live status page for on-call: ``GET /`` (a self-contained HTML page) and ``GET /v1/status`` (its JSON).

The page (``daemon/api/static/status.html``: inline CSS and JS drawing SVG, nothing fetched from outside, the
machines are offline) polls ``/v1/status`` and shows first a summary table of every language, one row each (badge,
JS vs theta, window fill, the sampling rate the window was filled at, its inflow and span, last trigger, last
check), problems first (stuck, attention, stale: not checked for 3 check intervals, drift, updating, ...), read from
the stored statuses in one Redis round trip; then the cards of one page of languages (``?page=&per_page=``, in
the summary's order), so that 200 languages stay responsive: a card reads its window, P_ref, history and registry,
a summary row reads only its status. Each card shows JS(P_ref || P_mon) over time against
theta (eq. 5, eq. 6) and the effective threshold of a calibrated detector, with trigger markers, the detector's
mode, effective threshold and burn-in progress, the window's cluster proportions P_mon (eq. 4) against P_ref (eq. 3),
the clusters driving JS with their labels (``explanation``),
the adapter versions and promotions of the registry, and the events timeline (infra/history.py). Above the cards,
a panel lists the unserved languages (``Daemon.describe_unserved``: queries and share over the horizon, emerged or
not, sample ids, and how to start serving one), and the serving targets of `compass sync` (in sync or not, what
each serves, its error and next retry) with the gateway's routing table.

One language's failure (a corrupt window, an unreadable registry) is reported in its card, never a 500; a failure
of the unserved panel is reported in the panel.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query
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
# the summary's order: what on-call must look at first; "stale" is a language whose last check is older than
# STALE_CHECKS check intervals (the daemon is not checking it: stopped, standby forever, crashing before the write)
PROBLEM_ORDER = ("stuck", "attention", "stale", "drift", "updating", "cooldown", "warming", "unknown", "paused",
                 "standby", "disabled", "ok")
PROBLEMS = frozenset(PROBLEM_ORDER[:5])
STALE_CHECKS = 3
PER_PAGE, PER_PAGE_MAX = 25, 200  # cards per page: the default and the most one request may ask for


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


def serving_status(daemon: Daemon) -> dict[str, Any]:
    """The serving targets' sync state (daemon/sync/state.py) and the gateway's routing table; out-of-sync targets
    first, a configured target never synced included; a failure becomes ``{"error"}`` instead of an exception."""
    from daemon.sync.state import targets_status
    from infra.routes import RoutingTable

    try:
        rows = targets_status(daemon.client, daemon.prefix, daemon.config.serving.targets)
        routes = RoutingTable(daemon.client, daemon.prefix).read()
        return {"targets": rows, "out_of_sync": sum(not r.get("in_sync") for r in rows), "routes": routes.names,
                "routes_version": routes.version, "error": None}
    except Exception as e:
        log.warning("serving targets failed: %s", e)
        return {"targets": [], "out_of_sync": None, "routes": {}, "routes_version": None,
                "error": f"{type(e).__name__}: {e}"}


def summary_rows(daemon: Daemon, langs: list[str], now: float) -> list[dict[str, Any]]:
    """One row per language from its stored status and paused key (one pipeline for all), problems first (by
    ``PROBLEM_ORDER``, then by language); a status that cannot be parsed gives an ``attention`` row naming it."""
    from daemon.scheduler.state import LanguageStatus

    with daemon.client.pipeline(transaction=False) as pipe:
        for lang in langs:
            pipe.get(daemon.keys.status(lang))
            pipe.exists(daemon.keys.paused(lang))
        replies = pipe.execute()
    stale_after = STALE_CHECKS * daemon.dcfg.check_interval_s
    current = daemon.languages.current
    rows = []
    for i, lang in enumerate(langs):
        settings = current.get(lang)
        row: dict[str, Any] = {"language": lang, "enabled": settings.enabled and lang in current.languages,
                               "theta": settings.theta, "window_size": settings.window_size, "error": None}
        try:
            st = LanguageStatus.from_json(replies[2 * i])
        except Exception as e:  # one damaged status must not hide the other 199 rows
            rows.append({**row, "badge": "attention", "state": None, "error": f"{type(e).__name__}: {e}"})
            continue
        last = st.last_check or {}
        paused = bool(replies[2 * i + 1])
        state = "paused" if paused else st.phase if st.phase in ("updating", "stuck") else last.get("state")
        b = badge(state, st.phase)
        at = last.get("at")
        if row["enabled"] and not paused and b not in ("stuck", "attention") and (at is None or now - at > stale_after):
            b = "stale" if at is not None else b  # never checked: "unknown" until its first check
        size = last.get("size")
        lt = st.last_trigger
        row.update(badge=b, state=state, phase=st.phase, paused=paused, js=last.get("js"),
                   threshold=last.get("threshold"), size=size,
                   fill=None if size is None else size / settings.window_size,
                   sampling_rate=last.get("sampling_rate"), inflow_qps=last.get("inflow_qps"),
                   window_span_s=last.get("window_span_s"), traffic_qps=last.get("traffic_qps"),
                   last_check_at=at, last_trigger_at=(lt or {}).get("at"), last_trigger_reason=(lt or {}).get("reason"),
                   failures=st.failures, problem=b in PROBLEMS)
        rows.append(row)
    rank = {b: i for i, b in enumerate(PROBLEM_ORDER)}
    rows.sort(key=lambda r: (rank.get(r["badge"], len(rank)), r["language"]))
    return rows


def page_of(total: int, page: int, per_page: int) -> tuple[int, int]:
    """The [start, end) of ``page`` (1-based) of ``total`` rows ``per_page`` a page; HTTP 422 naming the parameter,
    the value and the fix when out of range (a page past the last of a non-empty list included)."""
    if per_page < 1 or per_page > PER_PAGE_MAX:
        raise HTTPException(422, f"per_page: got {per_page}; must be an integer in [1, {PER_PAGE_MAX}] (cards per "
                                 f"page; the summary lists every language whatever per_page)")
    pages = max(1, -(-total // per_page))
    if page < 1 or page > pages:
        raise HTTPException(422, f"page: got {page}; must be an integer in [1, {pages}] ({total} language(s) at "
                                 f"{per_page} per page); ask for page=1 or a larger per_page")
    return (page - 1) * per_page, min(total, page * per_page)


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
        page: int = Query(1, description="which page of cards, from 1, in the summary's order"),
        per_page: int = Query(PER_PAGE, description=f"cards per page, 1..{PER_PAGE_MAX}"),
    ) -> dict[str, Any]:
        """Every known language's summary row, and the cards of one page of them (the status page polls this)."""
        now = time.time()
        rows = summary_rows(daemon, daemon.known_languages(), now)
        start, end = page_of(len(rows), page, per_page)
        return {"generated_at": now, "owner": daemon.owner, "poll_s": POLL_S,
                "page": {"page": page, "per_page": per_page, "pages": max(1, -(-len(rows) // per_page)),
                         "total": len(rows)},
                "summary": rows,
                "languages": [language_status(daemon, registry, r["language"], points, events)
                              for r in rows[start:end]],
                "unserved": unserved_status(daemon), "serving": serving_status(daemon)}

    return router
