"""``compass calibrate LANG``: a threshold (eq. 6) for a false-alarm budget, from recorded live traffic.

With recorded traffic (``--labels FILE`` of cluster ids, or, by default, the language's monitor window in Redis
when P_ref also comes from Redis) this runs exactly what the daemon runs at the end of a burn-in
(``compass.drift.calibrated.calibrate_js``, ``threshold: calibrated`` in languages.yaml): the recorded queries,
split into checks of ``--check-every``, are the burn-in, and theta is the quantile of no-drift windows of *that*
traffic against P_ref, so the eq. 3 offset and the traffic's burstiness are inside it. With ``--counts`` and no
``--labels`` only P_ref is known, and the older bootstrap from P_ref alone is used
(``compass/drift/calibrate.py``): it cannot see the offset of live traffic from P_ref and says so.

The proposal is printed and written to a *suggestion* file (default ``languages.suggested.yaml`` next to
languages.yaml); languages.yaml is never edited: ops review the proposal and copy it over (or set
``threshold: calibrated`` and let the daemon recalibrate after every new reference).

Sampling (issue 20) does not change the proposal: window, checks and budget count kept queries, and the no-drift
JS of n kept queries is the one at rate 1 (``compass/drift/calibrate.py`` says why). With ``--arrival-rate Q`` the
report also says what those counts mean in seconds at the language's sampling (its ``sampling`` in
languages.yaml, or ``--sampling-rate`` / ``--max-per-second``): a check, a full window, the false-alarm spacing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def _reference_probs(lang: str, config: Path | None) -> tuple[list[float], str, list[int]]:
    """P_ref, where it came from, and the language's recorded window (bucket ids, oldest first) from Redis."""
    from infra.clients import redis_client
    from infra.keys import Keys
    from infra.reference import get_reference
    from infra.settings import load_service_config

    cfg = load_service_config(config)
    client = redis_client(cfg.redis)
    ref = get_reference(client, lang, cfg.redis.key_prefix)
    if ref is None:
        typer.echo(f"{lang}: no P_ref in Redis; set one with `compass ref set {lang} --counts ...` or pass --counts",
                   err=True)
        raise typer.Exit(1)
    window = [int(b) for b in client.lrange(Keys(cfg.redis.key_prefix).window(lang)["window"], 0, -1)]
    return ref.probs, f"P_ref of adapter {ref.adapter_version} (codebook {ref.codebook_version})", window


def read_labels(path: Path) -> list[int]:
    """Cluster ids of recorded queries, oldest first: one integer per line, or one JSON array."""
    import json

    text = path.read_text(encoding="utf-8").strip()
    try:
        values = json.loads(text) if text.startswith("[") else [int(x) for x in text.split()]
    except ValueError as e:
        raise typer.BadParameter(f"{path}: {e}; give one cluster id per line or a JSON array of ints",
                                 param_hint="--labels") from None
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise typer.BadParameter(f"{path}: expected cluster ids >= 0 (noise = the last bucket); got "
                                 f"{str(values[:5])[:80]}", param_hint="--labels")
    return values


def _sampling(arrival_rate: float | None, rate: float | None, cap: float | None, settings) -> Any:
    """The language's sampling at ``arrival_rate`` (None without one): the flags, else its languages.yaml's."""
    from compass.drift.timing import Sampling

    if rate is not None and cap is not None:
        raise typer.BadParameter(f"--sampling-rate {rate} and --max-per-second {cap}: give one, a fixed share or a "
                                 "cap that adapts to the traffic", param_hint="--max-per-second")
    if arrival_rate is None:
        if rate is not None or cap is not None:
            raise typer.BadParameter("the sampling only converts counts to seconds; give the language's queries a "
                                     "second with --arrival-rate, e.g. --arrival-rate 10", param_hint="--arrival-rate")
        return None
    if rate is None and cap is None:
        rate, cap = settings.sampling.rate, getattr(settings.sampling, "max_per_second", None)
    flag = {"arrival_rate": "--arrival-rate", "rate": "--sampling-rate", "max_per_second": "--max-per-second"}
    try:
        return Sampling(arrival_rate, 1.0 if rate is None else rate, cap)
    except ValueError as e:
        name, _, rest = str(e).partition(":")
        raise typer.BadParameter(rest.strip(), param_hint=flag.get(name, name)) from None


def _seconds(lang: str, sampling: Any, window_size: int, check_every: int, false_alarm_every: float) -> None:
    """What the kept-query counts of the proposal are in seconds (nothing without --arrival-rate)."""
    if sampling is None:
        return
    from compass.drift.calibrate import in_seconds

    t = in_seconds(sampling, window_size, check_every, false_alarm_every)
    how = (f"capped at {sampling.max_per_second:g}/s" if sampling.max_per_second is not None
           else f"kept at rate {sampling.rate:g}")
    typer.echo(f"{lang}: at {sampling.arrival_rate:g} queries/s {how} ({t.kept_per_s:.4g} kept/s): a check every "
               f"{check_every} kept queries = {t.check_s:,.1f} s, a full window of {window_size} = "
               f"{t.window_s:,.1f} s (delays in samples take samples / {t.kept_per_s:.4g} s), one false alarm per "
               f"{t.false_alarm_every:,.0f} kept queries = {t.false_alarm_every_s:,.0f} s "
               f"({t.false_alarm_every_s / 3600:,.2f} h); the threshold is the same at any sampling rate")


def _live(lang: str, p_ref: list[float], labels: list[int], check_every: int, settings, budget: float,
          seed: int, source: str, suggestion: Path, sampling: Any = None) -> None:
    import numpy as np

    from compass.drift.calibrated import BurnIn, calibrate_js

    k = len(p_ref)
    if max(labels) >= k:
        raise typer.BadParameter(f"cluster id {max(labels)} is outside P_ref's {k} buckets; record the labels with "
                                 "the reference's codebook", param_hint="--labels")
    burn = BurnIn()
    for i in range(0, len(labels), check_every):
        burn = burn.add(np.asarray(labels[i:i + check_every]), k, None)
    thr = calibrate_js(np.asarray(p_ref, dtype=np.float64), burn, settings.window_size, settings.min_samples,
                       budget, seed=seed)
    typer.echo(f"{lang}: current theta {settings.theta:g} bits (window_size {settings.window_size})")
    typer.echo(f"{lang}: proposed theta {thr.theta_full:.6g} bits for a full window ({thr.theta_min:.6g} at "
               f"min_samples {settings.min_samples}): {thr.how}; P_ref from {source}")
    typer.echo(f"{lang}: no-drift JS of live traffic against P_ref: mean {thr.null_mean:.6g} bits (the eq. 3 offset "
               "plus sampling noise)")
    _seconds(lang, sampling, settings.window_size, check_every, budget)
    if len(labels) < settings.window_size:
        typer.echo(f"{lang}: only {len(labels)} recorded queries, fewer than one window ({settings.window_size}); "
                   "the live mix is uncertain: record more before relying on it", err=True)
    line = (f"  {lang}: {{theta: {thr.theta_full:.6g}}}  # was {settings.theta:g}; live traffic ({len(labels)} "
            f"queries, {check_every} per check, dispersion {thr.dispersion:.2f}), one false alarm per "
            f"{budget:,.0f} queries; or set threshold: calibrated")
    write_suggestion(suggestion, lang, line)
    typer.echo(f"{lang}: suggestion written to {suggestion} (languages.yaml unchanged; review and copy by hand)")


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
    labels: Path | None = typer.Option(None, "--labels", help="recorded live traffic: cluster ids of the language's "
                                       "queries, oldest first (one per line or a JSON array); default: the "
                                       "language's window in Redis when P_ref comes from Redis"),
    false_alarm_every: float | None = typer.Option(None, "--false-alarm-every", help="budget with live traffic: "
                                                   "expected queries between false alarms (default: the "
                                                   "language's false_alarm_every)"),
    false_alarms_per_10k: float = typer.Option(1.0, "--false-alarms-per-10k", help="budget of the P_ref-only "
                                               "bootstrap (--counts without --labels): false alarms per 10,000 "
                                               "queries"),
    check_every: int = typer.Option(100, "--check-every", min=1, help="queries between two checks"),
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="bootstrap windows drawn"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    languages: Path | None = typer.Option(None, "--languages", help="languages.yaml, read only (default: "
                                          "configs/languages.yaml)"),
    suggestion: Path | None = typer.Option(None, "--write-suggestion", help="where to write the proposal (default: "
                                           "languages.suggested.yaml next to the languages file)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="service config YAML (for Redis)"),
    arrival_rate: float | None = typer.Option(None, "--arrival-rate", help="the language's queries a second: also "
                                              "report the check spacing, window fill and false-alarm spacing in "
                                              "seconds (the threshold does not depend on it)"),
    sampling_rate: float | None = typer.Option(None, "--sampling-rate", help="with --arrival-rate: the share of "
                                               "queries kept (default: the language's sampling.rate)"),
    max_per_second: float | None = typer.Option(None, "--max-per-second", help="with --arrival-rate: or the cap on "
                                                "queries kept a second (default: the language's sampling)"),
) -> None:
    """Propose theta for LANG from a bootstrap of its no-drift JS; writes a suggestion file, never languages.yaml."""
    from compass import langcodes
    from compass.drift.calibrate import CalibrationError, propose_theta
    from compass.languages import DEFAULT_LANGUAGES, load_languages

    lang = langcodes.normalize(lang)
    languages = languages or DEFAULT_LANGUAGES
    suggestion = suggestion or languages.parent / SUGGESTION_NAME
    settings = load_languages(languages).get(lang)
    sampling = _sampling(arrival_rate, sampling_rate, max_per_second, settings)
    recorded: list[int] = []
    if counts is not None:
        p_ref, source = _counts(counts), f"--counts {counts}"
    else:
        p_ref, source, recorded = _reference_probs(lang, config)
    if labels is not None:
        recorded = read_labels(labels)
    if recorded:
        from compass.drift.calibrate import CalibrationError

        try:
            _live(lang, p_ref, recorded, check_every, settings, false_alarm_every or settings.false_alarm_every,
                  seed, source, suggestion, sampling)
        except CalibrationError as e:
            raise typer.BadParameter(str(e)) from None
        return
    typer.echo(f"{lang}: no recorded traffic (--labels, or a window in Redis): the null is drawn from P_ref alone "
               "and cannot see how far live traffic sits from an eq. 3 reference; prefer --labels", err=True)
    try:
        prop = propose_theta(p_ref, settings.window_size, check_every, false_alarms_per_10k, n_boot=n_boot, seed=seed)
    except CalibrationError as e:
        raise typer.BadParameter(str(e)) from None

    typer.echo(f"{lang}: current theta {settings.theta:g} bits (window_size {settings.window_size}, {languages})")
    typer.echo(f"{lang}: proposed theta {prop.theta:.6g} bits = the {prop.quantile:.6g} quantile of {n_boot} "
               f"no-drift windows (alpha {prop.per_check_alpha:.6g} per check every {check_every} queries, "
               f"{false_alarms_per_10k:g} false alarms per 10k queries; P_ref from {source})")
    typer.echo(f"{lang}: null JS mean {prop.null_mean:.6g}, p99 {prop.null_p99:.6g}, max {prop.null_max:.6g} bits")
    _seconds(lang, sampling, settings.window_size, check_every, 10_000 / false_alarms_per_10k)
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
