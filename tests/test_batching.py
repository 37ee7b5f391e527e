"""pad, left_padded, prompt_completion_batch, logits_to_keep."""

from __future__ import annotations

import torch

from sftdpo.batching import IGNORE_INDEX as X
from sftdpo.batching import left_padded, logits_to_keep, pad, prompt_completion_batch


def test_pad_right_and_left() -> None:
    seqs = [[1, 2, 3], [4], []]
    right = pad(seqs, 0)
    assert right.dtype == torch.long
    assert right.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert pad(seqs, 9, side="left").tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 9]]
    assert pad([(5, 6)], 0).tolist() == [[5, 6]]


def test_prompt_completion_batch() -> None:
    prompts = [(11, 12, 13), (14,)]
    completions = [(7,), (8, 9)]
    batch = prompt_completion_batch(prompts, completions, pad_id=5)
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "labels"}
    # ids are concatenated as given (never re-tokenized), padded with pad_id on the left
    assert batch["input_ids"].tolist() == [[11, 12, 13, 7], [5, 14, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    # positions count real tokens only, so a padded row sees the positions of its unpadded self
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 1, 2]]
    # prompt and padding carry no loss, whatever the pad id is
    assert batch["labels"].tolist() == [[X, X, X, 7], [X, X, 8, 9]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_prompt_completion_batch_keeps_token_boundaries(tiny_model) -> None:
    _, tokenizer = tiny_model
    prompt, answer = 'Answer "yes" or "no":', " yes"
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(answer, add_special_tokens=False)["input_ids"]
    batch = prompt_completion_batch([p], [c], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"][0].tolist() == p + c
    assert batch["labels"][0].tolist() == [X] * len(p) + c


def test_left_padded_rows_end_together() -> None:
    batch = left_padded([(1, 2, 3), (4,)], pad_id=0)
    assert batch["input_ids"][:, -1].tolist() == [3, 4]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_logits_to_keep_hand_worked() -> None:
    # completions of 1 and 2 tokens, left-padded: labels occupy the last 2 columns -> keep 3 logits
    batch = prompt_completion_batch([(1, 2, 3), (4,)], [(5,), (6, 7)], pad_id=0)
    assert logits_to_keep(batch["labels"]) == 3
    assert logits_to_keep(torch.full((2, 4), X)) == 1
