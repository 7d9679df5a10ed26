"""Labelled query streams for the drift replay (paper App. D.2): build, read, write; auxiliary pools.

A ``Stream`` is one language's queries in arrival order, each labelled with its period (T1..T5): the labels say
where the distribution changes, which is what Table 11 scores against. Streams come from a JSONL file
(``read_stream``) or from chatterbot-corpus categories (``build_chatterbot_stream``; ``stable=True`` builds the
no-change control). A pool (``read_pool``) is the auxiliary data D_aux a simulated update selects from (eq. 3).
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from compass import langcodes
from compass.errors import DataError

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
_POOL_FIELDS = {"text", "lang", "topic", "id", "meta"}
_POOL_REQUIRED = ("text", "lang")


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
    stable: bool = False,
) -> Stream:
    """A T1-T5 stream of real user utterances of ``lang`` (chatterbot-corpus), App. D.2 style.

    Each period draws ``period_samples`` utterances from its category group (``CHATTERBOT_PERIODS`` by
    default), uniformly over the group's utterances, as back-to-back seeded shuffles (the corpus has 50-400
    utterances per group, so a 2000-sample period repeats them, like recurring user questions). A period
    whose categories were used before (T5 returns to T1) draws from the other half of those categories'
    utterances, split per category: the same topics, different queries, as the paper's T5 takes the T1
    subjects from MMLU-ProX instead of Global MMLU. ``records`` (with ``lang``, ``topic``, ``text``) replaces
    the corpus, for tests.

    ``stable=True`` builds the no-change control: as many samples (one per period of ``groups``), all drawn
    from the first period's categories (all their utterances), every sample labelled with the first period's
    name. The stream has no transition, so every update on it is a false positive.
    """
    code = langcodes.normalize(lang)
    groups = dict(CHATTERBOT_PERIODS if groups is None else groups)
    if period_samples < 1:
        raise ValueError(f"period_samples: got {period_samples}; use an integer >= 1 (the paper's scale is 2000)")
    if not groups:
        raise ValueError("groups: got none; give at least one period -> categories entry")
    if records is None:
        from compass.corpora import chatterbot

        records = chatterbot.load([code]).records
    by_topic: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.lang == code and r.topic:
            by_topic[r.topic].append(r.text)
    rng = random.Random(seed)

    def missing(period: str, cats: Sequence[str]) -> ValueError:
        have = ", ".join(sorted(by_topic)) or "none"
        return ValueError(f"period {period}: language {code!r} has none of the categories {list(cats)} in "
                          f"chatterbot-corpus (it has: {have}); choose a language with them (it, ja, ko, uk, zh, "
                          "en) or pass groups=")

    texts: list[str] = []
    periods: list[str] = []
    topics: list[str | None] = []
    if stable:
        first, cats = next(iter(groups.items()))
        pool = [(cat, t) for cat in cats if cat in by_topic for t in sorted(set(by_topic[cat]))]
        if not pool:
            raise missing(first, cats)
        for cat, text in _cycled(pool, period_samples * len(groups), rng):
            texts.append(text)
            periods.append(first)
            topics.append(cat)
        return Stream(code, tuple(texts), tuple(periods), tuple(topics))
    halves: dict[str, list[list[str]]] = {}  # topic -> [first half, second half], split once per topic
    uses: Counter[str] = Counter()
    for period, cats in groups.items():
        pool = []
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
            raise missing(period, cats)
        for cat, text in _cycled(pool, period_samples, rng):
            texts.append(text)
            periods.append(period)
            topics.append(cat)
    return Stream(code, tuple(texts), tuple(periods), tuple(topics))


# ------------------------------------------------------------------------------------------------ files


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _read_jsonl(p: Path, what: str, check: Callable[[int, dict[str, Any], list[str]], Any]) -> list[Any]:
    """Every line of ``p`` through ``check``; all problems at once in one ``DataError``."""
    if not p.is_file():
        raise DataError(str(p), [f"no such file; give a JSONL {what}"])
    problems: list[str] = []
    rows: list[Any] = []
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
            row = check(n, obj, problems)
            if row is not None:
                rows.append(row)
    if not rows and not problems:
        problems.append(f"the file holds no lines; give at least one line of a {what}")
    if problems:
        raise DataError(str(p), problems)
    return rows


def read_stream(path: str | Path) -> dict[str, Stream]:
    """Streams of a JSONL file of {text, lang, period[, topic, id, meta]}, one per language, in file order.

    ``period`` is a string or an integer label (consecutive equal labels form one period); ``lang`` is any
    form ``langcodes.normalize`` accepts. Every problem is reported at once, as "line N, field F: ...", in
    one ``DataError``; nothing is returned unless the whole file is valid.
    """
    rows = _read_jsonl(Path(path), "stream of {text, lang, period, topic} lines", _check_stream_line)
    by_lang: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for lang, text, period, topic in rows:
        by_lang[lang].append((text, period, topic))
    return {lang: Stream(lang, tuple(r[0] for r in rs), tuple(r[1] for r in rs), tuple(r[2] for r in rs))
            for lang, rs in by_lang.items()}


def _check_common(n: int, obj: dict[str, Any], allowed: set[str], required: tuple[str, ...], needs: str,
                  problems: list[str]) -> tuple[str | None, str | None]:
    for key in sorted(set(obj) - allowed):
        problems.append(f"line {n}, field {key!r}: unknown field; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in obj:
            problems.append(f"line {n}, field {key!r}: missing; every line needs {needs}")
    text, lang, topic = obj.get("text"), obj.get("lang"), obj.get("topic")
    if "text" in obj and (not isinstance(text, str) or not text.strip()):
        problems.append(f"line {n}, field 'text': got {text!r}; use a non-empty string")
    if "lang" in obj:
        try:
            lang = langcodes.normalize(lang)  # type: ignore[arg-type]
        except ValueError as e:
            problems.append(f"line {n}, field 'lang': {e}")
    if topic is not None and not isinstance(topic, str):
        problems.append(f"line {n}, field 'topic': got {topic!r}; use a string or null")
    return (str(lang) if lang is not None else None), (str(text) if text is not None else None)


def _check_stream_line(n: int, obj: dict[str, Any], problems: list[str]) -> tuple[str, str, str, str | None] | None:
    before = len(problems)
    lang, text = _check_common(n, obj, _STREAM_FIELDS, _STREAM_REQUIRED, "text, lang and period", problems)
    period = obj.get("period")
    bad_period = isinstance(period, bool) or not isinstance(period, (int, str)) or not str(period).strip()
    if "period" in obj and bad_period:
        problems.append(f"line {n}, field 'period': got {period!r}; use a period label, a string such as 'T2' "
                        "or an integer")
    if len(problems) > before:
        return None
    return str(lang), str(text), str(period), obj.get("topic")


def write_stream(path: str | Path, stream: Stream) -> None:
    """Write ``stream`` as the JSONL ``read_stream`` reads (one {text, lang, topic, period} per line)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    topics = stream.topics or (None,) * len(stream)
    with p.open("w", encoding="utf-8") as f:
        for text, period, topic in zip(stream.texts, stream.periods, topics, strict=True):
            f.write(json.dumps({"text": text, "lang": stream.lang, "topic": topic, "period": period},
                               ensure_ascii=False) + "\n")


def read_pool(path: str | Path) -> list[tuple[str, str]]:
    """(text, lang) of an auxiliary pool JSONL of {text, lang[, topic, id, meta]}, in file order, duplicates
    (same text and language) dropped. Problems are reported like ``read_stream``'s, all at once."""

    def check(n: int, obj: dict[str, Any], problems: list[str]) -> tuple[str, str] | None:
        before = len(problems)
        lang, text = _check_common(n, obj, _POOL_FIELDS, _POOL_REQUIRED, "text and lang (a pool row needs no "
                                   "period)", problems)
        return None if len(problems) > before else (str(text), str(lang))

    rows = _read_jsonl(Path(path), "pool of {text, lang} lines", check)
    return list(dict.fromkeys(rows))


__all__ = ["CHATTERBOT_PERIODS", "Stream", "build_chatterbot_stream", "read_pool", "read_stream", "transitions",
           "write_stream"]
