"""The I/O layer: Kafka and Redis clients, leases, locks, dead letters, Redis keys and the stores built on them.

Consumers, the scheduler, the worker and the serving side all reach Kafka and Redis through this package; the
method (``compass/``) never does.
"""
