"""Offline replay of a labelled multi-period stream through the drift lifecycle (paper App. D.2, Table 11).

A stream is a sequence of queries of one language, each labelled with the period it belongs to (T1..T5;
``compass/drift/stream.py`` builds and reads them). ``simulate`` replays it once per detector of
``SimulationConfig.detectors`` (and per theta of the sweep for the fixed-theta ``js`` detector) and scores
every run against the known period boundaries (``compass/drift/scoring.py``): one ``SweepRow`` per
(detector, theta).

The simulated lifecycle (``compass/drift/replay.py``) is production's:
  * clustering: one k-means codebook, fitted once before the stream starts (``fit_on``): on the stream's
    distinct texts ("pool", the analogue of COMPASS clustering its eval + auxiliary pool in the initial phase,
    which spans topics the first adapter is not trained on), or on the reference part only ("reference").
    Every batch is assigned with ``predict`` when it arrives;
  * decisions: per ``increment`` samples, one ``compass.drift.lifecycle.step`` with the language's
    ``LanguageSettings`` (``SimulationConfig.settings`` builds them; ``from_settings`` takes a language's
    settings as the daemon reads them): P_mon of the last ``window_size`` samples (eq. 4), JS (eq. 5), the
    detector (fixed theta, a calibrated theta, or the sequential CUSUM), min_samples, hysteresis, cooldown and
    settle. Time is the sample count: every ``*_s`` setting is read in (kept) samples;
  * sampling (issue 20; ``compass/drift/timing.py``): the language's queries arrive at ``arrival_rate`` a second
    and are sampled as the consumers sample them, ``compass.sampling.keep`` on each query's event id (``ids=``,
    default the stable ``sim:{lang}:{i}``) at ``sampling_rate``, or under the cap ``max_per_second`` at the rate
    of each ``sampling_bucket_s`` bucket. The lifecycle sees the kept queries only: windows, checks, delays and
    ``n_samples`` count kept queries, and the stream's transitions are the first kept query of each new period.
    The codebook fitted on the pool and the default pool are the offered stream's distinct texts (offline data
    that sampling does not thin, so a rate changes nothing else). Every row also gives its times in seconds
    (``timing.timed``): a delay in seconds is the offered queries from the change through the detecting kept
    one, / ``arrival_rate``; the false-alarm spacing in kept samples and in seconds of traffic. At rate 1 and
    no cap the replay is the unsampled one, query for query;
  * P_ref (eq. 3, ``compass/drift/eq3.py``): a cycle's training data is its usage part plus the auxiliary rows
    COMPASS selects from a pool for it, and P_ref = counts(usage part) + counts(selected) per bucket. The initial
    cycle's usage part (and D_t) are the stream's first ``reference_samples`` samples, and its reference is in
    place before the first sample arrives (the first adapter was trained before deployment); an update's usage
    part is the window the lifecycle froze when it dispatched. The pool is given (``pool=``; ``compass simulate
    --pool FILE``, a JSONL of {text, lang[, topic, id, meta]} read by ``read_pool``) or the stream's distinct
    texts. ``reference="window"`` keeps the older simplification, P_ref = the usage part's mix alone;
  * an ``update`` is answered by a simulated worker at once: eq. 2 moves the codebook (``eta`` > 0), the new
    eq. 3 reference is installed under a new ref_id, and the worker's reports (started, promoted, finished)
    reach the next check, which re-arms the trigger and starts the cooldown at the update.
  * stale clusters (§6.1, ``recluster="auto"``; ``compass/drift/reclustering.py``): each check reads the far share
    (recent points beyond the codebook's calibrated ``stale_distance_quantile`` distance) and the noise share; past
    ``stale_far_share`` the lifecycle dispatches ``recluster`` and the simulated worker re-fits the codebook on the
    window plus the pool (bounded, at most one per ``recluster_min_interval`` samples), recomputes the last
    cycle's P_ref on it from its rows and restarts the window. ``"off"`` (the default) reads no share: as before.
    Each row counts its re-clusterings (``reclusterings``).

Rows: ``js`` (fixed theta, one row per theta of ``thetas``), ``calibrated`` and ``sequential`` (learned after each
new reference, ``guard_theta`` guarding the burn-in, budget ``false_alarm_every``), ``fixed-interval`` (the
paper's "Fixed" row: an oracle updating at every transition, delay 0) and ``never`` (the static adapter).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError

from compass.drift.eq3 import REFERENCE_MODES, Pool, References, stream_pool
from compass.drift.eq3 import fit_codebook as _fit_codebook
from compass.drift.lifecycle import Limits
from compass.drift.reclustering import RECLUSTER_MODES, Reclustering
from compass.drift.replay import replay
from compass.drift.scoring import (
    BASELINES,
    DETECTORS,
    LIFECYCLE_DETECTORS,
    SweepRow,
    baseline_row,
    make_row,
    score,
)
from compass.drift.stream import (
    CHATTERBOT_PERIODS,
    Stream,
    build_chatterbot_stream,
    read_pool,
    read_stream,
    transitions,
    write_stream,
)
from compass.drift.timing import DEFAULT_ARRIVAL_RATE, DEFAULT_BUCKET_S, Clock, Sampling, stream_ids, timed
from compass.languages import LanguageSettings

if TYPE_CHECKING:
    from compass.cluster.codebook import Codebook

DEFAULT_THETAS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)


def detector_label(settings: LanguageSettings) -> str:
    """The row label of a language's detector: js (fixed theta), calibrated or sequential."""
    if settings.detector == "sequential":
        return "sequential"
    return "calibrated" if settings.threshold == "calibrated" else "js"


@dataclass(frozen=True)
class SimulationConfig:
    """How the stream is replayed and the lifecycle configured; counts and times are in samples.

    The lifecycle fields (window_size ... guard_theta) become ``LanguageSettings`` (``settings``); ``base``
    supplies the other settings fields (enabled, max_rejections, backoff_max_s, combine, ...)."""

    thetas: tuple[float, ...] = DEFAULT_THETAS  # the js rows' fixed thetas
    increment: int = 100  # samples per batch; one check after each (the paper's 100-sample increments)
    window_size: int = 500  # W_recent: the last window_size samples (5 increments) form P_mon
    min_samples: int = 500  # no check fires before the window holds this many samples
    reference_samples: int = 500  # the initial training data: the stream's first samples (period 1)
    cooldown_samples: float = 500  # after an update, wait this many samples (a fresh window) before firing
    rearm_ratio: float = 0.8  # hysteresis: re-arm once JS < rearm_ratio * theta
    settle_samples: float = 0  # settle_s: samples between a detection and the update freezing the window
    budget: float = 0.8  # B of eq. 3's selection: |S| = round(B * reference_samples)
    detectors: tuple[str, ...] = DETECTORS
    false_alarm_every: float = 50_000  # calibrated / sequential: expected samples between false alarms
    burn_in: int | None = None  # calibrated / sequential: samples after a new reference (default window_size)
    guard_theta: float = 0.15  # calibrated / sequential: the fixed theta that guards their burn-in
    reference: Literal["eq3", "window"] = "eq3"
    n_clusters: int = 20
    fit_on: Literal["pool", "reference"] = "pool"
    eta: float = 0.0  # eq. 2 learning rate applied at each simulated update; 0 keeps the codebook fixed
    seed: int = 0
    recluster: Literal["off", "auto"] = "off"  # auto: act on stale clusters (module docstring)
    recluster_min_interval: float = 1000  # samples between two re-clusterings
    recluster_max_rows: int = 20_000  # rows one re-fit clusters (window + pool)
    stale_far_share: float = 0.3  # re-cluster when more of the recent points than this are far
    stale_distance_quantile: float = 0.95  # "far": beyond this quantile of the fit rows' distances
    base: LanguageSettings | None = None
    update_lag: int | None = None  # deprecated alias of settle_samples
    arrival_rate: float = DEFAULT_ARRIVAL_RATE  # the language's offered queries a second: the clock of the seconds
    sampling_rate: float = 1.0  # share of the offered queries kept (languages.yaml sampling.rate)
    max_per_second: float | None = None  # or a cap on kept queries a second (sampling.max_per_second)
    sampling_bucket_s: float = DEFAULT_BUCKET_S  # seconds per bucket of a cap's rate

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ValueError:
            return ValueError(f"SimulationConfig.{name}: got {getattr(self, name)!r}; {fix}")

        if self.update_lag is not None:
            if self.update_lag < 0:
                raise bad("update_lag", "use an integer >= 0 (0 updates at the triggering check)")
            if self.settle_samples not in (0, self.update_lag):
                raise bad("update_lag", "it is the deprecated name of settle_samples: give one of them")
            warnings.warn("SimulationConfig.update_lag is deprecated: use settle_samples", DeprecationWarning,
                          stacklevel=3)
            object.__setattr__(self, "settle_samples", self.update_lag)
        object.__setattr__(self, "thetas", tuple(float(t) for t in self.thetas))
        object.__setattr__(self, "detectors", tuple(self.detectors))
        if not self.thetas or any(not 0.0 < t <= 1.0 for t in self.thetas) or len(set(self.thetas)) < len(self.thetas):
            raise bad("thetas", "give one or more distinct JS thresholds in bits, each in (0, 1], e.g. 0.05,0.10,0.15")
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if not self.detectors or unknown or len(set(self.detectors)) != len(self.detectors):
            raise bad("detectors", f"give distinct names among {', '.join(DETECTORS)}")
        for name in ("increment", "window_size", "min_samples", "reference_samples", "n_clusters"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "use an integer >= 1")
        if self.min_samples > self.window_size:
            raise bad("min_samples", f"it must not exceed window_size ({self.window_size})")
        if self.cooldown_samples < 0:
            raise bad("cooldown_samples", "use a number >= 0 (0 disables the cooldown)")
        if self.settle_samples < 0:
            raise bad("settle_samples", "use a number >= 0 (0 updates at the detecting check)")
        if self.fit_on not in ("pool", "reference"):
            raise bad("fit_on", "use 'pool' (all unique texts) or 'reference' (the initial training data)")
        if self.reference not in REFERENCE_MODES:
            raise bad("reference", "use 'eq3' (usage part + COMPASS selection, eq. 3) or 'window' (the window)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "use an integer >= 0")
        if not 0.0 <= self.eta <= 1.0:
            raise bad("eta", "use a learning rate in [0, 1]; 0 keeps the codebook fixed")
        if self.recluster not in RECLUSTER_MODES:
            raise bad("recluster", "use 'off' (stale clusters are not acted on) or 'auto' (re-fit the codebook)")
        if self.recluster_min_interval < 0:
            raise bad("recluster_min_interval", "use a number of samples >= 0")
        if int(self.recluster_max_rows) < 2:
            raise bad("recluster_max_rows", "use an integer >= 2")
        if not 0.0 < self.stale_far_share <= 1.0:
            raise bad("stale_far_share", "use a share in (0, 1]")
        if not 0.0 < self.stale_distance_quantile < 1.0:
            raise bad("stale_distance_quantile", "use a quantile in (0, 1), e.g. 0.95")
        if self.recluster == "auto" and self.stale_distance_quantile not in (0.90, 0.95, 0.99):
            raise bad("stale_distance_quantile", "a codebook records the quantiles 0.90, 0.95 and 0.99; use one")
        try:
            self.sampling  # noqa: B018 -- validates arrival_rate, sampling_rate, max_per_second, sampling_bucket_s
        except ValueError as e:
            field_of = {"arrival_rate": "arrival_rate", "rate": "sampling_rate", "max_per_second": "max_per_second",
                        "bucket_s": "sampling_bucket_s"}
            name, _, rest = str(e).partition(":")
            raise ValueError(f"SimulationConfig.{field_of.get(name, name)}:{rest}") from None
        for label, theta in self.runs():
            self.settings(label, theta)  # every run's settings must validate now, not halfway through a sweep

    @property
    def sampling(self) -> Sampling:
        """The sampling of the replayed language at its arrival rate (``compass/drift/timing.py``)."""
        return Sampling(self.arrival_rate, self.sampling_rate, self.max_per_second, self.sampling_bucket_s)

    @classmethod
    def from_settings(cls, settings: LanguageSettings, **kw: Any) -> SimulationConfig:
        """A config that replays exactly ``settings`` (a language's, as ``load_languages`` reads them; seconds
        read as samples; its ``sampling`` applied): its detector's row plus the baselines, unless ``detectors`` is
        given."""
        label = detector_label(settings)
        own = dict(thetas=(settings.theta,), window_size=settings.window_size, min_samples=settings.min_samples,
                   cooldown_samples=settings.cooldown_s, rearm_ratio=settings.rearm_ratio,
                   settle_samples=settings.settle_s, budget=settings.budget,
                   false_alarm_every=settings.false_alarm_every, burn_in=settings.burn_in,
                   guard_theta=settings.theta, detectors=(label, *BASELINES), base=settings,
                   sampling_rate=settings.sampling.rate,
                   max_per_second=getattr(settings.sampling, "max_per_second", None))
        clash = sorted(set(kw) & (set(own) - {"detectors"}))
        if clash:
            raise ValueError(f"SimulationConfig.from_settings: {', '.join(clash)} come from the language's settings; "
                             "change them there")
        kw.setdefault("reference_samples", settings.window_size)
        return cls(**{**own, **kw})

    def runs(self) -> list[tuple[str, float | None]]:
        """(detector, theta) of every replayed row, in output order (the baselines are not replayed)."""
        out: list[tuple[str, float | None]] = []
        for d in self.detectors:
            if d == "js":
                out += [("js", t) for t in self.thetas]
            elif d in LIFECYCLE_DETECTORS:
                out.append((d, None))
        return out

    def settings(self, detector: str = "js", theta: float | None = None) -> LanguageSettings:
        """The ``LanguageSettings`` of one replayed row; cooldown_s and settle_s are in samples here."""
        if detector not in LIFECYCLE_DETECTORS:
            raise ValueError(f"detector: got {detector!r}; the lifecycle runs {', '.join(LIFECYCLE_DETECTORS)}")
        base = self.base or LanguageSettings()
        update: dict[str, Any] = dict(
            min_samples=self.min_samples, window_size=self.window_size, cooldown_s=float(self.cooldown_samples),
            settle_s=float(self.settle_samples), rearm_ratio=self.rearm_ratio, budget=self.budget,
            false_alarm_every=self.false_alarm_every, burn_in=self.burn_in)
        if detector == "js":
            update.update(theta=self.thetas[0] if theta is None else theta, detector="js", threshold="fixed")
        elif detector == "calibrated":
            update.update(theta=self.guard_theta, detector="js", threshold="calibrated")
        else:
            update.update(theta=self.guard_theta, detector="sequential")
        try:
            return LanguageSettings.model_validate({**base.model_dump(), **update})
        except ValidationError as e:
            names = {"cooldown_s": "cooldown_samples", "settle_s": "settle_samples",
                     "theta": "thetas" if detector == "js" else "guard_theta"}
            problems = []
            for err in e.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"SimulationConfig.{names.get(where, where) or 'base'}: got {err.get('input')!r}; "
                                f"{err['msg'].lower()} (LanguageSettings.{where or '*'} of the {detector} rows)")
            raise ValueError("; ".join(problems)) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.model_dump() if isinstance(v, LanguageSettings) else list(v) if isinstance(v, tuple) else v
        return out


def _check_inputs(x: np.ndarray, n_periods: int, config: SimulationConfig, n_kept: int | None = None) -> None:
    if x.ndim != 2 or len(x) != n_periods:
        raise ValueError(f"embeddings: got shape {x.shape} for {n_periods} period labels; give one row per "
                         "sample, in arrival order")
    if len(x) < config.reference_samples:
        raise ValueError(f"SimulationConfig.reference_samples: got {config.reference_samples} but the stream has "
                         f"{len(x)} samples; lower it or give a longer stream")
    if n_kept is not None and n_kept < config.reference_samples:
        raise ValueError(f"SimulationConfig.reference_samples: got {config.reference_samples} but sampling "
                         f"({config.sampling.to_dict()}) keeps {n_kept} of the stream's {len(x)} samples; lower "
                         "it, raise the sampling rate or give a longer stream")


@dataclass(frozen=True)
class Sampled:
    """The offered stream after sampling: which queries the lifecycle sees, and the clock of the seconds."""

    kept: np.ndarray  # offered indices of the kept queries, in order
    periods: tuple[Any, ...]  # the kept queries' period labels
    transitions: list[int]  # in kept samples: the first kept query of each new period
    clock: Clock

    def summary(self) -> dict[str, Any]:
        """What a report says of the sampling: counts, the observed kept rate, transitions in seconds."""
        c = self.clock
        return {"offered": c.n_offered, "kept": c.n_kept, "duration_s": c.duration_s,
                "kept_share": c.n_kept / c.n_offered if c.n_offered else 0.0,
                "kept_per_s": c.n_kept / c.duration_s if c.n_offered else 0.0,
                "offered_transitions": list(c.changes),
                "transitions_s": [c.change_of(t) / c.arrival_rate for t in self.transitions]}


def sample(periods: Sequence[Any], config: SimulationConfig, lang: str = "und",
           ids: Sequence[str] | None = None) -> Sampled:
    """The queries of a stream of ``periods`` that ``config.sampling`` keeps, decided on ``ids`` (default
    ``sim:{lang}:{i}``) as the consumers decide (``compass/drift/timing.py``)."""
    ids = stream_ids(lang, len(periods)) if ids is None else list(ids)
    if len(ids) != len(periods):
        raise ValueError(f"ids: got {len(ids)} event ids for {len(periods)} samples; give one id per sample")
    sampling = config.sampling
    kept = sampling.kept(ids) if sampling.sampled else np.arange(len(periods), dtype=np.int64)
    kept_periods = tuple(periods[int(i)] for i in kept)
    return Sampled(kept, kept_periods, transitions(kept_periods),
                   Clock(kept, tuple(transitions(periods)), float(config.arrival_rate), len(periods)))


def fit_codebook(embeddings: np.ndarray, config: SimulationConfig) -> Codebook:
    """k-means on the stream's unique rows or on the reference part (``config.fit_on``), seeded."""
    return _fit_codebook(embeddings, config.n_clusters, config.seed, config.fit_on, config.reference_samples)


def references_for(book: Codebook, x: np.ndarray, lang: str, pool: Pool | None, config: SimulationConfig,
                   settings: LanguageSettings) -> References:
    """The eq. 3 builder of one run (the budget is the run's ``settings.budget``)."""
    return References(book, x, lang, config.reference_samples, budget=settings.budget, pool=pool,
                      mode=config.reference, seed=config.seed)


def reclustering_for(config: SimulationConfig, settings: LanguageSettings) -> Reclustering | None:
    """The simulated recluster job of one run, or None with ``recluster="off"``."""
    if config.recluster == "off":
        return None
    return Reclustering(n_clusters=config.n_clusters, min_interval=float(config.recluster_min_interval),
                        max_rows=int(config.recluster_max_rows), quantile=config.stale_distance_quantile,
                        far_max_rows=settings.window_size, seed=config.seed)


def simulate(
    embeddings: np.ndarray,
    periods: Sequence[Any],
    config: SimulationConfig,
    on_check: Callable[[], None] | None = None,
    *,
    pool: Pool | None = None,
    lang: str = "und",
    ids: Sequence[str] | None = None,
) -> list[SweepRow]:
    """Replay the stream and score it: one ``SweepRow`` per (detector, theta), in ``config.detectors`` order
    (``js`` expanded over ``config.thetas``).

    ``embeddings`` row i embeds offered sample i (arrival order); ``periods`` labels each sample; ``ids`` are
    their event ids, which the sampling decides on (default ``sim:{lang}:{i}``). The lifecycle replays the kept
    samples (all of them at rate 1), and each row's counts are in kept samples, its ``extra`` also in seconds
    (module docstring). ``pool`` is the eq. 3 auxiliary pool (default: the offered stream's distinct rows,
    tagged ``lang``). ``on_check`` is called after every check (for a progress bar:
    ``len(config.runs()) * ceil(n_kept / increment)`` calls).
    """
    offered = np.asarray(embeddings, dtype=np.float32)
    _check_inputs(offered, len(periods), config)
    sampled = sample(periods, config, lang, ids)
    _check_inputs(offered, len(periods), config, len(sampled.kept))
    x = offered[sampled.kept]
    change_points = sampled.transitions
    pool = pool if pool is not None else stream_pool(offered, lang)
    fit_rows = offered if config.fit_on == "pool" else x  # "reference": the first kept samples, D_t
    base = fit_codebook(fit_rows, config)
    replayed: dict[tuple[str, float | None], SweepRow] = {}
    for label, theta in config.runs():
        settings = config.settings(label, theta)
        # eq. 2 updates must not leak across runs: refit (seeded, so the same codebook) rather than copy
        book = fit_codebook(fit_rows, config) if config.eta > 0 else base
        trace = replay(x, book, references_for(book, x, lang, pool, config, settings), settings,
                       increment=config.increment, eta=config.eta, on_check=on_check,
                       limits=Limits(stale_far_share=config.stale_far_share),
                       reclustering=reclustering_for(config, settings))
        extra: dict[str, Any] = {} if label == "js" else {"guard_theta": settings.theta}
        if config.recluster == "auto":
            extra.update(recluster_skipped=list(trace.recluster_skipped), recluster_s=list(trace.recluster_s))
        replayed[(label, theta)] = make_row(label, theta, trace.fired, change_points, len(x),
                                            n_checks=trace.n_checks, check_s=trace.check_s,
                                            detected_at=trace.detected, thresholds=trace.thresholds, extra=extra,
                                            reclustered_at=trace.reclustered)
    rows = assemble(config, replayed, change_points, len(x))
    return [timed(row, sampled.clock, change_points) for row in rows]


def assemble(config: SimulationConfig, replayed: dict[tuple[str, float | None], SweepRow],
             change_points: Sequence[int], n_samples: int) -> list[SweepRow]:
    """The rows in output order: the replayed ones by (detector, theta), the baselines computed here."""
    rows: list[SweepRow] = []
    for d in config.detectors:
        if d in BASELINES:
            rows.append(baseline_row(d, change_points, n_samples))
        else:
            rows += [replayed[run] for run in config.runs() if run[0] == d]
    return rows


@dataclass(frozen=True)
class SimulationReport:
    """What ``compass simulate --json`` prints for one language."""

    lang: str
    n_samples: int
    periods: list[tuple[str, int]]
    transitions: list[int]
    config: dict[str, Any]
    rows: list[SweepRow] = field(default_factory=list)
    embed_s: float = 0.0
    sampling: dict[str, Any] = field(default_factory=dict)  # Sampled.summary(): offered, kept, seconds

    def to_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "n_samples": self.n_samples, "periods": [list(p) for p in self.periods],
                "transitions": self.transitions, "config": self.config, "embed_s": self.embed_s,
                "sampling": self.sampling, "rows": [r.to_dict() for r in self.rows]}


__all__ = ["BASELINES", "CHATTERBOT_PERIODS", "DEFAULT_THETAS", "DETECTORS", "LIFECYCLE_DETECTORS",
           "Pool", "References", "Sampled", "SimulationConfig", "SimulationReport", "Stream", "SweepRow", "assemble",
           "baseline_row", "build_chatterbot_stream", "detector_label", "fit_codebook", "make_row",
           "read_pool", "read_stream", "reclustering_for", "references_for", "sample", "score", "simulate",
           "stream_pool", "transitions", "write_stream"]
