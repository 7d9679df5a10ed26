"""``compass status``: the daemon's view of every language in a terminal (for an SSH session; the page is ``GET /``).

Reads the daemon's HTTP API: ``GET /v1/languages?unserved=true`` (state, JS, thresholds, fill, adapter, and the
unserved languages) and ``GET /v1/status?points=0&events=1`` (the detector's statistic, the last event).
``--watch`` redraws in place every ``--interval`` seconds until Ctrl-C.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from compass.errors import CompassError
from infra.logs import human, human_pct

DEFAULT_URL = "http://127.0.0.1:8470"
COLUMNS = ("language", "state", "JS / statistic", "threshold", "window", "adapter", "last event")
UNSERVED_COLUMNS = ("unserved", "queries", "share", "status")


class DaemonUnreachable(CompassError):
    pass


def fetch(client: httpx.Client, url: str) -> dict[str, Any]:
    """Both API reads, joined: ``{"languages": [...], "unserved": {...}, "status": {lang: card}}``."""
    base = url.rstrip("/")
    try:
        langs = client.get(f"{base}/v1/languages", params={"unserved": "true"})
        langs.raise_for_status()
        cards = client.get(f"{base}/v1/status", params={"points": 0, "events": 1})
        cards.raise_for_status()
    except httpx.HTTPStatusError as e:
        raise DaemonUnreachable(f"the daemon at {base} answered {e.response.status_code} to {e.request.url}; is "
                                f"that a compass daemon? Point --url at its http.host:http.port") from e
    except httpx.HTTPError as e:
        raise DaemonUnreachable(f"no compass daemon answers at {base} ({type(e).__name__}: {e}); start it with "
                                f"`compass daemon` or point --url at its http.host:http.port") from e
    body = langs.json()
    return {"languages": body["languages"], "unserved": body.get("unserved") or {},
            "status": {c["language"]: c for c in cards.json().get("languages", [])}}


def _last_event(card: dict[str, Any]) -> str:
    if card.get("error"):
        return f"error: {card['error']}"
    timeline = card.get("timeline") or []
    if not timeline:
        return "-"
    ev = timeline[0]
    return f"{ev.get('type')} at {time.strftime('%H:%M:%S', time.localtime(ev.get('at') or 0))}"


def rows(snapshot: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per language, in ``COLUMNS`` order, numbers at 3 significant digits."""
    out = []
    for row in snapshot["languages"]:
        card = snapshot["status"].get(row["language"], {})
        detector = card.get("detector") or {}
        if detector.get("mode") == "sequential":  # CUSUM: its statistic against the alarm level, not JS
            reading = f"stat {human(detector.get('statistic'))}"
        else:
            reading = human(row.get("js"))
        threshold = row.get("effective_threshold")
        shown = human(threshold) if threshold is not None else f"theta {human(row.get('theta'))}"
        state = row.get("state") or "not checked"
        if not row.get("enabled"):
            state = "disabled"
        window = card.get("window") or {}
        fill = human_pct(row.get("fill")).lstrip("+")
        if window:
            fill = f"{fill} ({window.get('size')}/{window.get('window_size')})"
        out.append((row["language"], state, reading, shown, fill, row.get("adapter_version") or "base model",
                    _last_event(card)))
    return out


def unserved_rows(snapshot: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(u["language"], str(u.get("count")), human_pct(u.get("share")).lstrip("+"), u.get("status") or "-")
            for u in snapshot["unserved"].get("languages", [])]


def render(snapshot: dict[str, Any] | None, url: str, error: str | None = None) -> Group:
    """The view: languages, then unserved languages (or why they could not be read); an error above if any."""
    parts: list[Any] = [Text(f"compass status: {url}  {time.strftime('%H:%M:%S')}", style="bold")]
    if error:
        parts.append(Text(f"error: {error}", style="red"))
    if snapshot is not None:
        table = Table(*COLUMNS, title="languages", title_justify="left")
        for r in rows(snapshot):
            table.add_row(*r)
        parts.append(table)
        unserved = Table(*UNSERVED_COLUMNS, title="unserved languages", title_justify="left")
        for r in unserved_rows(snapshot):
            unserved.add_row(*r)
        parts.append(unserved)
        if snapshot["unserved"].get("error"):
            parts.append(Text(f"unserved languages unreadable: {snapshot['unserved']['error']}", style="yellow"))
        elif not unserved.row_count:
            parts.append(Text("no unserved languages", style="dim"))
    return Group(*parts)


def status(
    url: str = typer.Option(DEFAULT_URL, "--url", help="the daemon's HTTP API (http.host:http.port)"),
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh in place until Ctrl-C"),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="seconds between refreshes under --watch"),
) -> None:
    """Every language's state, JS vs effective threshold, window fill, adapter, last event; unserved languages."""
    console = Console()
    with httpx.Client(timeout=5.0) as client:
        if not watch:
            console.print(render(fetch(client, url), url))
            return
        snapshot: dict[str, Any] | None = None
        with Live(render(None, url), console=console, auto_refresh=False, screen=False) as live:
            try:
                while True:
                    try:
                        snapshot, error = fetch(client, url), None
                    except DaemonUnreachable as e:  # keep the last view; the daemon may be restarting
                        error = str(e)
                    live.update(render(snapshot, url, error), refresh=True)
                    time.sleep(interval)
            except KeyboardInterrupt:
                pass
