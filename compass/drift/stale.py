"""The stale-cluster rule (paper §6.1): a share of the window the codebook no longer describes, past its level.

Two shares are measured by the service (``noise_share`` and ``share_beyond`` below, applied by
``daemon/scheduler/read.py`` and ``farshare.py``): the noise-bucket share of the window and the far share of recent
points. Either past its level (``daemon.stale_noise_share``,
``daemon.stale_far_share``) means re-clustering, not an adapter update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StaleReading:
    noise_share: float | None  # None: empty window
    far_share: float | None  # None: not measured (no texts, no centroids, or turned off)
    stale: bool
    why: str  # "" when not stale, else which share passed which level


def assess(noise: float | None, far: float | None, noise_level: float, far_level: float) -> StaleReading:
    """Stale when a measured share exceeds its level (strictly, like eq. 6)."""
    why = []
    if noise is not None and noise > noise_level:
        why.append(f"noise share {noise:.3f} > {noise_level}")
    if far is not None and far > far_level:
        why.append(f"far share {far:.3f} > {far_level}")
    return StaleReading(noise, far, bool(why), "; ".join(why))


def noise_share(counts: np.ndarray) -> float | None:
    """Share of the window in the noise bucket (the last one); None for an empty window."""
    counts = np.asarray(counts)
    total = int(counts.sum())
    return None if total == 0 else float(counts[-1]) / total


def share_beyond(distances: np.ndarray, radius: float) -> float | None:
    """Share of ``distances`` strictly greater than ``radius`` (any metric: the far share); None for none."""
    distances = np.asarray(distances)
    return None if len(distances) == 0 else float(np.mean(distances > radius))
