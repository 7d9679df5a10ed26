"""HTTP API of the drift daemon, served by uvicorn on ``http.host:http.port`` (127.0.0.1 by default).

  GET  /                                the live status page for on-call (daemon/api/status_page.py)
  GET  /v1/status                        every language's card data at once: JS history, P_mon vs P_ref,
                                         adapters, events timeline (the page polls it)
  GET  /healthz                          the process answers
  GET  /readyz                           Kafka and Redis reachable (503 naming the one that is not)
  GET  /metrics                          Prometheus text format
  GET  /v1/languages                     every configured language (or with a window): state, phase, JS, theta,
                                         the detector's effective threshold, fill; with ``?unserved=true`` also
                                         ``unserved``: languages no configured adapter serves (und included), their
                                         queries and share over daemon.emerging_horizon_s, whether they emerged
                                         (language_emerging), sample ids and how to start serving them, and
                                         ``error`` (null, or why they could not be read)
  GET  /v1/languages/{lang}              one language in full, with ``explanation``: the clusters driving JS
                                         (daemon/scheduler/explain.py)
  POST /v1/languages/{lang}/pause        stop checks acting on the language (all replicas)
  POST /v1/languages/{lang}/resume       un-pause; a stuck language is resumed on its next check (failures cleared)
  POST /v1/languages/{lang}/trigger      enqueue an adapter update now (reason ``manual``)
  POST /v1/route                         {"text", "lang"?} -> routing decision (§3.2.5; registry re-read every 10 s)
  GET  /openapi.json, /docs              FastAPI's OpenAPI document

Every request body is limited to ``http.max_body_bytes`` (413 beyond); a 422 quotes at most a short prefix of
the input (daemon/api/limits.py).

POST endpoints need ``Authorization: Bearer <token>`` with the token from the environment variable
``COMPASS_API_TOKEN`` (read per request, so a rotated token takes effect without a restart). Without that
variable they answer 503: mutating endpoints are never open.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from compass.route import RouteError
from daemon.api.limits import MSG_MAX, install_limits
from daemon.api.serving import RouteRequest
from daemon.api.status_page import status_router, unserved_status

if TYPE_CHECKING:
    from daemon.scheduler.service import Daemon

TOKEN_ENV = "COMPASS_API_TOKEN"
ROUTE_REFRESH_S = 10.0
_LANG = re.compile(r"^[a-z]{2,3}$")
_bearer = HTTPBearer(auto_error=False)


def require_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    expected = os.environ.get(TOKEN_ENV)
    if not expected:
        raise HTTPException(503, f"mutating endpoints are disabled: set the environment variable {TOKEN_ENV} "
                                 "to a secret token and restart the daemon, then send it as a bearer token")
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token: send 'Authorization: Bearer <COMPASS_API_TOKEN>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(creds.credentials.encode(), expected.encode()):
        raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def create_app(daemon: Daemon) -> FastAPI:
    """The API over one running ``Daemon`` (its Redis state is shared by all replicas, so any replica answers)."""
    app = FastAPI(title="compass daemon", version="1",
                  description="Drift detection (paper §3.3.2) and adapter update dispatch per language.")
    install_limits(app, daemon.config.http.max_body_bytes)

    def known(lang: str) -> str:
        if not _LANG.match(lang) or lang not in daemon.known_languages():
            raise HTTPException(404, f"unknown language {lang!r}; add it to languages.yaml (known: "
                                     f"{', '.join(daemon.known_languages())})")
        return lang

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "owner": daemon.owner}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = daemon.ready()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(daemon.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/languages")
    def languages(unserved: bool = Query(False, description="also list the unserved languages")) -> dict[str, Any]:
        rows = []
        for lang in daemon.known_languages():
            d = daemon.describe(lang)
            rows.append({k: d[k] for k in ("language", "enabled", "paused", "state", "phase", "js", "theta",
                                          "effective_threshold", "armed", "adapter_version", "last_trigger")}
                        | {"fill": d["window"]["fill"]})
        if not unserved:
            return {"languages": rows}
        return {"languages": rows, "unserved": unserved_status(daemon)}  # a failure is named in its "error"

    @app.get("/v1/languages/{lang}")
    def language(lang: str) -> dict[str, Any]:
        return daemon.describe(known(lang))

    @app.post("/v1/languages/{lang}/pause", dependencies=[Depends(require_token)])
    def pause(lang: str) -> dict[str, Any]:
        daemon.pause(known(lang))
        return {"language": lang, "paused": True}

    @app.post("/v1/languages/{lang}/resume", dependencies=[Depends(require_token)])
    def resume(lang: str) -> dict[str, Any]:
        stuck = daemon.resume(known(lang))  # a stuck language resumes on its next check (any replica's)
        return {"language": lang, "paused": False, "stuck": stuck}

    @app.post("/v1/languages/{lang}/trigger", dependencies=[Depends(require_token)])
    async def trigger(lang: str) -> JSONResponse:
        known(lang)
        daemon.request_trigger(lang)
        result = await run_in_threadpool(daemon.check, lang)  # acts now if this replica holds the lease
        body = {"language": lang, "state": result.state, "fired": result.fired, "detail": result.detail,
                "job_id": result.job.job_id if result.job else None}
        if result.fired:
            return JSONResponse(body, status_code=200)
        if result.state == "standby":
            body["detail"] = "queued: the replica holding the lease fires on its next check"
            return JSONResponse(body, status_code=202)
        daemon.cancel_trigger(lang)  # paused, updating, disabled, error: not kept to fire by surprise later
        return JSONResponse(body, status_code=409)

    router_cache: dict[str, Any] = {}  # the Router, built on first use (language ID loads ~1 s), and its age

    @app.post("/v1/route")
    def route(body: RouteRequest) -> dict[str, Any]:  # public like GET: it reads, never mutates
        import time

        from compass.route import Router

        now = time.monotonic()
        if "router" not in router_cache:
            router_cache["router"] = Router.from_config(daemon.config, daemon.languages.current)
            router_cache["at"] = now
        elif now - router_cache["at"] > ROUTE_REFRESH_S:  # the daemon follows no promotions: re-read the pointers
            router_cache["router"].refresh()
            router_cache["at"] = now
        try:
            return router_cache["router"].route(body.text, body.lang).to_dict()
        except RouteError as e:
            raise HTTPException(422, str(e)[:MSG_MAX]) from None

    app.include_router(status_router(daemon))
    return app
