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


def prompt_completion_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                            pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels (B, T) for prompt+completion; loss only on the completion.

    Prompt and completion are tokenized separately and concatenated as ids, never re-tokenized
    as one string (enc(a + b) != enc(a) + enc(b) at the boundary).
    """
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    labels = [[IGNORE_INDEX] * len(p) + list(c) for p, c in zip(prompts, completions)]
    input_ids = pad(seqs, pad_id)
    return {"input_ids": input_ids,
            "attention_mask": pad([[1] * len(s) for s in seqs], 0),
            "labels": pad(labels, IGNORE_INDEX)}


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last real token of each right-padded row."""
    return attention_mask.sum(dim=1) - 1
