"""Configuration of one adapter update (§3.3.3, §4.3, App. D.3-D.4): frozen dataclasses checked in ``__post_init__``.

Errors follow the project's sentence: "The 'x' parameter of Y must be z. Got v instead." so the message alone
names the field, the value received and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from compass import params
from compass.errors import CompassError
from compass.params import check_int, check_real

# §4.3: "We target modules in the attention and feedforward layers"; these are the llama/qwen/mistral names.
LLAMA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdaptError(CompassError, ValueError):
    """An adapter-training parameter or input is invalid; the message names it, the value received and the fix."""


def bad_param(name: str, owner: str, expected: str, got: object) -> AdaptError:
    """The project's error sentence (compass/params.py) as an AdaptError."""
    return params.bad_param(name, owner, expected, got, AdaptError)


@dataclass(frozen=True)
class TrainConfig:
    """DoRA (or, with use_dora=False, plain LoRA) fine-tuning of one language adapter. Defaults are §4.3's
    (Phi-4-mini / Qwen2.5 setting: r=16, lr 2e-4; the paper uses r=8 and lr 1e-4 for LLaMA-8B). alpha, dropout,
    patience, batch size and max length are not given in the paper; the defaults here are common PEFT choices
    (alpha = 2r)."""

    rank: int = 16  # §4.3 r
    alpha: int = 32  # LoRA scaling numerator (scale = alpha / rank)
    dropout: float = 0.05  # dropout on the adapter input
    target_modules: tuple[str, ...] | str = LLAMA_TARGET_MODULES  # or "all-linear" (peft) for other architectures
    lr: float = 2e-4  # §4.3
    betas: tuple[float, float] = (0.9, 0.999)  # §4.3 AdamW (beta1, beta2)
    weight_decay: float = 0.1  # §4.3
    grad_clip: float = 1.0  # §4.3 max global gradient norm
    warmup_ratio: float = 0.1  # §4.3 linear warm-up over this share of the steps, then cosine decay
    max_epochs: int = 3  # §4.3 "at most 3 epochs with early stopping"
    patience: int = 1  # epochs without a validation improvement before stopping
    batch_size: int = 8
    max_length: int = 128  # tokens per example (truncation)
    val_fraction: float = 0.1  # share of the training texts held out when no validation texts are given
    seed: int = 0  # shuffling, validation split and dropout
    use_dora: bool = True  # DoRA (§4.3); False trains a plain LoRA, the kind vLLM and SGLang serve

    def __post_init__(self) -> None:
        owner, err = "TrainConfig", AdaptError
        if not isinstance(self.use_dora, bool):
            raise bad_param("use_dora", owner, "True (DoRA) or False (plain LoRA)", self.use_dora)
        for name in ("rank", "alpha", "max_epochs", "patience", "batch_size", "max_length"):
            check_int(name, owner, getattr(self, name), 1, err)
        check_real("dropout", owner, self.dropout, ge=0.0, lt=1.0, error=err)
        tm = self.target_modules
        if isinstance(tm, str):
            if tm != "all-linear":
                raise bad_param("target_modules", owner, "a tuple of module names or the string 'all-linear'", tm)
        elif not isinstance(tm, tuple | list) or not tm or not all(isinstance(m, str) and m for m in tm):
            raise bad_param(
                "target_modules", owner, "a non-empty tuple of module names (e.g. ('q_proj', 'v_proj'))", tm
            )
        check_real("lr", owner, self.lr, gt=0.0, must="a float > 0 (the paper uses 2e-4 or 1e-4)", error=err)
        b = self.betas
        if not isinstance(b, tuple | list) or len(b) != 2 or not all(
            params.is_number(x) and 0.0 <= x < 1.0 for x in b
        ):
            raise bad_param("betas", owner, "a pair of floats in [0, 1), e.g. (0.9, 0.999)", b)
        check_real("weight_decay", owner, self.weight_decay, ge=0.0, error=err)
        check_real("grad_clip", owner, self.grad_clip, gt=0.0, must="a float > 0 (max gradient norm)", error=err)
        check_real("warmup_ratio", owner, self.warmup_ratio, ge=0.0, lt=1.0, error=err)
        check_real("val_fraction", owner, self.val_fraction, ge=0.0, lt=1.0,
                   must="a float in [0, 1) (0 turns early stopping off)", error=err)
        check_int("seed", owner, self.seed, None, err)


@dataclass(frozen=True)
class ECDAConfig:
    """Elastic Consolidation and Distributional Anchoring (§3.3.3). Defaults: lambda=2, beta=0.1 (App. D.4, the
    Pareto-optimal pair of the sweep) and an anchor buffer of 5% of the cycle's data (App. D.3, Table 12).

    ``anchor_batch_size``: anchor rows in each training step (the L_DAR micro-batch). None (default) = one pass over
    B_anchor per epoch, ceil(|B_anchor| / steps_per_epoch) rows a step (at least 1); an int is clamped to
    |B_anchor|. Not fixed by the paper; see compass/adapt/train.py for why one pass per epoch."""

    beta: float = 0.1  # weight of L_DAR(B_anchor)
    lam: float = 2.0  # lambda of L_EWC = lambda/2 * sum_j F_j (theta_j - theta_j_prev)^2
    anchor_fraction: float = 0.05  # |B_anchor| = round(anchor_fraction * n_total)
    anchor_batch_size: int | None = None  # anchor rows per step; None: one pass over B_anchor per epoch

    def __post_init__(self) -> None:
        owner, err = "ECDAConfig", AdaptError
        check_real("beta", owner, self.beta, ge=0.0, must="a float >= 0 (App. D.4 default 0.1)", error=err)
        check_real("lam", owner, self.lam, ge=0.0, must="a float >= 0 (App. D.4 default 2)", error=err)
        check_real("anchor_fraction", owner, self.anchor_fraction, gt=0.0, le=1.0,
                   must="a float in (0, 1] (App. D.3 default 0.05)", error=err)
        if self.anchor_batch_size is not None and not (
            params.is_int(self.anchor_batch_size) and self.anchor_batch_size >= 1
        ):
            raise bad_param("anchor_batch_size", owner,
                            "an int >= 1 (anchor rows per step) or None (one pass over B_anchor per epoch)",
                            self.anchor_batch_size)
