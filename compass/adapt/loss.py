"""The ECDA objective of §3.3.3:

    L_total = L_task(D_new) + beta * L_DAR(B_anchor) + L_EWC(phi_t^(i), phi_t^(i-1))

L_task and L_DAR are the same causal-LM cross-entropy, on a batch of new data and on a batch of the anchor buffer.
L_EWC is ``compass.adapt.ewc.ewc_penalty`` (the lambda/2 factor lives there).

Single pass (``weighted_lm_nll``): the task batch and the anchor micro-batch are stacked into one right-padded batch
and every target token carries a weight, 1/N_task on task rows and beta/N_anchor on anchor rows (N = the target
tokens of each part), so one forward/backward gives exactly mean_task + beta * mean_anchor, the first two terms above.
"""

from __future__ import annotations

import torch
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
    tok, valid = token_nll(model, input_ids, attention_mask)
    if per_example:
        return (tok * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)
    return (tok * valid).sum() / valid.sum().clamp_min(1.0)


def token_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(NLL of each target token, 1.0 where that target is real and 0.0 at padding), both (batch, length - 1)."""
    labels = lm_labels(input_ids, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits, targets = logits[:, :-1, :].float(), labels[:, 1:]
    tok = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    return tok, (targets != IGNORE_INDEX).to(tok.dtype)


def stack_batches(first: tuple[Tensor, Tensor | None], second: tuple[Tensor, Tensor | None], pad_id: int = 0
                  ) -> tuple[Tensor, Tensor]:
    """One right-padded (input_ids, attention_mask) batch: the rows of ``first`` then those of ``second``. Right
    padding leaves every real token's causal context (and position) as it was, so its logits do not change."""
    width = max(first[0].size(1), second[0].size(1))
    ids, masks = [], []
    for x, m in (first, second):
        m = torch.ones_like(x) if m is None else m
        pad = width - x.size(1)
        ids.append(F.pad(x, (0, pad), value=pad_id))
        masks.append(F.pad(m, (0, pad), value=0))
    return torch.cat(ids), torch.cat(masks)


def weighted_lm_nll(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, row_weights: Tensor
) -> tuple[Tensor, Tensor]:
    """sum over rows r and their target tokens t of row_weights[r] * NLL(r, t): one forward for rows of different
    weights (§3.3.3 single pass: 1/N_task on task rows, beta/N_anchor on anchor rows). Returns (that sum, each
    row's NLL sum detached, for reporting the parts)."""
    if row_weights.shape != input_ids.shape[:1]:
        raise bad_param("row_weights", "weighted_lm_nll", f"one weight per row, shape {tuple(input_ids.shape[:1])}",
                        tuple(row_weights.shape))
    tok, valid = token_nll(model, input_ids, attention_mask)
    per_row = (tok * valid).sum(dim=1)
    return (per_row * row_weights.to(per_row)).sum(), per_row.detach()


def target_tokens(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Target tokens per row, the count ``causal_lm_nll`` averages over: positions 1.. that are not padding."""
    if attention_mask is None:
        return torch.full((input_ids.size(0),), float(input_ids.size(1) - 1), device=input_ids.device)
    return (attention_mask[:, 1:] != 0).sum(dim=1).float()


def ecda_loss(task_loss: Tensor, anchor_loss: Tensor | None, ewc: Tensor | None, beta: float) -> Tensor:
    """§3.3.3: L_task + beta * L_DAR + L_EWC. ``anchor_loss``/``ewc`` None: that term is absent (0)."""
    total = task_loss
    if anchor_loss is not None:
        total = total + beta * anchor_loss
    if ewc is not None:
        total = total + ewc
    return total
