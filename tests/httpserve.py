"""An ASGI app on uvicorn at 127.0.0.1:<free port> in a thread, for tests that need a real HTTP server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def serve(app: Any) -> Iterator[int]:
    """Serve ``app`` on a free port until the block ends; yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serve_at(app, port) as p:
        yield p


@contextlib.contextmanager
def serve_at(app: Any, port: int) -> Iterator[int]:
    """Serve ``app`` at 127.0.0.1:``port`` (chosen before the server exists: a target that comes up late)."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started or not thread.is_alive():
            break
        thread.join(0.02)
    assert srv.started, "uvicorn did not start"
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)
