"""``compass serve``: the multi-adapter model server (§3.2.5) and its HTTP API on ``serving.host:port``.

Loads ``model.path`` once, every enabled language's current adapter once, follows promotions on
``compass.events`` (with a registry poll as fallback) and answers POST /v1/route and /v1/generate, OpenAI's API
(GET /v1/models, POST /v1/chat/completions, /v1/completions; ``model: "auto"`` routes by language) and, with
``--allow-lora-updates``, vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (daemon/api/openai_compat.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.cli import verbosity

CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")
LANGUAGES = typer.Option(None, "--languages", "-l", help="languages YAML (default: configs/languages.yaml)")
LORA_UPDATES = typer.Option(False, "--allow-lora-updates", help="answer POST /v1/load_lora_adapter and "
                            "/v1/unload_lora_adapter (vLLM's protocol; loads PEFT directories from this machine's "
                            "disk)")
POLL = typer.Option(30.0, "--poll", min=0.1, help="seconds between registry polls (fallback to Kafka events)")


def serve(config: Path | None = CONFIG, languages: Path | None = LANGUAGES, poll: float = POLL,
          allow_lora_updates: bool = LORA_UPDATES, quiet: bool = verbosity.QUIET,
          verbose: bool = verbosity.VERBOSE) -> None:
    """Serve language-routed generation over the base model and every language's current adapter."""
    verbosity.apply(quiet, verbose)
    import uvicorn

    from compass.languages import load_languages
    from daemon.api.serving import create_serving_app
    from daemon.serving import AdapterServer
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    server = AdapterServer(cfg, load_languages(languages))
    server.start_listener(poll_s=poll)
    typer.echo(f"compass serve: {len(server.router.table)} adapter(s) loaded; http://{cfg.serving.host}:"
               f"{cfg.serving.port}")
    try:
        app = create_serving_app(server, lora_updates=allow_lora_updates)
        uvicorn.run(app, host=cfg.serving.host, port=cfg.serving.port,
                    log_config=None, log_level=None)  # our logging: uvicorn.access at WARNING unless --verbose
    finally:
        server.close()
