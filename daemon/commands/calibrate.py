"""``compass calibrate LANG``: propose theta (eq. 6) for a false-alarm budget, by bootstrap of the no-drift JS.

P_ref comes from ``--counts`` or from Redis (``compass ref set``); the window size and the current theta from
languages.yaml. The proposal is printed and written to a *suggestion* file (default ``languages.suggested.yaml``
next to languages.yaml); languages.yaml is never edited: ops review the proposal and copy it over.
See ``compass/drift/calibrate.py`` for the method and its assumptions.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

SUGGESTION_NAME = "languages.suggested.yaml"
_ENTRY = re.compile(r"^  ([A-Za-z0-9_-]+): \{theta: [^}]*\}.*$")  # one language of a suggestion file (our format)

_HEADER = """\
# PROPOSAL ONLY, written by `compass calibrate`; configs/languages.yaml was NOT changed.
# Review each entry, then copy the theta you accept into configs/languages.yaml by hand.
# Method (compass/drift/calibrate.py): n_boot windows of window_size queries drawn from the language's P_ref
# (no drift at all) give the null distribution of JS (eq. 5); with a check every C queries, F false alarms per
# 10k queries allow alpha = F * C / 10000 per check, and theta = the (1 - alpha) quantile of that null.
# Checks are treated as independent (overlapping windows and the trigger's hysteresis make real alarms rarer);
# bursty, non-i.i.d. traffic and a not-yet-full window have a wider null than this estimate.
"""


def _counts(value: str) -> list[float]:
    try:
        return [float(c) for c in value.split(",") if c.strip()]
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; give numbers separated by commas, e.g. 120,80,0",
                                 param_hint="--counts") from None


def _reference_probs(lang: str, config: Path | None) -> tuple[list[float], str]:
    from compass.config import load_service_config
    from consumers.clients import redis_client
    from daemon.reference import get_reference

    cfg = load_service_config(config)
    ref = get_reference(redis_client(cfg.redis), lang, cfg.redis.key_prefix)
    if ref is None:
        typer.echo(f"{lang}: no P_ref in Redis; set one with `compass ref set {lang} --counts ...` or pass --counts",
                   err=True)
        raise typer.Exit(1)
    return ref.probs, f"P_ref of adapter {ref.adapter_version} (codebook {ref.codebook_version})"


def write_suggestion(path: Path, lang: str, line: str) -> None:
    """Write ``path`` with our header and ``lang``'s entry; entries of other languages already there are kept."""
    kept: list[str] = []
    if path.exists():
        for old in path.read_text(encoding="utf-8").splitlines():
            m = _ENTRY.match(old)
            if m and m.group(1) != lang:
                kept.append(old)
    entries = sorted([*kept, line], key=lambda s: s.split(":", 1)[0].strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_HEADER + "\nlanguages:\n" + "\n".join(entries) + "\n", encoding="utf-8")


def calibrate(
    lang: str = typer.Argument(..., help="language code, e.g. sw"),
    counts: str | None = typer.Option(None, "--counts", help="P_ref as comma-separated per-bucket counts, noise "
                                      "bucket last, e.g. 120,80,0 (default: read P_ref from Redis)"),
    false_alarms_per_10k: float = typer.Option(1.0, "--false-alarms-per-10k", help="false alarms allowed per "
                                               "10,000 queries when nothing drifts"),
    check_every: int = typer.Option(100, "--check-every", min=1, help="queries between two checks"),
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="bootstrap windows drawn"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    languages: Path | None = typer.Option(None, "--languages", help="languages.yaml, read only (default: "
                                          "configs/languages.yaml)"),
    suggestion: Path | None = typer.Option(None, "--write-suggestion", help="where to write the proposal (default: "
                                           "languages.suggested.yaml next to the languages file)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="service config YAML (for Redis)"),
) -> None:
    """Propose theta for LANG from a bootstrap of its no-drift JS; writes a suggestion file, never languages.yaml."""
    from compass import langcodes
    from compass.config import DEFAULT_LANGUAGES, load_languages
    from compass.drift.calibrate import CalibrationError, propose_theta

    lang = langcodes.normalize(lang)
    languages = languages or DEFAULT_LANGUAGES
    suggestion = suggestion or languages.parent / SUGGESTION_NAME
    settings = load_languages(languages).get(lang)
    if counts is not None:
        p_ref, source = _counts(counts), f"--counts {counts}"
    else:
        p_ref, source = _reference_probs(lang, config)
    try:
        prop = propose_theta(p_ref, settings.window_size, check_every, false_alarms_per_10k, n_boot=n_boot, seed=seed)
    except CalibrationError as e:
        raise typer.BadParameter(str(e)) from None

    typer.echo(f"{lang}: current theta {settings.theta:g} bits (window_size {settings.window_size}, {languages})")
    typer.echo(f"{lang}: proposed theta {prop.theta:.6g} bits = the {prop.quantile:.6g} quantile of {n_boot} "
               f"no-drift windows (alpha {prop.per_check_alpha:.6g} per check every {check_every} queries, "
               f"{false_alarms_per_10k:g} false alarms per 10k queries; P_ref from {source})")
    typer.echo(f"{lang}: null JS mean {prop.null_mean:.6g}, p99 {prop.null_p99:.6g}, max {prop.null_max:.6g} bits")
    if prop.floored:
        typer.echo(f"{lang}: the null is ~0 (one bucket used?); proposed the floor {prop.theta:g}", err=True)
    if not prop.resolved:
        typer.echo(f"{lang}: n_boot * alpha = {n_boot * prop.per_check_alpha:.3g} < 1: the quantile is the largest "
                   f"draw; raise --n-boot above {1 / prop.per_check_alpha:.0f} for a resolved estimate", err=True)

    line = (f"  {lang}: {{theta: {prop.theta:.6g}}}  # was {settings.theta:g}; window {settings.window_size}, check "
            f"every {check_every}, {false_alarms_per_10k:g}/10k -> q {prop.quantile:.6g} of {n_boot} draws "
            f"(seed {seed}); null mean {prop.null_mean:.4g}, p99 {prop.null_p99:.4g}")
    write_suggestion(suggestion, lang, line)
    typer.echo(f"{lang}: suggestion written to {suggestion} (languages.yaml unchanged; review and copy by hand)")
