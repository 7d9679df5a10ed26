"""Per-language drift and adaptation settings (``configs/languages.yaml``), validated into frozen models.

``defaults`` apply to every language and ``languages.<code>`` overrides them key by key; language keys are
written in compass's code scheme (``compass/langcodes.py``). Every problem in a file is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compass import langcodes
from compass.paths import REPO_ROOT
from compass.validation import Frozen, read_yaml, validate_file

DEFAULT_LANGUAGES = REPO_ROOT / "configs" / "languages.yaml"


def _window_rule(min_samples: int, window_size: int) -> str | None:
    # the trigger waits for min_samples queries in W_recent (eq. 4), which never holds more than window_size
    if min_samples > window_size:
        return f"min_samples ({min_samples}) must not exceed window_size ({window_size})"
    return None


class SamplingSettings(Frozen):
    """Sampling of the language's monitored queries (compass/sampling.py): the consumers keep the queries whose
    id hashes below the rate, before embedding; the others are counted (compass_consumer_sampled_out_total) and
    committed, never embedded nor put in the window. Either a fixed ``rate``, or ``max_per_second``: a cap on the
    queries kept a second, the rate adapting to the traffic (infra/sampling.py); not both."""

    rate: float = Field(
        1.0, gt=0.0, le=1.0, description="share of the language's queries monitored (embedded, put in the window), "
        "chosen by a stable hash of the event id; in (0, 1], 1 = every query"
    )
    max_per_second: float | None = Field(
        None, gt=0.0, le=1_000_000.0, description="at most this many of the language's queries monitored a "
        "second, in (0, 1000000] (the rate adapts per consumer.sampling_bucket_s to the traffic; a language "
        "under the cap keeps every query); null = no cap. Give either this or rate, not both"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> SamplingSettings:
        if self.max_per_second is not None and self.rate < 1.0:
            raise ValueError(
                f"sampling has both rate ({self.rate}) and max_per_second ({self.max_per_second}); give one: a fixed "
                "share (rate) or a cap that adapts to the traffic (max_per_second)")
        return self

    @property
    def sampled(self) -> bool:
        """Whether this language is sampled at all (a rate < 1 or a cap)."""
        return self.rate < 1.0 or self.max_per_second is not None


class AdapterSettings(Frozen):
    """The kind of adapter the worker trains for the language (compass/adapt/model.py ``lora_config``)."""

    kind: Literal["dora", "lora"] = Field(
        "dora", description="dora (weight-decomposed LoRA, §4.3) or lora (plain LoRA: what vLLM and SGLang load, "
        "see `compass adapters export --format peft`)"
    )


class LanguageSettings(Frozen):
    enabled: bool = Field(True, description="true or false")
    theta: float = Field(0.15, gt=0.0, le=1.0, description="a JS divergence threshold in bits, in (0, 1]")
    min_samples: int = Field(200, ge=1, description="an integer >= 1, at most window_size")
    window_size: int = Field(2000, ge=1, le=10_000_000, description="an integer in [1, 10000000]")
    cooldown_s: float = Field(3600.0, ge=0.0, description="seconds >= 0")
    settle_s: float = Field(
        0.0, ge=0.0, description="seconds between a drift detection and freezing the window for the update job "
        "(more post-shift queries in it); >= 0, 0 = at once",
    )
    budget: float = Field(0.8, gt=0.0, le=10.0, description="the budget factor B, in (0, 10]")
    rearm_ratio: float = Field(
        0.8, gt=0.0, le=1.0, description="hysteresis: after a trigger, re-arm once JS < rearm_ratio * theta; in (0, 1]"
    )
    quality_signal: Literal["none", "adwin", "page_hinkley"] = Field(
        "none", description="none, adwin or page_hinkley: a river drift detector on the language's quality stream"
    )
    combine: Literal["js_only", "any", "all"] = Field(
        "js_only", description="js_only, any or all: how the quality signal joins the JS trigger (eq. 6)"
    )
    detector: Literal["js", "sequential"] = Field(
        "js", description="js (JS over the window against theta, eq. 6) or sequential (CUSUM on the stream of "
        "cluster ids, compass/drift/sequential.py)"
    )
    threshold: Literal["fixed", "calibrated"] = Field(
        "fixed", description="fixed (theta as given) or calibrated (learned on live traffic after each new "
        "reference for the false_alarm_every budget, compass/drift/calibrated.py); detector js only"
    )
    false_alarm_every: float = Field(
        50_000, ge=100, description="false-alarm budget of calibrated thresholds and the sequential detector: "
        "expected queries between false alarms, >= 100"
    )
    burn_in: int | None = Field(
        None, ge=1, description="queries observed after each new reference before a calibrated threshold or "
        "the sequential detector takes over (theta guards meanwhile); >= 1, default window_size"
    )
    max_rejections: int = Field(
        3, ge=1, le=100, description="updates in a row that do not promote (rejected, failed, timed out) before "
        "the language is `stuck` until ops act; in [1, 100]"
    )
    backoff_max_s: float = Field(
        86_400.0, ge=0.0, description="cap of the wait after an unsuccessful update (cooldown_s doubled per "
        "failure in a row), seconds >= 0"
    )
    sampling: SamplingSettings = Field(
        SamplingSettings(), description="a mapping {rate: a float in (0, 1]} or {max_per_second: a number > 0}: "
        "the share of queries monitored, fixed or capped"
    )
    adapters: AdapterSettings = Field(
        AdapterSettings(), description="a mapping {kind: dora or lora}: the adapter type trained for the language"
    )
    _rules = (_window_rule,)

    @property
    def burn_in_queries(self) -> int:
        """Queries of the burn-in after a new reference (``burn_in``, default one window)."""
        return self.window_size if self.burn_in is None else self.burn_in

    def backoff_s(self, failures: int) -> float:
        """Wait before the next update after ``failures`` unsuccessful ones in a row: cooldown_s * 2^(failures-1)."""
        if failures <= 0:
            return 0.0
        return min(self.backoff_max_s, self.cooldown_s * 2.0 ** min(failures - 1, 60))

    @property
    def rearm_below(self) -> float:
        """The JS level under which a fired trigger re-arms (hysteresis)."""
        return self.rearm_ratio * self.theta


def merge_language_defaults(data: Any) -> Any:
    """Raw languages data with ``defaults`` merged key by key under each ``languages.<code>`` entry."""
    if not isinstance(data, Mapping):
        return data
    defaults = data.get("defaults") or {}
    langs = data.get("languages") or {}
    if not isinstance(defaults, Mapping) or not isinstance(langs, Mapping):
        return data
    merged = {}
    for code, over in langs.items():
        if over is None:  # `sw:` with nothing after it means "the defaults"
            over = {}
        merged[code] = {**defaults, **over} if isinstance(over, Mapping) else over
    return {**data, "languages": merged}


class LanguagesConfig(Frozen):
    """Per-language settings: ``defaults`` apply to every language, ``languages.<code>`` overrides them."""

    defaults: LanguageSettings = LanguageSettings()
    languages: dict[str, LanguageSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        return merge_language_defaults(data)

    @property
    def enabled(self) -> list[str]:
        """Codes of the enabled languages, sorted."""
        return sorted(c for c, s in self.languages.items() if s.enabled)

    def get(self, code: str) -> LanguageSettings:
        return self.languages.get(code, self.defaults)


def _language_key_problems(data: Mapping[str, Any]) -> list[str]:
    """Language keys must be written in compass's code scheme, once each (checked apart from pydantic
    so that key problems and value problems are reported together)."""
    langs = data.get("languages")
    if not isinstance(langs, Mapping):
        return []
    problems = []
    for code in langs:
        try:
            canon = langcodes.normalize(str(code))
        except ValueError as e:
            problems.append(f"languages.{code}: {e}")
            continue
        if canon == langcodes.UNDETERMINED:
            problems.append(f"languages.{code}: 'und' (undetermined) cannot have settings; remove it")
        elif canon != code:
            problems.append(f"languages.{code}: write this language as {canon!r} (see compass/langcodes.py)")
    return problems


def load_languages(path: str | Path | None = None) -> LanguagesConfig:
    """Load ``configs/languages.yaml`` (or ``path``) with defaults merged into each language."""
    path = Path(path) if path else DEFAULT_LANGUAGES
    data = read_yaml(path)
    return validate_file(
        LanguagesConfig, data, str(path), _language_key_problems(data), rules_data=merge_language_defaults(data)
    )
