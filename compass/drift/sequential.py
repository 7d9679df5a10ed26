"""A sequential detector on the stream of cluster assignments: adaptive multinomial CUSUM (``detector: sequential``).

JS over a window (eq. 5-6) waits until enough of the window has turned over before a shift shows; a CUSUM
accumulates evidence query by query and stops as soon as it is sufficient (Page 1954; the adaptive form with a
plug-in alternative is Lorden & Pollak 2005). For each query with cluster id x, after the burn-in of
``compass/drift/calibrated.py`` has measured the no-drift mix p0 of live traffic against the current reference:

    q(x)  = (e(x) + b * p0(x)) / (sum(e) + b)        the recent mix: e = exponentially decayed counts of the
                                                     queries *before* x (memory L queries), shrunk towards p0
    S     = max(0, S + log(q(x) / p0(x)) / phi)      phi: the burn-in's over-dispersion (quasi-likelihood)
    alarm when S > h = ln(false_alarm_every)

Because q is fixed before x is seen, prod q(x)/p0(x) is a non-negative martingale under p0, so by Ville's
inequality the expected queries between false alarms are at least e^h = ``false_alarm_every``: the same budget
the calibrated JS threshold spends, stated the same way. p0 is the burn-in's pooled counts with the Jeffreys
prior (+1/2 per bucket), so a bucket the burn-in never saw is not impossible. L is shorter than the burn-in, so
the plug-in q is noisier than p0 and the estimation error of p0 pushes S down, not up.

State is explicit and JSON-able; ``feed`` is pure (state in, state and peak out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

PRIOR = 10.0  # b: weight of p0 in the alternative, in queries


def memory_for(burn_in: int) -> float:
    """L, the alternative's memory in queries: a fifth of the burn-in, within [20, 200]."""
    return float(min(200, max(20, burn_in // 5)))


@dataclass(frozen=True)
class Cusum:
    p0: tuple[float, ...]  # no-drift mix of live traffic (burn-in, Jeffreys-smoothed)
    h: float  # alarm level, nats: ln(false_alarm_every)
    phi: float = 1.0  # over-dispersion: log-likelihood ratios are divided by it
    memory: float = 100.0  # L
    stat: float = 0.0  # S
    recent: tuple[float, ...] = ()  # e, the decayed counts of recent queries (empty: all zero)

    @classmethod
    def start(cls, burn_counts: tuple[int, ...], false_alarm_every: float, phi: float, burn_in: int) -> Cusum:
        c = np.asarray(burn_counts, dtype=np.float64) + 0.5
        return cls(p0=tuple((c / c.sum()).tolist()), h=math.log(float(false_alarm_every)), phi=max(1.0, phi),
                   memory=memory_for(burn_in))

    def feed(self, labels: np.ndarray) -> tuple[Cusum, float]:
        """The state after ``labels`` (cluster ids, oldest first) and the largest S reached on the way."""
        p0 = self.p0
        k = len(p0)
        e = list(self.recent) if self.recent else [0.0] * k
        total = sum(e)
        decay = 1.0 - 1.0 / self.memory
        s, peak = self.stat, self.stat
        for raw in np.asarray(labels, dtype=np.int64).tolist():
            x = raw if 0 <= raw < k else k - 1  # an id beyond the codebook counts as noise (the last bucket)
            q = (e[x] + PRIOR * p0[x]) / (total + PRIOR)
            s = max(0.0, s + math.log(q / p0[x]) / self.phi)
            peak = max(peak, s)
            e = [v * decay for v in e]
            e[x] += 1.0
            total = total * decay + 1.0
        return replace(self, stat=s, recent=tuple(e)), peak

    def reset(self) -> Cusum:
        return replace(self, stat=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "p0": list(self.p0), "recent": list(self.recent)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Cusum | None:
        if not d:
            return None
        return cls(p0=tuple(d["p0"]), h=float(d["h"]), phi=float(d.get("phi", 1.0)),
                   memory=float(d.get("memory", 100.0)), stat=float(d.get("stat", 0.0)),
                   recent=tuple(d.get("recent", ())))
