"""A sequential detector on the stream of cluster assignments: adaptive CUSUM on check batches (``detector:
sequential``).

JS over a window (eq. 5-6) waits until enough of the window has turned over before a shift shows; a CUSUM
accumulates evidence check by check and stops as soon as it is sufficient (Page 1954; the adaptive form with a
plug-in alternative is Lorden & Pollak 2005). After the burn-in of ``compass/drift/calibrated.py`` has measured
the no-drift mix of live traffic against the current reference, each check's batch of new queries, with bucket
counts c, is scored as

    p0    = n / sum(n)                      the null: n = counts of the burn-in and of every query since
                                            (+ 1/2 pseudo-query spread over the buckets)
    q     = (e + b * p0) / (sum(e) + b)     the recent mix: e = exponentially decayed counts of the queries of
                                            *earlier* checks (memory L queries), shrunk towards p0 (weight b)
    LLR   = log DM(c | a q) - log DM(c | a p0) - k |c|
    S     = max(0, S + LLR);  alarm when S > h = ln(false_alarm_every)

DM(c | a p) is the Dirichlet-multinomial likelihood of the batch with mean p and precision a. Real traffic comes
in bursts (a session asks about one topic several times), so a check's counts scatter more than multinomial
ones: the burn-in measures that over-dispersion phi between its checks of m queries (phi = (m + a) / (1 + a),
taken at its 90% upper confidence bound), and the uncertainty of p0 itself (n holds N queries, worth N / phi
independent ones) adds to it: 1 / (1 + a) = 1 / (1 + a_burst) + 1 / (N / phi + 1). The null is the Bayesian
predictive of "nothing changed since the reference", so it keeps learning from every query; q, fixed before the
batch is seen, follows only the recent ones. Under that null exp(S) is a non-negative martingale between resets,
so by Ville's inequality the expected queries between false alarms are at least e^h = ``false_alarm_every``:
the budget the calibrated JS threshold spends, stated the same way. A shift still shows within two checks: q
moves most of the way to the new mix in one check, the null only by the check's share of n.

k = 0.01 nats per query is Page's reference value: the smallest shift worth an update (a real topic shift is
0.5-3 nats per query). It absorbs the small bias of the smoothing on very regular traffic (counts that barely
vary between checks); subtracting it only makes the bound more conservative.

Forms that did worse (``benchmarks/drift_detection.py``'s bursty stable streams, budget 0.2 false alarms per
10,000 queries): q updated query by query chases every burst (13 per 10,000); a multinomial ratio merely divided
by phi (quasi-likelihood) 5; p0 frozen at the end of the burn-in drifts away from the truth it estimated (0.78
per 10,000 on synthetic *multinomial* streams with K = 20, against 0 with the learning null). The price of
learning q from earlier checks only is one check of lag: a shift shows in the second check after it.

After a re-clustering the burn-in is not run live (the traffic has already shifted; ``compass/drift/baseline.py``):
``start`` gets the counts of the adapter's baseline (its last cycle's window rows on the new codebook) as n, and
the previous reference's phi and m carried over, so p0 is the mix the adapter was trained for, not the drift.

State is explicit and JSON-able; ``feed`` is pure (state in, state and S out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

PRIOR = 10.0  # b: weight of p0 in the alternative, in queries
P0_PRIOR = 0.5  # pseudo-queries spread over all buckets of p0: a bucket the burn-in never saw stays possible
MIN_KL = 0.01  # k: nats per query subtracted from the LLR, the smallest shift of interest (see the docstring)


def memory_for(burn_in: int) -> float:
    """L, the alternative's memory in queries: half the burn-in, within [20, 1000]."""
    return float(min(1000, max(20, burn_in // 2)))


def precision_for(phi: float, queries_per_check: float, burn_in_queries: float) -> float:
    """a of the module docstring: burst over-dispersion phi at m queries per check, plus p0's own uncertainty."""
    m = max(1.0, float(queries_per_check))
    burst = 0.0 if phi <= 1.0 + 1e-9 or m <= phi else 1.0 / (1.0 + (m - phi) / (phi - 1.0))
    n_eff = burn_in_queries / max(1.0, phi)  # bursty queries carry less information about p0
    return 1.0 / (burst + 1.0 / (n_eff + 1.0)) - 1.0


def _log_dm(c: np.ndarray, a: np.ndarray) -> float:
    """log DM(c | a) without the terms that depend on the total precision only (they cancel in a ratio)."""
    return sum(math.lgamma(x + y) - math.lgamma(y) for x, y in zip(c.tolist(), a.tolist(), strict=True) if x)


@dataclass(frozen=True)
class Cusum:
    null: tuple[float, ...]  # the null's counts: burn-in + every query since, + P0_PRIOR spread (p0 = null / sum)
    h: float  # alarm level, nats: ln(false_alarm_every)
    phi: float = 1.0  # the burn-in's over-dispersion between checks (90% upper bound)
    queries_per_check: float = 100.0  # m of the burn-in
    memory: float = 100.0  # L
    stat: float = 0.0  # S
    recent: tuple[float, ...] = ()  # e, the decayed counts of earlier checks' queries (empty: all zero)

    @classmethod
    def start(cls, burn_counts: tuple[int, ...], false_alarm_every: float, phi: float, burn_in: int,
              queries_per_check: float | None = None) -> Cusum:
        c = np.asarray(burn_counts, dtype=np.float64)
        return cls(null=tuple((c + P0_PRIOR / len(c)).tolist()), h=math.log(float(false_alarm_every)),
                   phi=max(1.0, phi), queries_per_check=float(queries_per_check or burn_in),
                   memory=memory_for(burn_in))

    @property
    def p0(self) -> np.ndarray:
        n = np.asarray(self.null)
        return n / n.sum()

    @property
    def precision(self) -> float:
        """a for the next check: burstiness plus what the null's counts leave uncertain about p0."""
        return precision_for(self.phi, self.queries_per_check, float(sum(self.null)))

    def feed(self, labels: np.ndarray) -> tuple[Cusum, float]:
        """The state after one check's new queries (cluster ids), and S after them (the alarm statistic)."""
        p0 = self.p0
        k = len(p0)
        ids = np.asarray(labels, dtype=np.int64)
        if len(ids) == 0:
            return self, self.stat
        ids = np.where((ids >= 0) & (ids < k), ids, k - 1)  # an id beyond the codebook counts as noise (last)
        c = np.bincount(ids, minlength=k).astype(np.float64)
        e = np.asarray(self.recent, dtype=np.float64) if self.recent else np.zeros(k)
        q = (e + PRIOR * p0) / (e.sum() + PRIOR)
        a = self.precision
        llr = _log_dm(c, a * q) - _log_dm(c, a * p0) - MIN_KL * len(ids)
        s = max(0.0, self.stat + llr)
        decay = (1.0 - 1.0 / self.memory) ** len(ids)
        return replace(self, stat=s, recent=tuple((e * decay + c).tolist()),
                       null=tuple((np.asarray(self.null) + c).tolist())), s

    def reset(self) -> Cusum:
        return replace(self, stat=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "null": list(self.null), "recent": list(self.recent)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Cusum | None:
        if not d or "null" not in d:
            return None  # none yet, or one of an older form: the lifecycle runs a new burn-in
        return cls(null=tuple(d["null"]), h=float(d["h"]), phi=float(d.get("phi", 1.0)),
                   queries_per_check=float(d.get("queries_per_check", 100.0)), memory=float(d.get("memory", 100.0)),
                   stat=float(d.get("stat", 0.0)), recent=tuple(d.get("recent", ())))
