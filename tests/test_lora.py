"""LoRA through peft (sftdpo.params): frozen base, adapter-off reference, merge, counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sftdpo.config import LoRAConfig, OptimConfig
from sftdpo.errors import UsageError
from sftdpo.loop import make_optimizer
from sftdpo.params import add_lora, is_lora, merge_lora, parameter_counts, reference_context
from sftdpo.steps import collate_sft, sft_step
from sftdpo.tasks.base import SFTExample

TEXTS = ["From fairest creatures we desire increase,", "That thereby beauty's rose might never die,",
         "But as the riper should by time decease,", "His tender heir might bear his memory:"]


def _fresh(tiny_backbone: Path):
    from sftdpo.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_backbone))
    return model.eval(), tok


@pytest.fixture
def base_and_lora(tiny_backbone: Path):
    """(base model, LoRA-wrapped copy of the same weights, tokenizer, a batch); both in eval mode."""
    base, tok = _fresh(tiny_backbone)
    other, _ = _fresh(tiny_backbone)
    lora = add_lora(other, LoRAConfig(r=4, alpha=8.0, dropout=0.0), seed=1)
    examples = [SFTExample(tuple(tok(t[:12], add_special_tokens=False)["input_ids"]),
                           tuple(tok(t[12:], add_special_tokens=False)["input_ids"])) for t in TEXTS]
    batch = collate_sft(examples, tok.pad_token_id, 64)
    return base, lora.eval(), tok, batch


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _train_one_step(model, batch, lr: float = 1e-2) -> None:
    opt = make_optimizer(model, OptimConfig(lr=lr))
    model.train()
    loss, _ = sft_step(model, batch)
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()


def test_at_init_the_adapted_model_is_the_base(base_and_lora) -> None:
    """B starts at zero, so base(x) + B A x = base(x)."""
    base, lora, _, batch = base_and_lora
    assert is_lora(lora) and not is_lora(base)
    lora_b = [p for n, p in lora.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    assert torch.allclose(_logits(lora, batch), _logits(base, batch), atol=1e-6, rtol=0)


def test_one_step_trains_only_the_adapters(base_and_lora) -> None:
    base, lora, _, batch = base_and_lora
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    _train_one_step(lora, batch)
    after = dict(lora.named_parameters())
    frozen = [n for n in before if "lora_" not in n]
    adapters = [n for n in before if "lora_" in n]
    assert frozen and adapters
    for n in frozen:
        assert not after[n].requires_grad, n
        assert torch.equal(before[n], after[n].detach()), f"base weight {n} changed"
    for n in adapters:
        assert after[n].requires_grad, n
    changed_b = [n for n in adapters if "lora_B" in n and not torch.equal(before[n], after[n].detach())]
    assert changed_b == [n for n in adapters if "lora_B" in n]  # every B got a gradient step
    assert not torch.allclose(_logits(lora, batch), _logits(base, batch))


def test_disabled_adapter_is_the_base_before_and_after_training(base_and_lora) -> None:
    base, lora, _, batch = base_and_lora
    expected = _logits(base, batch)
    with lora.disable_adapter():
        assert torch.equal(_logits(lora, batch), expected)
    _train_one_step(lora, batch)
    with lora.disable_adapter():
        assert torch.equal(_logits(lora, batch), expected)
    # reference_context gives that same adapter-off model (no copy) ...
    with reference_context(lora)() as ref:
        assert ref is lora
        assert torch.equal(_logits(ref, batch), expected)
    # ... and the adapter is back on afterwards
    assert not torch.allclose(_logits(lora, batch), expected)


def test_merge_gives_the_adapted_model(base_and_lora) -> None:
    base, lora, _, batch = base_and_lora
    _train_one_step(lora, batch)
    adapted = _logits(lora, batch)
    merged = merge_lora(lora)
    assert not is_lora(merged)
    assert type(merged).__name__ == type(base).__name__
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, batch), adapted, atol=1e-5, rtol=0)
    assert not torch.allclose(_logits(merged, batch), _logits(base, batch))


def test_merge_of_a_plain_model_is_a_no_op(base_and_lora) -> None:
    base = base_and_lora[0]
    assert merge_lora(base) is base


def test_fft_reference_is_a_frozen_copy(base_and_lora) -> None:
    base, _, _, batch = base_and_lora
    expected = _logits(base, batch)
    make_ref = reference_context(base)
    _train_one_step(base, batch)
    with make_ref() as ref:
        assert ref is not base and not ref.training
        assert not any(p.requires_grad for p in ref.parameters())
        assert torch.equal(_logits(ref, batch), expected)


def test_parameter_counts(base_and_lora) -> None:
    """Tiny GPT-2 (d = 32, MLP 4d = 128, 2 layers), r = 4 on c_attn, c_proj (attn and MLP), c_fc.

    Per layer r * (in + out): c_attn 4 * (32 + 96) = 512, attn c_proj 4 * (32 + 32) = 256,
    c_fc 4 * (32 + 128) = 640, mlp c_proj 4 * (128 + 32) = 640; 2048 per layer, 4096 in all.
    """
    base, lora, _, _ = base_and_lora
    full = parameter_counts(base)
    assert full["trainable_params"] == full["total_params"] and full["trainable_fraction"] == 1.0
    counts = parameter_counts(lora)
    cfg = base.config
    d, inner = cfg.n_embd, cfg.n_inner or 4 * cfg.n_embd
    per_layer = 4 * ((d + 3 * d) + (d + d) + (d + inner) + (inner + d))
    assert counts["trainable_params"] == cfg.n_layer * per_layer
    if (d, inner, cfg.n_layer) == (32, 128, 2):
        assert counts["trainable_params"] == 4096
    assert counts["total_params"] == full["total_params"] + counts["trainable_params"]
    assert 0 < counts["trainable_fraction"] < 1


def test_targets_restrict_the_adapted_modules(tiny_backbone: Path) -> None:
    model, _ = _fresh(tiny_backbone)
    lora = add_lora(model, LoRAConfig(r=2, targets=("c_fc",)), seed=0)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in lora.named_parameters() if "lora_" in n}
    assert adapted == {"c_fc"}


def test_adapter_init_is_seeded(tiny_backbone: Path) -> None:
    def adapters(seed: int) -> dict[str, torch.Tensor]:
        model, _ = _fresh(tiny_backbone)
        wrapped = add_lora(model, LoRAConfig(r=2), seed=seed)
        return {n: p.detach().clone() for n, p in wrapped.named_parameters() if "lora_A" in n}

    a, b, c = adapters(5), adapters(5), adapters(6)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_unknown_target_is_a_usage_error(tiny_backbone: Path) -> None:
    model, _ = _fresh(tiny_backbone)
    with pytest.raises(UsageError, match="q_proj"):
        add_lora(model, LoRAConfig(targets=("c_attn", "q_proj")), seed=0)
