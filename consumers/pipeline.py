"""One polled batch carried from records to the Redis writes, the dead letters and the checkpoint.

    decode and validate -> language ID where ``lang`` is absent -> served or not -> the language's sample
    (``sampling`` in languages.yaml: a fixed rate or a cap, consumers/sampler.py) -> embed the sampled served only,
    each text cut to ``consumer.max_embed_chars`` (one call) -> assign them to the codebook's buckets ->
    quality scores -> one atomic Redis update of the windows (``WindowStore.apply_batch``; ids de-duplicated
    within ``consumer.dedup_horizon_s``) -> one of the unserved counts (``UnservedStore.apply``) -> wait for
    dead-letter acks -> commit offset+1 per partition -> eq. 2 centroid update -> maybe publish a revision

Bad input is never dropped silently: every message is either applied to a window, counted as unserved, counted as
sampled out, or sent to the dead-letter topic with a reason (see infra/deadletter.py and consumers/stages.py).
A sampled-out message is committed with its batch; it still counts as served traffic in the unserved store.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from compass.languages import LanguagesConfig
from consumers import stages
from consumers.checkpoint import Checkpoint
from consumers.codebook_sync import CodebookSync
from consumers.metrics import ConsumerMetrics
from consumers.query import Query, decode
from consumers.sampler import Sampler, batch_rates
from consumers.stats import BatchStats
from infra import deadletter as dl
from infra.retry import retrying
from infra.safejson import JsonLimits
from infra.settings import ConsumerConfig
from infra.unserved import UnservedStore
from infra.window import ApplyResult, StaleCodebookError, WindowStore

log = logging.getLogger(__name__)

STALE_ATTEMPTS = 3  # window writes refused for a newer codebook: reload and re-assign, then give up (an outage)


class Pipeline:
    """The stages of one batch and the stores they write. ``quality_key`` None: no quality scores."""

    def __init__(self, cc: ConsumerConfig, languages: LanguagesConfig, *, identifier: Any, embedder: Any,
                 codebook: CodebookSync, windows: WindowStore, unserved: UnservedStore, checkpoint: Checkpoint,
                 dead_letters: dl.DeadLetterWriter | dl.NullDeadLetters, metrics: ConsumerMetrics,
                 quality_key: str | None, sampler: Sampler):
        self.cc, self.languages, self.enabled = cc, languages, frozenset(languages.enabled)
        self.identifier, self.embedder, self.codebook = identifier, embedder, codebook
        self.windows, self.unserved, self.checkpoint = windows, unserved, checkpoint
        self.dead_letters, self.metrics, self.quality_key = dead_letters, metrics, quality_key
        self.limits = JsonLimits(max_depth=cc.max_json_depth, max_digits=cc.max_number_digits)
        self.sampler = sampler
        if metrics is not None:
            metrics.observe_cache(embedder, baseline=True)

    def route(self, queries: list[Query], now_ms: int) -> list[Query]:
        return stages.route(queries, self.enabled, now_ms)

    def process(self, records: list[Any], stats: BatchStats, *, alone: bool = False) -> list[str]:
        """Carry ``records`` through to the commit; returns the languages whose windows were written."""
        m, cap = self.metrics, self.cc.max_embed_chars
        with m.stage_seconds.labels("decode").time():
            queries, bad = decode(records, self.cc.max_message_bytes, self.limits)

        # Language first: only served queries are embedded (unserved and undetermined ones are only counted).
        with m.stage_seconds.labels("enrich").time():
            queries = stages.identify(queries, self.identifier, cap, bad, alone=alone)
            self.codebook.sync()
            queries = self.route(queries, int(time.time() * 1000))
            # Sampling right after language ID and routing, before embedding. Language ID runs only on events
            # without ``lang``, so an event that carries its language is sampled out having cost no language ID.
            queries = self.sampler.mark(queries)
            sampled_out = [q for q in queries if q.served and q.sampled_out]
            served = [q for q in queries if q.served and not q.sampled_out]
            for q in served:
                if len(q.text) > cap:
                    stats.truncated += 1
                    m.truncated.labels(q.lang).inc()
            served = stages.embed(served, self.embedder, cap, bad, alone=alone)
            m.observe_cache(self.embedder)

        with m.stage_seconds.labels("assign").time():
            served = stages.assign(served, self.codebook.codebook, bad, alone=alone)
            served = stages.score_quality(served, self.quality_key, bad)
            # a served query a stage failed on is out of the window, the centroid update and the traffic counts
            kept = {q.position for q in served}
            traffic = [q.traffic for q in queries if not q.served or q.sampled_out or q.position in kept]

        with m.stage_seconds.labels("redis").time():
            for letter in bad:
                self.dead_letters.send(letter)  # async; acknowledged below, before the commit
            for lang, res in self._apply(served).items():
                stats.applied += res.applied
                stats.duplicates += res.duplicates
                stats.resent += res.resent
                stats.langs[lang] += res.applied
            counted = self.unserved.apply(traffic)  # after the windows: each store skips what it already holds
            stats.unserved, stats.unserved_langs = counted.unserved.total(), counted.unserved
            stats.unserved_duplicates = counted.duplicates_unserved
            stats.sampled_out_langs = Counter(q.lang for q in sampled_out)
            stats.sampled_out = len(sampled_out)
            self.windows.add_sampled_out(stats.sampled_out_langs)  # for the daemon's status page

        with m.stage_seconds.labels("dead_letter").time():
            self.dead_letters.flush()
        for letter in bad:
            stats.reasons[letter.reason] += 1
            m.dead_letters.labels(letter.reason).inc()
        stats.dead_lettered = len(bad)

        with m.stage_seconds.labels("commit").time():
            self.checkpoint.stage(records)
            stats.committed = self.checkpoint.commit()

        m.messages.labels("applied").inc(stats.applied)
        m.messages.labels("duplicate").inc(stats.duplicates + stats.unserved_duplicates)
        m.messages.labels("unserved").inc(stats.unserved)
        m.messages.labels("dead_lettered").inc(stats.dead_lettered)
        m.messages.labels("sampled_out").inc(stats.sampled_out)
        for lang, n in stats.unserved_langs.items():
            m.unserved.labels(lang).inc(n)
        for lang, n in stats.sampled_out_langs.items():
            m.sampled_out.labels(lang).inc(n)
        if served:  # eq. 2, after the write it describes succeeded
            self.codebook.update(np.stack([q.vector for q in served]))
        stats.published = self.codebook.maybe_publish()
        stats.codebook_version = self.codebook.version
        return sorted({q.lang for q in served})

    def _apply(self, served: list[Query]) -> dict[str, ApplyResult]:
        """One atomic window update; if another worker already moved a window to a newer codebook, reload it,
        re-assign the refused languages and apply them again (the store wrote nothing for them)."""
        results: dict[str, ApplyResult] = {}
        todo = served

        def reload(state: Any) -> None:
            nonlocal todo
            e: StaleCodebookError = state.outcome.exception()
            results.update(e.results)
            log.warning("a window has a newer codebook; reloading", extra={"stale": e.stale})
            self.codebook.reload()
            todo = stages.reassign([q for q in todo if q.lang in set(e.stale)], self.codebook.codebook)

        for attempt in retrying(on=StaleCodebookError, attempts=STALE_ATTEMPTS, base_s=0.0, max_s=0.0,
                                jitter=False, before_sleep=reload):
            with attempt:
                by_lang = stages.by_language(todo, self.cc.max_embed_chars)
                if by_lang:
                    request = {lang: (self.languages.get(lang).window_size, items) for lang, items in by_lang.items()}
                    results.update(self.windows.apply_batch(request, self.codebook.version,
                                                            self.codebook.codebook.n_buckets,
                                                            sampling_rates=batch_rates(todo)))
        return results

    def dead_letter_all(self, records: list[Any], stats: BatchStats, detail: str) -> None:
        """Dead-letter ``records`` as internal_error and commit past them."""
        for r in records:
            self.dead_letters.send(dl.dead_letter_of(r, dl.INTERNAL_ERROR, detail))
        self.dead_letters.flush()
        stats.applied = stats.duplicates = stats.unserved = stats.unserved_duplicates = stats.sampled_out = 0
        stats.sampled_out_langs = Counter()
        stats.dead_lettered = len(records)
        stats.reasons = Counter({dl.INTERNAL_ERROR: len(records)})
        self.metrics.dead_letters.labels(dl.INTERNAL_ERROR).inc(len(records))
        self.metrics.messages.labels("dead_lettered").inc(len(records))
        self.checkpoint.stage(records)
        stats.committed = self.checkpoint.commit()
