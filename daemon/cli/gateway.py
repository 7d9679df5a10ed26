"""``compass gateway --upstream URL``: the OpenAI-compatible proxy on ``gateway.host:port`` (daemon/gateway/).

Point any OpenAI client at it (``base_url="http://HOST:PORT/v1"``) instead of the model server: ``model: "auto"``
gets the request's language's adapter (the routing table the adapter sync writes) or the base model, and every
answered query is produced to ``kafka.queries_topic`` for the monitor, off the request path.
"""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")
UPSTREAM = typer.Option(None, "--upstream", "-u", help="the OpenAI-compatible server, e.g. http://127.0.0.1:8000 "
                        "(vLLM, SGLang, llama.cpp's server, compass serve); default: gateway.upstream")
PORT = typer.Option(None, "--port", "-p", min=1, max=65535, help="port to listen on (default: gateway.port)")


def gateway(upstream: str | None = UPSTREAM, config: Path | None = CONFIG, languages: Path | None = LANGUAGES,
            port: int | None = PORT, quiet: bool = verbosity.QUIET, verbose: bool = verbosity.VERBOSE) -> None:
    """Proxy OpenAI's API to an upstream server, routing by language and producing the query events."""
    verbosity.apply(quiet, verbose)
    import uvicorn

    from compass.languages import load_languages
    from daemon.gateway import Gateway
    from daemon.gateway.app import create_gateway_app
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    gw = Gateway(cfg, load_languages(languages), upstream)
    gw.start()
    host, listen = gw.settings.host, port or gw.settings.port
    typer.echo(f"compass gateway: http://{host}:{listen}/v1 -> {gw.upstream.root} (base model {gw.base_model}); "
               f"events to {cfg.kafka.queries_topic}")
    try:
        uvicorn.run(create_gateway_app(gw), host=host, port=listen, log_config=None, log_level=None)
    finally:
        gw.close()
