"""``python -m daemon.cli`` runs the ``compass`` command (the consumer pool and tests start workers this way)."""

from daemon.cli.main import main

main()
