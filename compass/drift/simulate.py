"""Offline replay of a labelled multi-period stream through the monitor and the trigger (paper App. D.2, Table 11).

A stream is a sequence of queries of one language, each labelled with the period it belongs to (T1..T5).
``simulate`` feeds it in ``increment``-sample batches, as the paper does, and after each batch runs one check
of the production logic: P_mon (eq. 4) of the last ``window_size`` samples, JS(P_ref || P_mon) (eq. 5) and
``compass.drift.decide`` (eq. 6 with min_samples, hysteresis and cooldown). It does this once per theta and
scores each run against the known period boundaries.

The simulated lifecycle:
  * clustering: one k-means codebook, fitted once before the stream starts (``fit_on``): on the language's
    whole unlabelled pool of texts ("pool", the analogue of COMPASS clustering its eval + auxiliary pool in
    the initial phase, which spans topics the first adapter is not trained on), or on the reference part
    only ("reference"). Every batch is assigned with ``predict`` when it arrives.
  * P_ref: the cluster distribution of the adapter's training data, the first ``reference_samples`` samples
    of period 1 (the initial training cycle, eq. 3 with the usage proxy drawn from the same traffic).
  * a trigger at check t simulates the update at once (or at the first check >= t + ``update_lag``, for an
    update job that takes its data later): P_ref becomes the current window's distribution (the update trains
    on D_new selected from W_recent, §3.3.3, so the just-learned distribution is the window's) and
    ``TriggerState.rereferenced(now)`` starts the cooldown and re-arms the trigger (hysteresis applies against
    one reference; an update installs a new one).
    With ``eta > 0`` the update also moves the centroids by eq. 2 towards the window's points
    (``KMeansClusterer.update``) and re-assigns the window.
  * time is the sample count: "now" of check t is t, so ``cooldown_samples`` is a cooldown in samples.

Scoring, with samples numbered from 0 and check t seeing samples [0, t):
  * transitions: the indices s where a sample's period differs from the previous sample's (T1->T2 at s is
    the first T2 sample);
  * a trigger at check t belongs to the latest transition s < t (at least one sample of the new period has
    arrived). The first trigger belonging to a transition is its detection, with delay t - s: the samples of
    the new period that had arrived when the update fired (a multiple of ``increment`` when periods are);
  * every other trigger (before the first transition, or a second trigger in the same period) is a false
    positive: an update without a new distribution shift. FP rate = false positives / updates triggered, in
    percent (Table 11: 8 of 12 updates = 66.7% at theta 0.05, 3 of 7 = 42.9% at 0.10);
  * average delay: the mean delay over the detected transitions (None when none was detected).
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from compass import langcodes
from compass.config import LanguageSettings
from compass.divergence import js_divergence
from compass.drift.trigger import TriggerState, decide
from compass.errors import DataError

DEFAULT_THETAS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)

# App. D.2 with chatterbot-corpus categories: disjoint topic groups, the paper's T1-T5 storyline mapped onto
# the corpus's categories (file names). T1 is everyday chat, the adapter's initial domain; T2 the STEM
# expansion (the paper's CS, ML, physics, ...); T3 the humanities (philosophy, psychology, religions, ...);
# T4 the professional domains (accounting, law, medicine, foreign policy); T5 returns to T1's categories.
# Categories in no group (e.g. es/pt's own names) are left out. en's 'coding' and 'tech_support' are STEM.
CHATTERBOT_PERIODS: dict[str, tuple[str, ...]] = {
    "T1": ("greetings", "conversations", "emotion", "humor", "gossip", "botprofile", "food", "sports", "movies",
           "trivia"),
    "T2": ("ai", "computers", "science", "coding", "tech_support"),
    "T3": ("literature", "psychology", "history"),
    "T4": ("money", "politics", "health"),
    "T5": ("greetings", "conversations", "emotion", "humor", "gossip", "botprofile", "food", "sports", "movies",
           "trivia"),
}

_STREAM_FIELDS = {"text", "lang", "period", "topic", "id", "meta"}
_STREAM_REQUIRED = ("text", "lang", "period")


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class SimulationConfig:
    """How the stream is replayed and the trigger configured; counts are in samples."""

    thetas: tuple[float, ...] = DEFAULT_THETAS
    increment: int = 100  # samples per batch; one check after each (the paper's 100-sample increments)
    window_size: int = 500  # W_recent: the last window_size samples (5 increments) form P_mon
    min_samples: int = 500  # no check fires before the window holds this many samples
    reference_samples: int = 500  # the initial training data: the stream's first samples (period 1)
    cooldown_samples: int = 500  # after an update, wait this many samples (a fresh window) before firing
    rearm_ratio: float = 0.8  # hysteresis: re-arm once JS < rearm_ratio * theta
    n_clusters: int = 20
    fit_on: Literal["pool", "reference"] = "pool"
    eta: float = 0.0  # eq. 2 learning rate applied at each simulated update; 0 keeps the codebook fixed
    update_lag: int = 0  # samples between a trigger and the update taking its data from W_recent; 0 = at once
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ValueError:
            return ValueError(f"SimulationConfig.{name}: got {getattr(self, name)!r}; {fix}")

        object.__setattr__(self, "thetas", tuple(float(t) for t in self.thetas))
        if not self.thetas or any(not 0.0 < t <= 1.0 for t in self.thetas):
            raise bad("thetas", "give one or more JS thresholds in bits, each in (0, 1], e.g. 0.05,0.10,0.15")
        for name in ("increment", "window_size", "min_samples", "reference_samples", "n_clusters"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "use an integer >= 1")
        if self.min_samples > self.window_size:
            raise bad("min_samples", f"it must not exceed window_size ({self.window_size})")
        if self.cooldown_samples < 0:
            raise bad("cooldown_samples", "use an integer >= 0 (0 disables the cooldown)")
        if self.update_lag < 0:
            raise bad("update_lag", "use an integer >= 0 (0 updates at the triggering check)")
        if not 0.0 < self.rearm_ratio <= 1.0:
            raise bad("rearm_ratio", "use a ratio in (0, 1]; 1 disables the hysteresis")
        if self.fit_on not in ("pool", "reference"):
            raise bad("fit_on", "use 'pool' (all unique texts) or 'reference' (the initial training data)")
        if not 0.0 <= self.eta <= 1.0:
            raise bad("eta", "use a learning rate in [0, 1]; 0 keeps the codebook fixed")

    def settings(self, theta: float) -> LanguageSettings:
        """The per-language trigger settings of one sweep point; cooldown_s is in samples here."""
        return LanguageSettings(theta=theta, min_samples=self.min_samples, window_size=self.window_size,
                                cooldown_s=float(self.cooldown_samples), rearm_ratio=self.rearm_ratio)


# ------------------------------------------------------------------------------------------------ streams


@dataclass(frozen=True)
class Stream:
    """The queries of one language in arrival order, each with its period label (and topic, if known)."""

    lang: str
    texts: tuple[str, ...]
    periods: tuple[str, ...]
    topics: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        if len(self.periods) != len(self.texts):
            raise ValueError(f"Stream.periods: {len(self.periods)} labels for {len(self.texts)} texts; give one "
                             "period per text")
        if self.topics and len(self.topics) != len(self.texts):
            raise ValueError(f"Stream.topics: {len(self.topics)} topics for {len(self.texts)} texts; give one "
                             "per text or none")

    def __len__(self) -> int:
        return len(self.texts)

    def transitions(self) -> list[int]:
        return transitions(self.periods)

    def period_lengths(self) -> list[tuple[str, int]]:
        """(period, samples) per contiguous run, in order."""
        runs: list[tuple[str, int]] = []
        for p in self.periods:
            if runs and runs[-1][0] == p:
                runs[-1] = (p, runs[-1][1] + 1)
            else:
                runs.append((p, 1))
        return runs


def transitions(periods: Sequence[Any]) -> list[int]:
    """Indices of the first sample of every period after the first (where the label changes)."""
    return [i for i in range(1, len(periods)) if periods[i] != periods[i - 1]]


def _cycled(pool: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n draws from pool as back-to-back shuffles: every item once before any repeats (less variance than iid)."""
    out: list[Any] = []
    while len(out) < n:
        block = list(pool)
        rng.shuffle(block)
        out += block
    return out[:n]


def build_chatterbot_stream(
    lang: str,
    seed: int = 0,
    period_samples: int = 2000,
    groups: Mapping[str, Sequence[str]] | None = None,
    records: Sequence[Any] | None = None,
) -> Stream:
    """A T1-T5 stream of real user utterances of ``lang`` (chatterbot-corpus), App. D.2 style.

    Each period draws ``period_samples`` utterances from its category group (``CHATTERBOT_PERIODS`` by
    default), uniformly over the group's utterances, as back-to-back seeded shuffles (the corpus has 50-400
    utterances per group, so a 2000-sample period repeats them, like recurring user questions). A period
    whose categories were used before (T5 returns to T1) draws from the other half of those categories'
    utterances, split per category: the same topics, different queries, as the paper's T5 takes the T1
    subjects from MMLU-ProX instead of Global MMLU. ``records`` (with ``lang``, ``topic``, ``text``) replaces
    the corpus, for tests.
    """
    code = langcodes.normalize(lang)
    groups = dict(CHATTERBOT_PERIODS if groups is None else groups)
    if period_samples < 1:
        raise ValueError(f"period_samples: got {period_samples}; use an integer >= 1 (the paper's scale is 2000)")
    if records is None:
        from compass.corpora import chatterbot

        records = chatterbot.load([code]).records
    by_topic: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.lang == code and r.topic:
            by_topic[r.topic].append(r.text)
    rng = random.Random(seed)
    halves: dict[str, list[list[str]]] = {}  # topic -> [first half, second half], split once per topic
    uses: Counter[str] = Counter()
    texts: list[str] = []
    periods: list[str] = []
    topics: list[str | None] = []
    for period, cats in groups.items():
        pool: list[tuple[str, str]] = []
        for cat in cats:
            if cat not in by_topic:
                continue
            if cat not in halves:
                items = sorted(set(by_topic[cat]))
                rng.shuffle(items)
                cut = (len(items) + 1) // 2
                halves[cat] = [items[:cut], items[cut:] or items[:cut]]
            pool += [(cat, t) for t in halves[cat][uses[cat] % 2]]
            uses[cat] += 1
        if not pool:
            have = ", ".join(sorted(by_topic)) or "none"
            raise ValueError(f"period {period}: language {code!r} has none of the categories {list(cats)} in "
                             f"chatterbot-corpus (it has: {have}); choose a language with them (it, ja, ko, uk, zh, "
                             "en) or pass groups=")
        for cat, text in _cycled(pool, period_samples, rng):
            texts.append(text)
            periods.append(period)
            topics.append(cat)
    return Stream(code, tuple(texts), tuple(periods), tuple(topics))


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_stream(path: str | Path) -> dict[str, Stream]:
    """Streams of a JSONL file of {text, lang, period[, topic, id, meta]}, one per language, in file order.

    ``period`` is a string or an integer label (consecutive equal labels form one period); ``lang`` is any
    form ``langcodes.normalize`` accepts. Every problem is reported at once, as "line N, field F: ...", in
    one ``DataError``; nothing is returned unless the whole file is valid.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), ["no such file; give a JSONL stream of {text, lang, period, topic} lines"])
    problems: list[str] = []
    rows: list[tuple[str, str, str, str | None]] = []
    with _open_text(p) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {n}: expected a JSON object, got {type(obj).__name__}")
                continue
            row = _check_stream_line(n, obj, problems)
            if row is not None:
                rows.append(row)
    if not rows and not problems:
        problems.append("the file holds no lines; a stream needs at least one {text, lang, period} line")
    if problems:
        raise DataError(str(p), problems)
    by_lang: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for lang, text, period, topic in rows:
        by_lang[lang].append((text, period, topic))
    return {lang: Stream(lang, tuple(r[0] for r in rs), tuple(r[1] for r in rs), tuple(r[2] for r in rs))
            for lang, rs in by_lang.items()}


def _check_stream_line(n: int, obj: dict[str, Any], problems: list[str]) -> tuple[str, str, str, str | None] | None:
    before = len(problems)
    for key in sorted(set(obj) - _STREAM_FIELDS):
        problems.append(f"line {n}, field {key!r}: unknown field; allowed: {', '.join(sorted(_STREAM_FIELDS))}")
    for key in _STREAM_REQUIRED:
        if key not in obj:
            problems.append(f"line {n}, field {key!r}: missing; every line needs text, lang and period")
    text, lang, period, topic = obj.get("text"), obj.get("lang"), obj.get("period"), obj.get("topic")
    if "text" in obj and (not isinstance(text, str) or not text.strip()):
        problems.append(f"line {n}, field 'text': got {text!r}; use a non-empty string")
    if "lang" in obj:
        try:
            lang = langcodes.normalize(lang)  # type: ignore[arg-type]
        except ValueError as e:
            problems.append(f"line {n}, field 'lang': {e}")
    bad_period = isinstance(period, bool) or not isinstance(period, (int, str)) or not str(period).strip()
    if "period" in obj and bad_period:
        problems.append(f"line {n}, field 'period': got {period!r}; use a period label, a string such as 'T2' "
                        "or an integer")
    if topic is not None and not isinstance(topic, str):
        problems.append(f"line {n}, field 'topic': got {topic!r}; use a string or null")
    if len(problems) > before:
        return None
    return str(lang), str(text), str(period), topic


def write_stream(path: str | Path, stream: Stream) -> None:
    """Write ``stream`` as the JSONL ``read_stream`` reads (one {text, lang, topic, period} per line)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    topics = stream.topics or (None,) * len(stream)
    with p.open("w", encoding="utf-8") as f:
        for text, period, topic in zip(stream.texts, stream.periods, topics, strict=True):
            f.write(json.dumps({"text": text, "lang": stream.lang, "topic": topic, "period": period},
                               ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------ simulation


@dataclass(frozen=True)
class SweepRow:
    """One theta of the sweep: a row of Table 11, and what it is made of."""

    theta: float
    updates: int
    transitions: int
    detected: int
    avg_delay: float | None  # samples; None when no transition was detected
    false_positives: int
    fp_rate: float  # percent of the updates
    fired_at: tuple[int, ...]  # the checks (samples seen) at which an update fired
    delays: tuple[int | None, ...]  # per transition: samples from the change to its detection, None if missed
    n_checks: int
    check_ms: float  # mean wall time of one check: assign the batch, P_mon, JS, decide

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class _Codebook:
    """The fitted clusterer and the number of buckets P_ref and P_mon are counted over (K + the noise bucket)."""

    clusterer: Any
    n_buckets: int

    def assign(self, x: np.ndarray) -> np.ndarray:
        labels = np.asarray(self.clusterer.predict(x), dtype=np.int64)
        return np.where(labels < 0, self.n_buckets - 1, labels)  # NOISE (-1) counts in the last bucket

    def counts(self, labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels, minlength=self.n_buckets).astype(np.float64)


def fit_codebook(embeddings: np.ndarray, config: SimulationConfig) -> _Codebook:
    """k-means on the pool's unique rows or on the reference part (``config.fit_on``), seeded."""
    from compass.cluster import make_clusterer

    x = embeddings[: config.reference_samples] if config.fit_on == "reference" else embeddings
    x = np.unique(x, axis=0)  # a replayed stream repeats texts; the codebook is fitted on the texts once
    if len(x) < config.n_clusters:
        raise ValueError(f"SimulationConfig.n_clusters: got {config.n_clusters} but the {config.fit_on} data has "
                         f"only {len(x)} distinct rows; use n_clusters <= {len(x)}")
    clusterer = make_clusterer("kmeans", seed=config.seed, n_clusters=config.n_clusters)
    clusterer.fit_predict(x)
    return _Codebook(clusterer, int(clusterer.n_clusters_) + 1)


def _batches(n: int, increment: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, increment):
        yield start, min(n, start + increment)


def _run(x: np.ndarray, book: _Codebook, theta: float, config: SimulationConfig,
         on_check: Callable[[], None] | None) -> tuple[list[int], int, float]:
    """One theta: (checks that fired, number of checks, mean seconds per check)."""
    settings = config.settings(theta)
    labels = np.empty(len(x), dtype=np.int64)
    state = TriggerState()
    ref: np.ndarray | None = None
    fired: list[int] = []
    pending: int | None = None  # the check at which the triggered update takes its data
    spent = 0.0
    n_checks = 0
    for start, t in _batches(len(x), config.increment):
        t0 = time.perf_counter()
        labels[start:t] = book.assign(x[start:t])
        if ref is None and t >= config.reference_samples:
            ref = book.counts(labels[: config.reference_samples])
        lo = max(0, t - config.window_size)
        if ref is not None:
            window = book.counts(labels[lo:t])
            decision = decide(js_divergence(ref, window), t - lo, settings, state, now=float(t))
            state = decision.state
            if decision.fire:
                fired.append(t)
                pending = t + config.update_lag
            if pending is not None and t >= pending:  # the simulated update runs now
                pending = None
                if config.eta > 0:  # eq. 2: the update moves the codebook towards the data it learned
                    book.clusterer.update(x[lo:t], config.eta)
                    labels[lo:t] = book.assign(x[lo:t])
                    window = book.counts(labels[lo:t])
                ref = window  # the just-learned distribution (§3.3.3: D_new comes from W_recent)
                state = state.rereferenced(float(t))  # a new P_ref: cooldown starts, trigger re-arms
        spent += time.perf_counter() - t0
        n_checks += 1
        if on_check is not None:
            on_check()
    return fired, n_checks, spent / max(1, n_checks)


def score(fired: Sequence[int], change_points: Sequence[int]) -> tuple[list[int | None], int]:
    """(delay per transition or None, false positives) of the triggers ``fired`` (see the module docstring)."""
    delays: list[int | None] = [None] * len(change_points)
    false_positives = 0
    for t in fired:
        owner = max((i for i, s in enumerate(change_points) if s < t), default=None)
        if owner is None or delays[owner] is not None:
            false_positives += 1
        else:
            delays[owner] = t - change_points[owner]
    return delays, false_positives


def simulate(
    embeddings: np.ndarray,
    periods: Sequence[Any],
    config: SimulationConfig,
    on_check: Callable[[], None] | None = None,
) -> list[SweepRow]:
    """Replay the stream once per theta and score it: one ``SweepRow`` per ``config.thetas``, in order.

    ``embeddings`` row i embeds sample i (arrival order); ``periods`` labels each sample. ``on_check`` is
    called after every check (for a progress bar: ``len(thetas) * ceil(n / increment)`` calls).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(periods):
        raise ValueError(f"embeddings: got shape {x.shape} for {len(periods)} period labels; give one row per "
                         "sample, in arrival order")
    if len(x) < config.reference_samples:
        raise ValueError(f"SimulationConfig.reference_samples: got {config.reference_samples} but the stream has "
                         f"{len(x)} samples; lower it or give a longer stream")
    change_points = transitions(periods)
    base = fit_codebook(x, config)
    rows = []
    for theta in config.thetas:
        # eq. 2 updates must not leak across thetas: refit (seeded, so the same codebook) rather than copy
        book = fit_codebook(x, config) if config.eta > 0 else base
        fired, n_checks, per_check = _run(x, book, theta, config, on_check)
        delays, fps = score(fired, change_points)
        hit = [d for d in delays if d is not None]
        rows.append(SweepRow(
            theta=theta, updates=len(fired), transitions=len(change_points), detected=len(hit),
            avg_delay=float(np.mean(hit)) if hit else None, false_positives=fps,
            fp_rate=100.0 * fps / len(fired) if fired else 0.0, fired_at=tuple(fired), delays=tuple(delays),
            n_checks=n_checks, check_ms=1000.0 * per_check,
        ))
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

    def to_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "n_samples": self.n_samples, "periods": [list(p) for p in self.periods],
                "transitions": self.transitions, "config": self.config, "embed_s": self.embed_s,
                "rows": [r.to_dict() for r in self.rows]}
