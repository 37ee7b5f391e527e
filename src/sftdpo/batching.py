"""Padding token-id lists into tensors; the one place that knows the label-masking convention."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100
"""Label value for positions that carry no loss (prompt and padding), as in Hugging Face."""


def pad(seqs: Sequence[Sequence[int]], pad_value: int, side: str = "right") -> torch.Tensor:
    """(B, T) LongTensor of the sequences padded to the longest, on the given side."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            if side == "right":
                out[i, : len(s)] = torch.as_tensor(s)
            else:
                out[i, width - len(s):] = torch.as_tensor(s)
    return out


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids (B, T), left-padded so every row ends at T-1.

    Left padding aligns the rows' ends, so the logits a loss needs are the last few positions
    of every row (see `logits_to_keep`); position ids count real tokens only, so a padded
    row computes exactly what the unpadded sequence would.
    """
    mask = pad([[1] * len(s) for s in seqs], 0, side="left")
    return {"input_ids": pad(seqs, pad_id, side="left"), "attention_mask": mask,
            "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0)}


def prompt_completion_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                            pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids, labels (B, T) for prompt+completion, left-padded;
    loss only on the completion (labels IGNORE_INDEX on prompt and padding).

    Prompt and completion are tokenized separately and concatenated as ids, never re-tokenized
    as one string (enc(a + b) != enc(a) + enc(b) at the boundary).
    """
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    labels = [[IGNORE_INDEX] * len(p) + list(c) for p, c in zip(prompts, completions)]
    return {**left_padded(seqs, pad_id), "labels": pad(labels, IGNORE_INDEX, side="left")}


def logits_to_keep(labels: torch.Tensor) -> int:
    """How many final positions of a left-padded batch carry logits that some label needs.

    The label at position t is predicted by the logits at t-1, so this is T - first + 1 for the
    first labelled position over the batch; computing only these logits skips the LM head
    (vocab-sized) on prompt positions.
    """
    labelled = (labels != IGNORE_INDEX).any(dim=0)
    if not labelled.any():
        return 1
    first = int(labelled.float().argmax())
    return labels.shape[1] - first + 1


def model_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: int = 0) -> torch.Tensor:
    """(B, K, V) logits of the last `keep` positions of a left-padded batch (0 = all positions)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"], logits_to_keep=keep).logits


def by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (sorted longest first) for inference, where order does not
    matter: little padding. Scatter the results back with `torch.cat(parts)[inverse]`, where inverse
    is `torch.argsort(torch.tensor([i for b in batches for i in b]))`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
