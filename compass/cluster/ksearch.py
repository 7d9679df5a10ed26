"""What KMeans and Agglomerative share as clusterers that choose K: the config fields (a fixed K or a silhouette
search over ``k_range``, scored on at most ``silhouette_sample`` rows), their checks, and the saved search result.
Field factories keep each config's field order (and so its positional arguments and its serialised form)."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compass.cluster.base import check_int, check_int_seq, param_error

K_RANGE = tuple(range(10, 121, 5))  # App. E: K from 10 to 120 in steps of 5


class KSearchConfig(Protocol):
    n_clusters: int | None
    k_range: tuple[int, ...]
    max_fit_samples: int


def n_clusters_field() -> Any:
    """``n_clusters``: a fixed K, or None to search ``k_range``."""
    return field(default=None, metadata={"help": "Fixed K; None searches k_range by silhouette."})


def k_range_field(help: str) -> Any:
    """``k_range``: the candidate K values (App. E's grid by default)."""
    return field(default=K_RANGE, metadata={"help": help})


def silhouette_sample_field() -> Any:
    """``silhouette_sample``: the rows the silhouette is scored on."""
    return field(default=5000, metadata={"help": "Rows the silhouette is scored on (bounded)."})


def check_k(cfg: KSearchConfig, owner: str) -> None:
    """Checks ``n_clusters`` and normalises ``k_range`` (sorted, no duplicates); the first checks of __post_init__."""
    if cfg.n_clusters is not None:
        check_int("n_clusters", owner, cfg.n_clusters, 1)
    cfg.k_range = check_int_seq("k_range", owner, cfg.k_range, 2)


def check_k_fits(cfg: KSearchConfig, owner: str) -> None:
    """A fixed K must not exceed the rows of the fit."""
    if cfg.n_clusters is not None and cfg.n_clusters > cfg.max_fit_samples:
        raise param_error("n_clusters", owner, f"<= max_fit_samples ({cfg.max_fit_samples})", cfg.n_clusters)


class KSearchState:
    """Saves and restores what the K search found: ``chosen_k_`` and the silhouette of every K tried.

    Listed before BaseClusterer in the bases, so these hooks replace its empty ones."""

    def _state(self) -> dict[str, Any]:
        return {
            "chosen_k": getattr(self, "chosen_k_", None),
            "silhouette_scores": {str(k): v for k, v in getattr(self, "silhouette_scores_", {}).items()},
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path) -> None:
        self.silhouette_scores_ = {int(k): float(v) for k, v in state.get("silhouette_scores", {}).items()}
        if state.get("chosen_k") is not None:
            self.chosen_k_ = int(state["chosen_k"])
