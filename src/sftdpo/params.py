"""Parameterisation: full fine-tuning or peft LoRA; trainable counts; the reference model."""

from __future__ import annotations

import contextlib
import copy
import logging

import torch

from .config import LoRAConfig
from .errors import UsageError

log = logging.getLogger(__name__)


def add_lora(model: torch.nn.Module, cfg: LoRAConfig, seed: int) -> torch.nn.Module:
    """Wrap model with fresh LoRA adapters (peft) on cfg.targets; base weights frozen.

    Adapter init is seeded; B starts at zero, so the wrapped model equals the base at step 0.
    """
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in present]
    if missing:
        raise UsageError(f"lora targets {missing} are not modules of this model; it has e.g. "
                         + ", ".join(sorted(n for n in present if n)[:12]))
    conv1d = type(model).__name__.startswith("GPT2")  # GPT-2 stores projections transposed (Conv1D)
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                        target_modules=list(cfg.targets), fan_in_fan_out=conv1d, bias="none",
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the adapter merged into its weights (no-op for a non-peft model)."""
    return model.merge_and_unload() if is_lora(model) else model


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def parameter_counts(model: torch.nn.Module) -> dict[str, int | float]:
    """Trainable and total parameters and the trainable fraction."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (all weights for FFT, adapters for LoRA), detached on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable tensors into the model's parameters of the same names."""
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint tensors not in the model: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def reference_context(model: torch.nn.Module):
    """A zero-arg factory of a context manager yielding the reference model.

    LoRA: the policy itself with its adapter disabled (no copy). FFT: a frozen deep copy made now.
    """
    if is_lora(model):
        @contextlib.contextmanager
        def disabled():
            with model.disable_adapter():
                yield model
        return disabled
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return lambda: contextlib.nullcontext(frozen)


def use_fast_kernels(model: torch.nn.Module) -> int:
    """Swap GPT-2's `gelu_new` activation modules for torch's fused kernel of the same function.

    transformers' NewGELUActivation (and FastGELUActivation) write the tanh-approximate GELU as about
    eight tensor ops, each allocating a (B, T, 4d) result, forward and backward; `F.gelu(x,
    approximate="tanh")` (transformers' GELUTanh) computes the same formula in one kernel: equal up to
    float rounding (tested), about 10% of a CPU training step at the 124M shape. The config is
    untouched, so saved checkpoints are unchanged. Returns how many modules were swapped (0 when
    the model has none, or they were swapped already).
    """
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def flops_per_token(model: torch.nn.Module, lora: bool) -> float:
    """Training FLOPs per token (Kaplan et al.): forward 2N, backward 4N for FFT.

    LoRA skips weight gradients of the frozen matrices: backward ~2N (activation grads only).
    N counts the non-embedding-lookup parameters that do matmuls (the tied LM head included once).
    """
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name and "lora_" not in name)
    return (2 + 2) * n if lora else 6 * n
