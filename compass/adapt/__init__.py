"""Per-language DoRA adapters and their ECDA update (§3.3.3, §4.3). Pure method code: no Kafka, no Redis."""

from compass.adapt.anchors import anchor_budget, select_anchors
from compass.adapt.checkpoint import Interrupted, TrainState, load_checkpoint, save_checkpoint
from compass.adapt.config import AdaptError, ECDAConfig, TrainConfig
from compass.adapt.ewc import diagonal_fisher, ewc_penalty, snapshot
from compass.adapt.gate import GateResult, gate
from compass.adapt.loss import causal_lm_nll, ecda_loss
from compass.adapt.model import (
    adapter_parameters,
    add_language_adapter,
    base_parameters,
    load_base,
    load_tokenizer,
    packaged_model,
    resolve_device,
)
from compass.adapt.train import TrainResult, ecda_step_loss, evaluate, train_adapter

__all__ = [
    "AdaptError",
    "ECDAConfig",
    "GateResult",
    "Interrupted",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "adapter_parameters",
    "add_language_adapter",
    "anchor_budget",
    "base_parameters",
    "causal_lm_nll",
    "diagonal_fisher",
    "ecda_loss",
    "ecda_step_loss",
    "evaluate",
    "ewc_penalty",
    "gate",
    "load_base",
    "load_checkpoint",
    "load_tokenizer",
    "packaged_model",
    "resolve_device",
    "save_checkpoint",
    "select_anchors",
    "snapshot",
    "train_adapter",
]
