"""`compass sync`: promoted adapter versions loaded on the serving targets and the gateway's routing table switched
(issue 17); see service.py."""

from daemon.sync.service import AdapterSync

__all__ = ["AdapterSync"]
