"""Loss math as pure functions: tensors in, tensors out.

Labels follow the Hugging Face convention: aligned with input_ids, IGNORE_INDEX (-100) where a
position carries no loss; the shift to next-token targets happens here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batching import IGNORE_INDEX


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next-token label and its mask.

    logits: (B, T, V); labels: (B, T) with IGNORE_INDEX where masked.
    Returns (logps, mask), both (B, T-1): logps[b, t] = log p(labels[b, t+1] | tokens <= t),
    0 where masked; mask is 1.0 where the label counts.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe = targets.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(logp, 2, safe.unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask.float()


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """(B,) sum (or mean, if average) of log p over each row's unmasked next-token labels."""
    logps, mask = token_logps(logits, labels)
    total = logps.sum(dim=-1)
    return total / mask.sum(dim=-1).clamp(min=1) if average else total


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Scalar mean next-token cross-entropy over all unmasked labels of the batch.

    logits: (B, T, V); labels: (B, T). Prompt and padding positions (IGNORE_INDEX) carry no loss.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)
