"""The compass daemon: scheduler, drift trigger, worker and HTTP API, plus the ``compass`` CLI."""
