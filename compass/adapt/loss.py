"""The ECDA objective of §3.3.3:

    L_total = L_task(D_new) + beta * L_DAR(B_anchor) + L_EWC(phi_t^(i), phi_t^(i-1))

L_task and L_DAR are the same causal-LM cross-entropy, on a batch of new data and on a batch of the anchor buffer.
L_EWC is ``compass.adapt.ewc.ewc_penalty`` (the lambda/2 factor lives there).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from compass.adapt.config import bad_param

IGNORE_INDEX = -100  # label value the cross-entropy skips (padding)


def lm_labels(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Labels = input ids, padding (attention_mask == 0) set to -100."""
    labels = input_ids.clone()
    if attention_mask is not None:
        labels[attention_mask == 0] = IGNORE_INDEX
    return labels


def causal_lm_nll(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, *, per_example: bool = False
) -> Tensor:
    """Next-token NLL of a batch: token t+1 predicted from tokens <= t, padding masked.

    ``per_example=False``: the mean over every non-padding target token of the batch (the usual LM loss);
    ``per_example=True``: a (batch,) vector, each row's mean over its own target tokens (a row with a single
    token has no target and gets 0)."""
    if input_ids.dim() != 2:
        raise bad_param("input_ids", "causal_lm_nll", "a (batch, length) tensor of token ids", tuple(input_ids.shape))
    labels = lm_labels(input_ids, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits, targets = logits[:, :-1, :].float(), labels[:, 1:]
    tok = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    valid = (targets != IGNORE_INDEX).to(tok.dtype)
    if per_example:
        return (tok * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)
    return (tok * valid).sum() / valid.sum().clamp_min(1.0)


def ecda_loss(task_loss: Tensor, anchor_loss: Tensor | None, ewc: Tensor | None, beta: float) -> Tensor:
    """§3.3.3: L_task + beta * L_DAR + L_EWC. ``anchor_loss``/``ewc`` None: that term is absent (0)."""
    total = task_loss
    if anchor_loss is not None:
        total = total + beta * anchor_loss
    if ewc is not None:
        total = total + ewc
    return total
