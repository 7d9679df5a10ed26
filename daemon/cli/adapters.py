"""``compass adapters list|show|promote|rollback|export``: inspect the adapter registry, move a language's pointer
and export a version for servers outside compass (vLLM, SGLang: ``export --format peft``, or ``--merge``).

A manual ``promote`` is ops overriding the gate; it is recorded as ``gate={"outcome": "manual", ...}`` in the
language's promotion history so the override stays visible.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Versioned per-language adapters: list, show, promote, roll back, export.", no_args_is_help=True)
REGISTRY = typer.Option(None, "--registry", "-r",
                        help="registry root: a directory or an fsspec URL such as s3://bucket/adapters "
                             "(default: adapters.registry from the service config)")
CONFIG = typer.Option(None, "--config", "-c", help="service config YAML (default: configs/default.yaml)")


def _registry(registry: str | None, config: Path | None):
    from compass.registry import AdapterRegistry

    if registry is None:
        from infra.settings import load_service_config

        registry = load_service_config(config).adapters.registry
    return AdapterRegistry(registry)


def _pointer(registry: str | None, config: Path | None, lang: str) -> tuple[Any, str, str | None]:
    """The registry, LANG normalised and its current version: where promote and rollback start."""
    reg = _registry(registry, config)
    lang = _lang(lang)
    return reg, lang, reg.current(lang)


def _lang(lang: str) -> str:
    from compass import langcodes

    try:
        return langcodes.normalize(lang)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="LANG") from None


@app.command("list")
def list_(
    lang: str | None = typer.Argument(None, help="language code; omit to list every language"),
    registry: str | None = REGISTRY,
    config: Path | None = CONFIG,
) -> None:
    """List languages (with their current version), or the versions of LANG (current one marked '*')."""
    reg = _registry(registry, config)
    if lang is None:
        langs = reg.languages()
        if not langs:
            typer.echo(f"no adapters in {reg.url}")
        for code in langs:
            typer.echo(f"{code}\tcurrent={reg.current(code) or '-'}\tversions={len(reg.versions(code))}")
        return
    lang = _lang(lang)
    current = reg.current(lang)
    versions = reg.versions(lang)
    if not versions:
        typer.echo(f"{lang}: no versions in {reg.url}")
    for v in versions:
        _, _, m = reg.read_version(lang, v)
        mark = "*" if v == current else " "
        typer.echo(f"{mark} {v}\tparent={m.parent or '-'}\tcodebook={m.codebook_version}\tcreated={m.created_at}")


@app.command()
def show(
    lang: str = typer.Argument(..., help="language code"),
    version: str | None = typer.Argument(None, help="version (default: the current one)"),
    registry: str | None = REGISTRY,
    config: Path | None = CONFIG,
) -> None:
    """Print the manifest of a version as JSON, with its files and promotions."""
    reg = _registry(registry, config)
    lang = _lang(lang)
    version = version or reg.current(lang)
    if version is None:
        typer.echo(f"{lang}: nothing promoted yet; name a version from `compass adapters list {lang}`", err=True)
        raise typer.Exit(1)
    tensors, adapter_config, manifest = reg.read_version(lang, version)
    out = manifest.to_dict()
    out["current"] = version == reg.current(lang)
    out["files"] = reg.files(lang, version)
    out["tensors"] = len(tensors)
    out["adapter_config"] = adapter_config
    out["promotions"] = [r for r in reg.history(lang) if r["version"] == version]
    typer.echo(json.dumps(out, indent=2, sort_keys=True))


@app.command()
def promote(
    lang: str = typer.Argument(..., help="language code"),
    version: str = typer.Argument(..., help="version to serve"),
    reason: str = typer.Option(..., "--reason", help="why the gate is bypassed (kept in the history)"),
    registry: str | None = REGISTRY,
    config: Path | None = CONFIG,
) -> None:
    """Point LANG at VERSION by hand, bypassing the gate (recorded as outcome 'manual')."""
    reg, lang, before = _pointer(registry, config, lang)
    reg.promote(lang, version, {"outcome": "manual", "reasons": [reason], "by": _user()})
    typer.echo(f"{lang}: current {before or '-'} -> {version} (manual)")


@app.command()
def rollback(
    lang: str = typer.Argument(..., help="language code"),
    to: str | None = typer.Option(None, "--to", help="version to return to (default: the previously promoted one)"),
    reason: str = typer.Option("", "--reason", help="why (kept in the history)"),
    registry: str | None = REGISTRY,
    config: Path | None = CONFIG,
) -> None:
    """Point LANG back at the previously promoted version, or at --to VERSION."""
    reg, lang, before = _pointer(registry, config, lang)
    after = reg.rollback(lang, to=to, reason=reason)
    typer.echo(f"{lang}: current {before or '-'} -> {after} (rollback)")


@app.command()
def export(
    lang: str = typer.Argument(..., help="language code"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write (new or empty)"),
    version: str | None = typer.Option(None, "--version", help="version (default: the current, promoted one)"),
    fmt: str = typer.Option("peft", "--format", help="peft: adapter_config.json + adapter_model.safetensors, the "
                            "LoRA layout vLLM (--lora-modules) and SGLang (--lora-paths) load"),
    merge: bool = typer.Option(False, "--merge", help="write the base model with the adapter merged in (full "
                               "weights + tokenizer, any server loads it; works for DoRA too)"),
    model: Path | None = typer.Option(None, "--model", help="base model directory for --merge (default: model.path "
                                      "from the service config)"),
    registry: str | None = REGISTRY,
    config: Path | None = CONFIG,
) -> None:
    """Export a version of LANG's adapter for an external server. DoRA versions export only with --merge."""
    from compass.registry.export import FORMATS, ExportError, export_merged, export_peft

    if fmt not in FORMATS:
        raise typer.BadParameter(f"got {fmt!r}; supported: {', '.join(FORMATS)}", param_hint="--format")
    reg = _registry(registry, config)
    lang = _lang(lang)
    try:
        if merge:
            gguf = None
            if model is None:
                from infra.settings import load_service_config

                mcfg = load_service_config(config).model
                if mcfg.path is None:
                    raise typer.BadParameter("no base model: pass --model DIR or set model.path in the service "
                                             "config", param_hint="--model")
                model, gguf = mcfg.path, mcfg.gguf_file
            written = export_merged(reg, lang, out, model, version=version, gguf_file=gguf)
            typer.echo(f"{lang}: merged model written to {written} (load it with from_pretrained or any server)")
        else:
            written = export_peft(reg, lang, out, version=version)
            typer.echo(f"{lang}: peft LoRA written to {written} (e.g. vllm serve BASE --enable-lora "
                       f"--lora-modules {lang}={written})")
    except ExportError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"
