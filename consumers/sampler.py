"""Which served queries of a batch are in their language's sample (issue 20; compass/sampling.py).

A language has a fixed ``sampling.rate`` or a cap ``sampling.max_per_second``, whose rate per time bucket the
workers share through Redis (infra/sampling.py: one round trip per batch, only when a capped language is in it).
Every query gets the rate its language was sampled at (``Query.rate``, recorded in the window's meta) and is
marked ``sampled_out`` when ``keep(id, rate)`` says no. Runs after language ID and routing, so a query of an
unserved or undetermined language is never sampled (it is only counted), and before embedding.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from compass.languages import LanguagesConfig
from consumers import stages
from consumers.query import Query
from infra.sampling import SamplingRates


class Sampler:
    """The sampling rules of the enabled languages; ``rates`` None: no capped language (no Redis needed)."""

    def __init__(self, languages: LanguagesConfig, rates: SamplingRates | None):
        rules = {lang: languages.get(lang).sampling for lang in languages.enabled}
        self.fixed = {lang: s.rate for lang, s in rules.items() if s.max_per_second is None and s.rate < 1.0}
        self.caps = {lang: float(s.max_per_second) for lang, s in rules.items() if s.max_per_second is not None}
        if self.caps and rates is None:
            raise ValueError(f"languages {sorted(self.caps)} have sampling.max_per_second; the sampler needs the "
                             "shared rates (infra/sampling.SamplingRates)")
        self.store = rates

    @property
    def active(self) -> bool:
        return bool(self.fixed or self.caps)

    def mark(self, queries: list[Query]) -> list[Query]:
        """The queries with their ``rate`` and ``sampled_out`` set (served queries of sampled languages only)."""
        if not self.active:
            return queries
        rated = [replace(q, rate=self.fixed[q.lang]) if q.served and q.lang in self.fixed else q for q in queries]
        capped = [i for i, q in enumerate(rated) if q.served and q.lang in self.caps]
        if capped:
            counts: dict[str, Counter] = defaultdict(Counter)
            for i in capped:
                counts[rated[i].lang][self.store.bucket_of(rated[i].traffic.at_ms)] += 1
            frozen = self.store.rates(counts, self.caps)
            for i in capped:
                q = rated[i]
                rated[i] = replace(q, rate=frozen[(q.lang, self.store.bucket_of(q.traffic.at_ms))])
        return stages.sample(rated)


def batch_rates(kept: list[Query]) -> dict[str, float]:
    """Per language, the rate of its newest kept query in the batch: what the window records it was filled at."""
    return {q.lang: q.rate for q in kept}


__all__ = ["Sampler", "batch_rates"]
