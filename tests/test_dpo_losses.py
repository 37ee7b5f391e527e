"""dpo_loss and its variants (sigmoid, IPO, hinge, label smoothing) on hand-worked numbers.

Notation: pc, pr = policy chosen/rejected log-probs; rc, rr = the reference's; the log-ratio
difference d = (pc - rc) - (pr - rr) and the reward margin h = beta * d.
"""

from __future__ import annotations

import math

import pytest
import torch

from sftdpo.losses import PREFERENCE_LOSSES, dpo_loss

LN2 = math.log(2)


def logps(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def equal_policy_and_reference(batch: int = 3) -> tuple[torch.Tensor, ...]:
    """Policy == reference: pc = rc = -5, pr = rr = -7 for every row, so d = h = 0."""
    chosen, rejected = logps(*[-5.0] * batch), logps(*[-7.0] * batch)
    return chosen, rejected, chosen.clone(), rejected.clone()


def test_sigmoid_at_equality_is_ln2_with_zero_rewards() -> None:
    """h = 0: -log sigma(0) = -log(1/2) = ln 2 = 0.693147 for every row; rewards beta * 0 = 0."""
    losses, chosen_rewards, rejected_rewards = dpo_loss(*equal_policy_and_reference(), beta=0.1)
    assert losses.shape == chosen_rewards.shape == rejected_rewards.shape == (3,)
    assert torch.allclose(losses, torch.full((3,), LN2))
    assert losses.mean().item() == pytest.approx(0.6931472, abs=1e-7)
    assert torch.equal(chosen_rewards, torch.zeros(3)) and torch.equal(rejected_rewards, torch.zeros(3))


def test_sigmoid_hand_case() -> None:
    """beta = 1, pc = ln 3, pr = rc = rr = 0: h = ln 3, sigma(ln 3) = 3/4, loss = ln(4/3) = 0.287682.

    A second row with the roles swapped, h = -ln 3: sigma = 1/4, loss = ln 4 = 1.386294.
    """
    ln3 = math.log(3)
    losses, _, _ = dpo_loss(logps(ln3, 0.0), logps(0.0, ln3), logps(0.0, 0.0), logps(0.0, 0.0), beta=1.0)
    assert losses.tolist() == pytest.approx([math.log(4 / 3), math.log(4)], abs=1e-6)
    assert losses.tolist() == pytest.approx([0.287682, 1.386294], abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_at_equality_is_one_over_four_beta_squared(beta: float) -> None:
    """IPO loss = (d - 1/(2 beta))^2; at d = 0 it is 1/(4 beta^2): 25 for beta 0.1, 1 for 0.5, 1/16 for 2."""
    losses, _, _ = dpo_loss(*equal_policy_and_reference(), beta=beta, loss_type="ipo")
    expected = {0.1: 25.0, 0.5: 1.0, 2.0: 0.0625}[beta]
    assert torch.allclose(losses, torch.full((3,), expected), rtol=1e-5)


def test_ipo_hand_case() -> None:
    """pc = -1, rc = -2, pr = -3, rr = -2: d = (-1 + 2) - (-3 + 2) = 1 - (-1) = 2.

    beta 0.5:  (2 - 1/(2*0.5))^2  = (2 - 1)^2 = 1.
    beta 0.25: (2 - 1/(2*0.25))^2 = (2 - 2)^2 = 0 (the IPO target margin is reached exactly).
    beta 0.1:  (2 - 5)^2 = 9 (on the unscaled d, not on h = 0.2).
    """
    args = (logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0))
    for beta, expected in [(0.5, 1.0), (0.25, 0.0), (0.1, 9.0)]:
        losses, chosen_rewards, rejected_rewards = dpo_loss(*args, beta=beta, loss_type="ipo")
        assert losses.item() == pytest.approx(expected, abs=1e-5), beta
        assert chosen_rewards.item() == pytest.approx(beta * 1.0)
        assert rejected_rewards.item() == pytest.approx(beta * -1.0)


def test_hinge_at_equality_is_one() -> None:
    """max(0, 1 - 0) = 1."""
    losses, _, _ = dpo_loss(*equal_policy_and_reference(), beta=0.1, loss_type="hinge")
    assert torch.equal(losses, torch.ones(3))


def test_hinge_hand_cases() -> None:
    """Rows with d = 2, 2, -2, 4 (e.g. row 3: pc - rc = 2 + 2 = 4, pr - rr = -4 + 4 = 0).

    beta = 0.5:  h = 1, 1, -1, 2      -> max(0, 1 - h) = 0, 0, 2, 0 (h = 1 sits exactly on the hinge).
    beta = 0.25: h = 0.5, 0.5, -0.5, 1 -> 0.5, 0.5, 1.5, 0.
    """
    pc, pr = logps(-1.0, 0.0, -3.0, 2.0), logps(-3.0, -2.0, -1.0, -4.0)
    rc, rr = logps(-2.0, -1.0, -2.0, -2.0), logps(-2.0, -1.0, -2.0, -4.0)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="hinge")
    assert losses.tolist() == pytest.approx([0.0, 0.0, 2.0, 0.0], abs=1e-6)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="hinge")
    assert losses.tolist() == pytest.approx([0.5, 0.5, 1.5, 0.0], abs=1e-6)


def test_label_smoothing_hand_case() -> None:
    """eps = 0.1, beta = 1, h = ln 3: sigma(h) = 3/4, sigma(-h) = 1/4.

    loss = -(1 - eps) log(3/4) - eps log(1/4) = 0.9 * 0.2876821 + 0.1 * 1.3862944
         = 0.2589139 + 0.1386294 = 0.3975433.
    """
    ln3 = math.log(3)
    losses, _, _ = dpo_loss(logps(ln3), logps(0.0), logps(0.0), logps(0.0), beta=1.0, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.9 * math.log(4 / 3) + 0.1 * math.log(4), abs=1e-6)
    assert losses.item() == pytest.approx(0.3975433, abs=1e-6)


def test_label_smoothing_at_equality_is_still_ln2() -> None:
    """h = 0: -(1 - eps) log 1/2 - eps log 1/2 = ln 2 for any eps."""
    losses, _, _ = dpo_loss(*equal_policy_and_reference(), beta=0.1, label_smoothing=0.3)
    assert torch.allclose(losses, torch.full((3,), LN2))


def test_zero_label_smoothing_is_plain_sigmoid() -> None:
    """eps = 0 gives exactly -log sigma(h) = softplus(-h) on arbitrary log-probs."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-10 * torch.rand(16, generator=g) for _ in range(4))
    beta = 0.3
    h = beta * ((pc - rc) - (pr - rr))
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=0.0)
    assert torch.allclose(losses, torch.nn.functional.softplus(-h), atol=1e-6)
    default, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert torch.equal(losses, default)


def test_rewards_are_beta_times_log_ratios_and_detached() -> None:
    """beta 0.2, pc = -4, rc = -6, pr = -9, rr = -8: chosen reward 0.2 * 2 = 0.4, rejected 0.2 * -1 = -0.2."""
    pc, pr = logps(-4.0, grad=True), logps(-9.0, grad=True)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, logps(-6.0), logps(-8.0), beta=0.2)
    assert chosen_rewards.item() == pytest.approx(0.4)
    assert rejected_rewards.item() == pytest.approx(-0.2)
    assert losses.requires_grad
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    assert chosen_rewards.grad_fn is None and rejected_rewards.grad_fn is None


@pytest.mark.parametrize("loss_type", sorted(PREFERENCE_LOSSES))
def test_gradient_raises_chosen_and_lowers_rejected(loss_type: str) -> None:
    """d loss / d pc < 0 (descent raises log pi(chosen)) and d loss / d pr > 0, at and off equality.

    At equality with beta = 0.1 (hand-worked):
      sigmoid: d/dpc -log sigma(h) = -beta sigma(-h) = -0.05;          d/dpr = +0.05
      ipo:     d/dpc (d - 1/(2 beta))^2 = 2 (0 - 5) = -10;              d/dpr = +10
      hinge:   d/dpc max(0, 1 - h) = -beta = -0.1 (h < 1);              d/dpr = +0.1
    """
    beta = 0.1
    expected = {"sigmoid": 0.05, "ipo": 10.0, "hinge": 0.1}[loss_type]
    pc, pr = logps(-5.0, -2.0, grad=True), logps(-7.0, -8.0, grad=True)
    # row 0: policy == reference; row 1: the policy already prefers chosen a little (d = 1 + 1 = 2)
    rc, rr = logps(-5.0, -3.0), logps(-7.0, -7.0)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    assert pc.grad[0].item() == pytest.approx(-expected, rel=1e-5)
    assert pr.grad[0].item() == pytest.approx(expected, rel=1e-5)

