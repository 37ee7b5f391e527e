"""Loss math as pure functions: tensors in, tensors out.

Labels follow the Hugging Face convention: aligned with input_ids, IGNORE_INDEX (-100) where a
position carries no loss; the shift to next-token targets happens here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batching import IGNORE_INDEX


def next_token_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K) next-token target of each of the K kept logit positions: labels shifted left by one,
    IGNORE_INDEX at the last position (nothing follows it) and wherever the label is masked."""
    labels = labels[:, labels.shape[1] - logits.shape[1]:]
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next-token label and its mask.

    logits: (B, K, V), the logits of the last K <= T positions; labels: (B, T) with IGNORE_INDEX
    where masked (only the last K columns are read). Returns (logps, mask), both (B, K-1):
    logps[b, t] = log p(labels[b, t+1] | tokens <= t) over those columns, 0 where masked;
    mask is 1.0 where the label counts.
    """
    targets = next_token_targets(logits, labels)
    # cross-entropy on the whole (contiguous) logits: slicing off the last position first would copy
    # the (B, K, V) logits forward and again backward; that position's target is IGNORE_INDEX instead
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                          reduction="none").view(targets.shape)
    mask = targets[:, :-1] != IGNORE_INDEX
    return -nll[:, :-1] * mask, mask.float()


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """(B,) sum (or mean, if average) of log p over each row's unmasked next-token labels."""
    logps, mask = token_logps(logits, labels)
    total = logps.sum(dim=-1)
    return total / mask.sum(dim=-1).clamp(min=1) if average else total


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Scalar mean next-token cross-entropy over all unmasked labels of the batch.

    logits: (B, K, V), the last K <= T positions; labels: (B, T). Prompt and padding positions
    (IGNORE_INDEX) carry no loss.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), next_token_targets(logits, labels).flatten(),
                           ignore_index=IGNORE_INDEX)


# ---- preference losses ----------------------------------------------------------------------
# Each takes h = beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))], the
# reward margin, and returns per-example losses. Options are keyword arguments.

def sigmoid_loss(margins: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigma(h); with label smoothing eps (conservative DPO,
    Mitchell 2023): -(1 - eps) log sigma(h) - eps log sigma(-h)."""
    return -(1 - label_smoothing) * F.logsigmoid(margins) - label_smoothing * F.logsigmoid(-margins)


def ipo_loss(margins: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h/beta - 1/(2 beta))^2, on the unscaled log-ratio difference."""
    return (margins / beta - 1 / (2 * beta)) ** 2


def hinge_loss(margins: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """SLiC hinge (Zhao et al. 2023): max(0, 1 - h)."""
    return torch.relu(1 - margins)


PREFERENCE_LOSSES = {"sigmoid": sigmoid_loss, "ipo": ipo_loss, "hinge": hinge_loss}


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example preference losses and the implicit rewards.

    All inputs (B,) summed sequence log-probs. Returns (losses, chosen_rewards, rejected_rewards),
    each (B,); rewards are beta * (log pi - log ref), detached. When policy == reference every
    margin is 0: the sigmoid loss is ln 2, IPO's is 1/(4 beta^2), hinge's is 1.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    losses = PREFERENCE_LOSSES[loss_type](chosen_rewards - rejected_rewards, beta, label_smoothing)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()
