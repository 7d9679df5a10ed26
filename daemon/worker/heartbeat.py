"""A thread that keeps a lease while a long job runs (training, a re-fit): renews it every ttl/3 until stopped."""

from __future__ import annotations

import logging
import threading
from typing import Any

from infra.clients import REDIS_ERRORS
from infra.lease import Lease

log = logging.getLogger(__name__)


class Heartbeat:
    """``with Heartbeat(lease): ...`` renews ``lease`` every ttl/3 (training holds the GIL rarely long enough to
    matter); a lost lease or a failed renewal is logged, the job goes on."""

    def __init__(self, lease: Lease):
        self.lease, self._stop = lease, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat:{lease.key}")

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl_ms / 3000):
            try:
                if not self.lease.renew():
                    log.error("%s: lost the lock while the job runs", self.lease.key)
            except REDIS_ERRORS as e:
                log.warning("%s: heartbeat failed: %s", self.lease.key, e)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
