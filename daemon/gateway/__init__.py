"""`compass gateway`: an OpenAI-compatible proxy in front of any OpenAI-compatible server that routes each request
to its language's adapter and produces the query events (issue 17). Pointing an app at it is the integration."""

from daemon.gateway.service import Gateway, GatewayError

__all__ = ["Gateway", "GatewayError"]
