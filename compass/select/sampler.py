"""The per-cluster sampling loop (§3.2.3).

Each step recomputes eq. 1 with alpha_k = sampled_k / q_k (sampled_k counts selections so far, repeats
included), subtracts delta once per picked neighbour, clips at a positive floor, then either draws a row
∝ score (COMPASS-S) or takes the arg max (COMPASS-D; ties go to the lowest row). Picked rows leave the
candidate set.

Shortfall (fewer candidates than q_k): rows are drawn with replacement; a row picked n times has its score
scaled by decay**n (0.5**n in the paper) and is retired after ``max_repeats`` picks. If even that cannot
fill q_k (n_k * max_repeats < q_k) the cluster delivers what it can. The engine never asks for more: it moves
that remainder to other clusters beforehand (quotas.reallocate) and passes each cluster its final quota.

Cost: O(q_k * n_k) for the score updates plus one FAISS range search (O(n_k d)) per distinct pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compass.select.scores import alpha


@dataclass(frozen=True)
class ClusterDraw:
    rows: np.ndarray  # int64 local indices of the distinct rows picked, in first-pick order
    counts: np.ndarray  # int64 picks per row (>1 only in shortfall)
    scores: np.ndarray  # float64 score (after penalties and floor) when the row was first picked
    shortfall: bool  # the cluster had fewer candidates than its quota

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def sample_cluster(
    s_proto: np.ndarray,
    s_boundary: np.ndarray,
    quota: int,
    rng: np.random.Generator | None,
    *,
    greedy: bool = False,
    neighbours: Callable[[int], np.ndarray] | None = None,
    delta: float = 0.0,
    floor: float = 1e-3,
    max_repeats: int = 3,
    decay: float = 0.5,
) -> ClusterDraw:
    """Pick up to ``quota`` rows of one cluster; see the module doc. ``rng`` may be None when ``greedy``."""
    s_proto = np.asarray(s_proto, dtype=np.float64)
    diff = np.asarray(s_boundary, dtype=np.float64) - s_proto
    n = len(s_proto)
    empty = ClusterDraw(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), n < quota)
    if n == 0 or quota <= 0:
        return empty
    shortfall = n < quota
    cap = max_repeats if shortfall else 1
    times = np.zeros(n, np.int64)
    penalty = np.zeros(n)  # delta * number of picked neighbours
    picked: list[int] = []
    first_score: list[float] = []
    for step in range(quota):
        a = alpha(step, quota)
        s = s_proto + (a * a) * diff  # eq. 1, written as s_proto + alpha^2 (s_boundary - s_proto)
        s -= penalty
        np.maximum(s, floor, out=s)
        eff = s * decay**times if shortfall else s.copy()
        retired = times >= cap
        if retired.all():
            break
        if greedy:
            eff[retired] = -np.inf
            i = int(np.argmax(eff))  # first max: stable tie-break by row
        else:
            eff[retired] = 0.0
            cum = np.cumsum(eff)
            i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
            if i >= n or retired[i]:  # float edge at the top of the range
                i = int(np.flatnonzero(~retired)[-1])
        if times[i] == 0:
            picked.append(i)
            first_score.append(float(s[i]))
        times[i] += 1
        if neighbours is not None and delta > 0:
            penalty[neighbours(i)] += delta  # §3.2.3: subtract delta from each remaining neighbour
    rows = np.asarray(picked, dtype=np.int64)
    return ClusterDraw(rows, times[rows], np.asarray(first_score), shortfall)
