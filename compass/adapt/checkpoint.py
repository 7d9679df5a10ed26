"""Training checkpoints of one adapter update, so a retried job continues where it stopped.

A checkpoint is two files in a directory, no pickle: ``state-<step>.safetensors`` (adapter tensors, AdamW moments
flattened per parameter, theta_prev and the Fisher of ECDA, the best epoch's weights, RNG states as uint8) and
``state.json`` (step, epoch, position in the epoch, losses, scheduler step, optimizer param groups, the name of the
tensor file). ``state.json`` is replaced atomically last, so a kill mid-save leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from compass.errors import CompassError

STATE_JSON = "state.json"


class Interrupted(CompassError, RuntimeError):
    """Training stopped on request (SIGTERM) after saving a checkpoint; resume from it later."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"training interrupted at step {step} after a checkpoint; a retry resumes from it")


@dataclass
class TrainState:
    """Everything ``train_adapter`` needs to continue bit-identically (see compass/adapt/train.py)."""

    step: int  # optimizer steps done
    epoch: int  # 1-based epoch in progress
    position: int  # batches of this epoch done
    tensors: dict[str, torch.Tensor]  # "param.<name>", "opt.<i>.<key>", "prev.<name>", "fisher.<name>", "best.<name>",
    # "rng.torch", "rng.cuda", "rng.epoch_gen" (the shuffling generator's state at the start of this epoch)
    meta: dict[str, Any] = field(default_factory=dict)  # losses, val losses, lrs, best, param groups, ...


def save_checkpoint(directory: str | Path, state: TrainState) -> Path:
    """Write ``state`` under ``directory``; older tensor files are removed once the new one is in force."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    name = f"state-{state.step:08d}.safetensors"
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.tensors.items()}
    save_file(tensors, str(d / (name + ".tmp")))
    os.replace(d / (name + ".tmp"), d / name)
    doc = {"step": state.step, "epoch": state.epoch, "position": state.position, "tensors": name, "meta": state.meta}
    tmp = d / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, d / STATE_JSON)
    for old in d.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return d / STATE_JSON


def load_checkpoint(directory: str | Path) -> TrainState | None:
    """The checkpoint in ``directory``, or None when there is none."""
    d = Path(directory)
    path = d / STATE_JSON
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        tensors = load_file(str(d / doc["tensors"]))
        return TrainState(int(doc["step"]), int(doc["epoch"]), int(doc["position"]), tensors, doc["meta"])
    except (OSError, ValueError, KeyError) as e:
        raise CompassError(f"checkpoint {path} is unreadable ({e}); delete {d} to start the job afresh") from None
