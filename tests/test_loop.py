"""The training loop: data order, step plans, the LR schedule, and the Loop on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sftdpo.config import OptimConfig
from sftdpo.loop import MAX_BAD_STEPS, Loop, NumericalFault, epoch_order, plan_steps
from sftdpo.schedule import cosine_lr
from sftdpo.steps import collate_sft, sft_step
from sftdpo.tasks.base import SFTExample

# ------------------------------------------------------------------ pure functions


def test_epoch_order_is_a_deterministic_permutation() -> None:
    order = epoch_order(50, seed=3, epoch=0)
    assert sorted(order) == list(range(50))
    assert order != list(range(50))
    assert epoch_order(50, seed=3, epoch=0) == order  # a pure function of (seed, epoch)
    assert epoch_order(50, seed=3, epoch=1) != order  # reshuffled every epoch
    assert epoch_order(50, seed=4, epoch=0) != order
    assert sorted(epoch_order(50, seed=3, epoch=1)) == list(range(50))


def test_epoch_order_ignores_global_rng() -> None:
    torch.manual_seed(0)
    a = epoch_order(20, seed=1, epoch=2)
    torch.manual_seed(12345)
    torch.rand(7)
    assert epoch_order(20, seed=1, epoch=2) == a


@pytest.mark.parametrize("n, batch_size, grad_accum", [(10, 3, 1), (10, 3, 2), (8, 4, 2), (7, 8, 1), (1, 4, 3)])
def test_plan_steps_covers_every_index_once(n: int, batch_size: int, grad_accum: int) -> None:
    order = epoch_order(n, seed=0, epoch=0)
    steps = plan_steps(order, batch_size, grad_accum)
    flat = [i for step in steps for micro in step for i in micro]
    assert flat == order  # each index exactly once, in the epoch's order
    assert len(steps) == math.ceil(math.ceil(n / batch_size) / grad_accum)
    assert all(1 <= len(micro) <= batch_size for step in steps for micro in step)
    assert all(len(step) == grad_accum for step in steps[:-1])


def test_plan_steps_last_step_is_short() -> None:
    """10 examples, batch 3, accumulation 2: micro-batches [3, 3, 3, 1] -> steps [[3, 3], [3, 1]]."""
    steps = plan_steps(list(range(10)), 3, 2)
    assert [[len(m) for m in step] for step in steps] == [[3, 3], [3, 1]]
    assert steps[-1] == [[6, 7, 8], [9]]
    steps = plan_steps(list(range(10)), 4, 1)
    assert [[len(m) for m in step] for step in steps] == [[4], [4], [2]]


def test_cosine_lr_warmup_and_decay() -> None:
    """peak 1, warmup 4, total 14, floor 0.1.

    warmup: step s -> (s + 1) / 4 = 0.25, 0.5, 0.75, 1.0 for s = 0..3.
    decay over 10 steps: step 4 -> 1.0; step 9 (half way) -> 0.1 + 0.9 * 0.5 = 0.55; step 14 -> 0.1.
    """
    lr = [cosine_lr(s, 14, 1.0, 4, 0.1) for s in range(20)]
    assert lr[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[4] == pytest.approx(1.0)
    assert lr[9] == pytest.approx(0.55)
    assert lr[14] == pytest.approx(0.1)
    assert lr[19] == pytest.approx(0.1)  # clamped past the end
    assert all(a >= b for a, b in zip(lr[4:], lr[5:]))  # non-increasing after warmup
    assert max(lr) == pytest.approx(1.0)


def test_cosine_lr_without_warmup_and_scaled_peak() -> None:
    assert cosine_lr(0, 10, 3e-4, 0) == pytest.approx(3e-4)
    assert cosine_lr(10, 10, 3e-4, 0, floor=0.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(5, 10, 3e-4, 0, floor=0.0) == pytest.approx(1.5e-4)


# ------------------------------------------------------------------ the Loop on the tiny model

TEXT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."


@pytest.fixture
def fresh_model(tiny_backbone: Path):
    """A private copy of the tiny backbone (tests here train it) and its tokenizer."""
    from sftdpo.models import load_model_and_tokenizer

    torch.manual_seed(0)
    return load_model_and_tokenizer(str(tiny_backbone))


def _examples(tok, n: int) -> list[SFTExample]:
    """n prompt/completion examples cut from one sentence at different points."""
    ids = tuple(tok(TEXT, add_special_tokens=False)["input_ids"])
    return [SFTExample(ids[:2 + i % 4], ids[2 + i % 4:]) for i in range(n)]


def _loop(model, tok, tmp_path: Path, step_fn, n: int, **optim) -> Loop:
    from accelerate import Accelerator

    examples = _examples(tok, n)
    cfg = OptimConfig(**{"epochs": 1, "lr": 3e-3, "batch_size": 4, "warmup_ratio": 0.0, **optim})
    return Loop(model=model, step_fn=step_fn,
                collate=lambda idx: collate_sft([examples[i] for i in idx], tok.pad_token_id, 64),
                n_examples=n, cfg=cfg, seed=0, stage_dir=tmp_path / "stage", log_path=tmp_path / "log.jsonl",
                stage="sft", accelerator=Accelerator(cpu=True), progress=False)


def _rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_loss_decreases_and_rows_are_logged(fresh_model, tmp_path: Path) -> None:
    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    loop = _loop(model, tok, tmp_path, sft_step, n=16, epochs=4, warmup_ratio=0.25)
    state = loop.run()
    rows = _rows(tmp_path)
    assert state.global_step == len(rows) == 16  # 4 steps of 4 examples x 4 epochs
    assert state.epoch == 4 and state.skipped_steps == 0 and state.tokens > 0
    assert state.diverged_step == 0 and state.start_loss == pytest.approx(rows[0]["loss"])
    assert [r["step"] for r in rows] == list(range(1, 17))
    losses = [r["loss"] for r in rows]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    # the logged LR is the schedule's (warmup 4 of 16 steps, then cosine to 10%)
    assert [r["lr"] for r in rows] == pytest.approx([cosine_lr(s, 16, 3e-3, 4, 0.1) for s in range(16)])
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert rows[3]["epoch"] == pytest.approx(1.0) and rows[-1]["epoch"] == pytest.approx(4.0)
    assert (tmp_path / "stage" / "state" / "loop.json").exists()


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a)


def test_nan_steps_are_skipped_and_leave_the_weights_alone(fresh_model, tmp_path: Path) -> None:
    """Steps 2 and 4 (1-based) return a NaN loss: they are counted and change no weight."""
    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    snapshots: list[dict] = []
    bad_calls = {1, 3}  # 0-based call numbers; one micro-batch per step

    def step(m, batch):
        snapshots.append(_weights(m))  # the weights this step starts from
        loss, metrics = sft_step(m, batch)
        if len(snapshots) - 1 in bad_calls:
            loss = loss * float("nan")
            metrics = {**metrics, "loss": float("nan")}
        return loss, metrics

    loop = _loop(model, tok, tmp_path, step, n=24, batch_size=4)  # 6 steps
    state = loop.run()
    snapshots.append(_weights(loop.unwrapped))
    assert state.skipped_steps == 2 and state.global_step == 6
    for i in range(6):
        assert _same(snapshots[i], snapshots[i + 1]) == (i in bad_calls), f"step {i + 1}"
    rows = _rows(tmp_path)
    assert [math.isnan(r["loss"]) for r in rows] == [i in bad_calls for i in range(6)]


def test_inf_gradient_is_skipped(fresh_model, tmp_path: Path) -> None:
    """A finite loss whose gradient is inf (via a hook) is skipped as well."""
    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    calls = []

    def step(m, batch):
        calls.append(1)
        loss, metrics = sft_step(m, batch)
        if len(calls) == 1:
            loss.register_hook(lambda g: g * float("inf"))
        return loss, metrics

    before = _weights(model)
    loop = _loop(model, tok, tmp_path, step, n=4, batch_size=4)  # a single step
    state = loop.run()
    assert state.skipped_steps == 1
    assert _same(before, _weights(loop.unwrapped))


def test_consecutive_nan_steps_raise_numerical_fault(fresh_model, tmp_path: Path) -> None:
    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    calls = []

    def step(m, batch):
        calls.append(1)
        loss, metrics = sft_step(m, batch)
        return loss * float("nan"), {**metrics, "loss": float("nan")}

    loop = _loop(model, tok, tmp_path, step, n=3 * MAX_BAD_STEPS, batch_size=1)
    with pytest.raises(NumericalFault, match="NaN"):
        loop.run()
    assert len(calls) == MAX_BAD_STEPS


def test_isolated_nan_steps_do_not_abort(fresh_model, tmp_path: Path) -> None:
    """A NaN every other step is never MAX_BAD_STEPS in a row: the run must finish, counting them."""
    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    calls = []

    def step(m, batch):
        calls.append(1)
        loss, metrics = sft_step(m, batch)
        if len(calls) % 2 == 0:
            return loss * float("nan"), {**metrics, "loss": float("nan")}
        return loss, metrics

    n = 2 * MAX_BAD_STEPS + 2
    loop = _loop(model, tok, tmp_path, step, n=n, batch_size=1)
    state = loop.run()
    assert state.global_step == n
    assert state.skipped_steps == n // 2


def test_divergence_is_the_first_step_the_smoothed_loss_passes_3x_its_start(fresh_model, tmp_path: Path) -> None:
    """Reported losses 1, 1, then 10: the moving average (0.9 old + 0.1 new) is 1, 1, 1.9, 2.71, 3.439,
    so step 5 is the first above 3 x 1; it is recorded once and the stage trains to its end."""
    from sftdpo.loop import DIVERGENCE_FACTOR, LOSS_SMOOTHING

    model, tok = fresh_model
    (tmp_path / "stage").mkdir()
    calls = []

    def step(m, batch):
        calls.append(1)
        loss, metrics = sft_step(m, batch)
        return loss, {**metrics, "loss": 1.0 if len(calls) <= 2 else 10.0}

    loop = _loop(model, tok, tmp_path, step, n=8, batch_size=1)
    state = loop.run()
    assert (DIVERGENCE_FACTOR, LOSS_SMOOTHING) == (3.0, 0.9)
    assert state.start_loss == 1.0 and state.diverged_step == 5 and state.global_step == 8
    assert state.smoothed_loss == pytest.approx(10 - 9 * 0.9 ** 6)
    assert json.loads((tmp_path / "stage" / "state" / "loop.json").read_text())["diverged_step"] == 5


def test_length_grouped_order_is_a_seeded_permutation_with_less_padding() -> None:
    import random

    from sftdpo.loop import epoch_order, length_grouped_order, plan_steps

    rng = random.Random(0)
    lengths = [rng.randint(10, 200) for _ in range(1000)]
    order = length_grouped_order(1000, 5, 0, lengths, batch_size=32, megabatch=8)
    assert sorted(order) == list(range(1000))
    assert order == length_grouped_order(1000, 5, 0, lengths, batch_size=32, megabatch=8)
    assert order != length_grouped_order(1000, 5, 1, lengths, batch_size=32, megabatch=8)
    batches = [b for step in plan_steps(order, 32, 1) for b in step]
    assert [len(b) for b in batches] == [32] * 31 + [8]  # same batch sizes, the short one last

    def padded(o):
        return sum(len(b) * max(lengths[i] for i in b) for step in plan_steps(o, 32, 1) for b in step)

    assert padded(order) < 0.75 * padded(epoch_order(1000, 5, 0))
    firsts = [lengths[b[0]] for b in batches[:-1]]
    assert firsts != sorted(firsts, reverse=True)  # batches are shuffled, not a long-to-short sweep
