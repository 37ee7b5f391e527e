"""token_logps, sequence_logps, sft_loss on hand-made logits with hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from sftdpo.batching import IGNORE_INDEX as X
from sftdpo.losses import sequence_logps, sft_loss, token_logps

LN3 = math.log(3)


def test_uniform_logits_give_minus_ln_v_per_unmasked_token() -> None:
    logits = torch.zeros(1, 4, 3)  # (B, T, V): uniform over V = 3
    labels = torch.tensor([[X, 0, 2, X]])
    logps, mask = token_logps(logits, labels)
    # targets are labels[:, 1:] = [0, 2, X]
    assert logps.shape == mask.shape == (1, 3)
    assert torch.allclose(logps, torch.tensor([[-LN3, -LN3, 0.0]]))
    assert mask.tolist() == [[1.0, 1.0, 0.0]]
    assert sequence_logps(logits, labels).item() == pytest.approx(-2 * LN3)
    assert sequence_logps(logits, labels, average=True).item() == pytest.approx(-LN3)
    assert sft_loss(logits, labels).item() == pytest.approx(LN3)


def test_logits_at_t_score_the_label_at_t_plus_1() -> None:
    # position 0 puts p = (1/4, 1/2, 1/4) on the next token; the others are uniform
    logits = torch.zeros(1, 3, 3)
    logits[0, 0] = torch.log(torch.tensor([1.0, 2.0, 1.0]))
    labels = torch.tensor([[X, 1, 0]])
    logps, _ = token_logps(logits, labels)
    assert logps[0, 0].item() == pytest.approx(math.log(0.5))
    assert logps[0, 1].item() == pytest.approx(-LN3)
    # the last position has no next label: its logits never count
    changed = logits.clone()
    changed[0, -1] = torch.tensor([9.0, -9.0, 3.0])
    assert torch.equal(token_logps(changed, labels)[0], logps)


def test_batch_rows_and_averages() -> None:
    logits = torch.zeros(2, 4, 3)
    logits[0, 2] = torch.log(torch.tensor([1.0, 2.0, 1.0]))  # row 0 scores labels[0, 3] = 1 with p = 1/2
    labels = torch.tensor([[X, X, X, 1],
                           [X, 2, 0, 1]])
    total = sequence_logps(logits, labels)
    assert total.shape == (2,)
    assert total.tolist() == pytest.approx([math.log(0.5), -3 * LN3])
    assert sequence_logps(logits, labels, average=True).tolist() == pytest.approx([math.log(0.5), -LN3])
    # sft_loss is the mean over all unmasked tokens of the batch, not the mean of row means
    assert sft_loss(logits, labels).item() == pytest.approx((math.log(2) + 3 * LN3) / 4)


def test_fully_masked_row_is_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[X, X, X]])
    assert sequence_logps(logits, labels).item() == 0.0
    assert sequence_logps(logits, labels, average=True).item() == 0.0


def test_prompt_logits_do_not_change_sft_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    labels = torch.tensor([[X, X, X, 4, 6]])  # 3 prompt tokens, 2 completion tokens
    base = sft_loss(logits, labels)
    changed = logits.clone()
    changed[0, 0] = torch.randn(7) * 10  # predicts prompt token 1: masked
    changed[0, 1] = torch.randn(7) * 10  # predicts prompt token 2: masked
    changed[0, 4] = torch.randn(7) * 10  # last position: nothing after it
    assert sft_loss(changed, labels).item() == pytest.approx(base.item())
    changed[0, 2] = torch.randn(7) * 10  # predicts completion token 4: counts
    assert sft_loss(changed, labels).item() != pytest.approx(base.item())


def test_gradient_reaches_only_completion_positions() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[X, X, X, 4, 6],
                           [X, X, 3, X, X]])  # second row: 2 prompt tokens, 1 answer, 2 padding
    sft_loss(logits, labels).backward()
    touched = logits.grad.abs().sum(dim=-1) > 0  # (B, T)
    assert touched.tolist() == [[False, False, True, True, False],
                                [False, True, False, False, False]]


def test_sft_loss_agrees_with_token_logps() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, :2] = X
    labels[2, 4:] = X
    logps, mask = token_logps(logits, labels)
    assert sft_loss(logits, labels).item() == pytest.approx((-logps.sum() / mask.sum()).item(), rel=1e-5)
