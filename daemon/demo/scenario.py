"""The demo's data: real chatterbot-corpus utterances split into target data, an auxiliary pool, a usage proxy
and a two-phase query stream in which one language's topics shift (pure: no Kafka, no Redis).

Per adapter language the corpus topics are split in two groups. Phase 1 draws every language's queries from its
"before" topics; in phase 2 the shifting language's queries come from its "after" topics (new users asking about
AI, computers, money...), the others keep their topics. The "before" utterances of a language are halved, seeded:
one half is its target data D_t (what its adapter was trained on), the other half its live queries and usage proxy.
The auxiliary pool D_aux holds other languages' utterances of every topic (capped per language and topic) plus the
shifting language's "after" utterances not replayed in the stream, so COMPASS has something to find there.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from compass.data import Record

# Topic groups of chatterbot-corpus 1.3.3 (file names). "after" topics are where the shifting language goes.
BEFORE = {
    "it": ("emotion", "psychology", "conversations", "greetings", "humor", "literature", "gossip"),
    "es": ("emociones", "psicologia", "conversations", "greetings", "perfilbot"),
    "en": ("emotion", "psychology", "conversations", "greetings", "humor", "literature", "gossip", "botprofile"),
}
AFTER = {
    "it": ("ai", "computers", "science", "money", "sports", "movies", "politics"),
    "es": ("IA", "dinero", "trivia", "origen"),
    "en": ("ai", "computers", "science", "money", "sports", "movies", "politics"),
}
POOL_LANGUAGES = ("en", "es", "it", "pt", "fr", "de")


@dataclass(frozen=True)
class Scenario:
    languages: tuple[str, ...]  # languages with an adapter
    shift_language: str
    targets: dict[str, list[Record]]  # D_t per language (text + response)
    proxy: dict[str, list[Record]]  # E_t per language for the initial adaptation (phase-1 style queries)
    pool: list[Record]  # D_aux
    phase1: list[Record]  # queries before the shift, all languages interleaved
    phase2: list[Record]  # queries after the shift


def with_response(r: Record) -> Record:
    """Training text of an utterance: the query and the bot's answer (instruction data, trained as one text)."""
    return replace(r, text=f"{r.text}\n{r.response}") if r.response else r


def build(records: Sequence[Record], languages: Sequence[str] = ("it", "es", "en"), shift_language: str = "it",
          phase1_per_language: int = 150, phase2_size: int = 250, pool_cap: int = 40, seed: int = 0) -> Scenario:
    """Split ``records`` (chatterbot-corpus) as the module docstring says; seeded, deterministic."""
    unknown = [lang for lang in languages if lang not in BEFORE]
    if unknown or shift_language not in languages:
        raise ValueError(f"demo languages must be among {sorted(BEFORE)} and include the shifting language; got "
                         f"languages={list(languages)}, shift_language={shift_language!r}")
    rng = random.Random(seed)
    by: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        by[(r.lang, r.topic or "")].append(r)
    targets, proxy, live = {}, {}, {}
    for lang in languages:
        before = [r for t in BEFORE[lang] for r in by[(lang, t)]]
        rng.shuffle(before)
        half = len(before) // 2
        targets[lang] = [with_response(r) for r in before[:half]]
        live[lang] = before[half:]
        proxy[lang] = live[lang][: max(1, len(live[lang]) // 2)]
    after = [r for t in AFTER[shift_language] for r in by[(shift_language, t)]]
    rng.shuffle(after)
    replayed, held = after[: len(after) // 2], after[len(after) // 2 :]

    phase1 = [r for lang in languages for r in _cycled(live[lang], phase1_per_language, rng)]
    rng.shuffle(phase1)
    others = [lang for lang in languages if lang != shift_language]
    n_shift = phase2_size // 2 if others else phase2_size
    phase2 = _cycled(replayed, n_shift, rng)
    for i, lang in enumerate(others):
        share = (phase2_size - n_shift) // len(others) + (1 if i < (phase2_size - n_shift) % len(others) else 0)
        phase2 += _cycled(live[lang], share, rng)
    rng.shuffle(phase2)

    target_ids = {r.id for rs in targets.values() for r in rs}
    live_ids = {r.id for rs in live.values() for r in rs} | {r.id for r in replayed}
    pool = []
    for (lang, _topic), rs in sorted(by.items()):
        if lang not in POOL_LANGUAGES:
            continue
        keep = [r for r in rs if r.id not in target_ids and r.id not in live_ids]
        pool += [with_response(r) for r in keep[:pool_cap]]
    pool += [with_response(r) for r in held if r.id not in {p.id for p in pool}]
    return Scenario(tuple(languages), shift_language, targets, proxy, pool, phase1, phase2)


def _cycled(items: list[Record], n: int, rng: random.Random) -> list[Record]:
    """``n`` items drawn by going through shuffled copies of ``items`` (repeats only once all were used)."""
    out: list[Record] = []
    while items and len(out) < n:
        batch = list(items)
        rng.shuffle(batch)
        out += batch[: n - len(out)]
    return out
