"""Configuration of one selection run (§3.2): a frozen dataclass checked field by field in ``__post_init__``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Literal

from compass import params
from compass.errors import CompassError
from compass.params import check_choice, check_int, check_real

# compass      COMPASS-S: stochastic rounding of quotas, items drawn ∝ eq. 1 scores (seeded). The default.
# compass-d    COMPASS-D: largest-remainder quotas, arg max of eq. 1 scores (stable tie-break by row).
# no-cluster-weights   Table 2 ablation: even quotas over clusters with candidates, arg max of eq. 1 scores.
# no-instance-weights  Table 2 ablation: COMPASS-S quotas, uniform draws within a cluster (no eq. 1, no delta).
# target / random / all / langsim   baselines: nothing, B|D_t| uniform rows, the whole pool, similar languages.
METHODS: tuple[str, ...] = (
    "compass",
    "compass-d",
    "no-cluster-weights",
    "no-instance-weights",
    "target",
    "random",
    "all",
    "langsim",
)
COMPASS_METHODS: tuple[str, ...] = METHODS[:4]
BOUNDARY_MODES: tuple[str, ...] = ("near", "margin")


class SelectionError(CompassError, ValueError):
    """A selection parameter or input is invalid; the message names it, the value received and the fix."""


def bad_param(name: str, owner: str, expected: str, got: object) -> SelectionError:
    """The project's error sentence (compass/params.py) as a SelectionError."""
    return params.bad_param(name, owner, expected, got, SelectionError)


@dataclass(frozen=True)
class SelectionConfig:
    """How to pick S ⊂ D_aux for one target language (§3.2.2-3.2.3). Field help lives in ``metadata['help']``."""

    budget: float = field(
        default=0.8, metadata={"help": "B of §3.1.1: select round(B * |D_t|) pool rows; a float in (0, 10]."}
    )
    method: str = field(default="compass", metadata={"help": f"one of {', '.join(METHODS)}."})
    seed: int = field(default=0, metadata={"help": "seed of every random draw (quotas, sampling, calibration)."})
    eps: float = field(default=1.0, metadata={"help": "epsilon of §3.2.2: w_k = n_eval^k / (n_t^k + eps); > 0."})
    tau_sim: float | None = field(
        default=None,
        metadata={
            "help": "cosine threshold of the neighbour graph (§3.2.3). None: calibrate the paper's 0.90 onto "
            "the embedder's own similarity scale (diversity.calibrate_tau_sim); a float in (-1, 1): use as is."
        },
    )
    delta: float = field(
        default=0.25,
        metadata={
            "help": "penalty subtracted from a remaining neighbour's score each time an item is picked (§3.2.3). "
            "Scores lie in [0, 1] (s_proto in [1/3, 1], s_boundary in [0, 1]) and within one cluster s_proto "
            "typically spans ~0.1-0.2, so 0.25 pushes a near-duplicate of a pick below the bulk of its cluster "
            "in COMPASS-D and cuts its draw probability by ~30% in COMPASS-S, without zeroing it. >= 0; 0 "
            "turns diversity off."
        },
    )
    score_floor: float = field(
        default=1e-3,
        metadata={"help": "scores are clipped to this after penalties so every candidate stays drawable; in (0, 1)."},
    )
    max_repeats: int = field(
        default=3, metadata={"help": "shortfall (§3.2.3): at most this many selections of one row; an int >= 1."}
    )
    decay: float = field(
        default=0.5,
        metadata={"help": "shortfall (§3.2.3): a row picked n times has its score scaled by decay**n; in (0, 1]."},
    )
    boundary: Literal["near", "margin"] = field(
        default="near",
        metadata={
            "help": "orientation of s_boundary (§3.2.3, scores.py): 'near' (the text) scores rows near a decision "
            "boundary 1 (inverted min-max margin); 'margin' (the formula literally) scores the widest margin 1."
        },
    )
    sample_noise: bool = field(
        default=False,
        metadata={"help": "give the noise bucket (label -1, index K) a weight like a cluster; off by default."},
    )
    langsim_k: int = field(
        default=3, metadata={"help": "LangSim baseline: number of most similar auxiliary languages; an int >= 1."}
    )

    def __post_init__(self) -> None:
        own, err = "SelectionConfig", SelectionError
        check_real("budget", own, self.budget, gt=0, le=10, error=err)
        check_choice("method", own, self.method, METHODS, err)
        check_int("seed", own, self.seed, 0, err)
        check_real("eps", own, self.eps, gt=0, must="a finite float > 0 (the paper uses 1.0)", error=err)
        if self.tau_sim is not None:
            check_real("tau_sim", own, self.tau_sim, gt=-1, lt=1, must="None (calibrate) or a float in (-1, 1)",
                       error=err)
        check_real("delta", own, self.delta, ge=0, must="a finite float >= 0", error=err)
        check_real("score_floor", own, self.score_floor, gt=0, lt=1, error=err)
        check_int("max_repeats", own, self.max_repeats, 1, err)
        check_real("decay", own, self.decay, gt=0, le=1, error=err)
        check_choice("boundary", own, self.boundary, BOUNDARY_MODES, err)
        if not isinstance(self.sample_noise, bool):
            raise bad_param("sample_noise", own, "a bool", self.sample_noise)
        check_int("langsim_k", own, self.langsim_k, 1, err)
        # Cross-field: a threshold without a penalty has no effect; say so rather than silently ignore it.
        if self.tau_sim is not None and self.delta == 0:
            warnings.warn("SelectionConfig: tau_sim is set but delta=0, so the neighbours are unused.", stacklevel=3)

    @property
    def stochastic(self) -> bool:
        """True for the methods whose quotas and draws are random (COMPASS-S, no-instance-weights)."""
        return self.method in ("compass", "no-instance-weights")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLIs)."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
