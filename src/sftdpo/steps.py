"""Batches and step functions: `step(model, batch) -> (loss, metrics)`. SFT and DPO differ only here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .batching import IGNORE_INDEX, by_length, left_padded, logits_to_keep, model_logits, prompt_completion_batch
from .config import DPOConfig
from .losses import dpo_loss, sequence_logps, sft_loss
from .tasks.base import PreferencePair, SFTExample

Batch = dict[str, torch.Tensor]
StepFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


def fit(prompt: Sequence[int], completion: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut a prompt+completion to max_length: the completion keeps its start, the prompt its end."""
    completion = list(completion)[: max_length - 1]
    keep = max_length - len(completion)
    return list(prompt)[-keep:] if len(prompt) > keep else list(prompt), completion


def collate_sft(examples: Sequence[SFTExample], pad_id: int, max_length: int) -> Batch:
    """input_ids, attention_mask, labels (B, T); labels only on completions."""
    fitted = [fit(e.prompt_ids, e.completion_ids, max_length) for e in examples]
    return prompt_completion_batch([p for p, _ in fitted], [c for _, c in fitted], pad_id)


def pair_length(pair: PreferencePair) -> int:
    """Tokens of a pair's longest row (prompt + the longer answer), for batching by length."""
    return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))


def collate_pairs(pairs: Sequence[PreferencePair], pad_id: int, max_length: int,
                  indices: Sequence[int] | None = None) -> Batch:
    """A DPO batch; `index` (B,) holds the pairs' dataset positions.

    Pairs whose chosen and rejected answers are single tokens after a shared prompt (paraphrase)
    become one row each: the prompt, plus `chosen_ids`/`rejected_ids` (B,); one forward then
    gives both log-probs. Otherwise: chosen rows then rejected rows, (2B, T).
    """
    index = torch.tensor(list(indices) if indices is not None else range(len(pairs)))
    if all(len(p.chosen_ids) == 1 and len(p.rejected_ids) == 1 for p in pairs):
        prompts = [fit(p.prompt_ids, p.chosen_ids, max_length)[0] for p in pairs]
        return {**left_padded(prompts, pad_id), "index": index,
                "chosen_ids": torch.tensor([p.chosen_ids[0] for p in pairs]),
                "rejected_ids": torch.tensor([p.rejected_ids[0] for p in pairs])}
    chosen = [fit(p.prompt_ids, p.chosen_ids, max_length) for p in pairs]
    rejected = [fit(p.prompt_ids, p.rejected_ids, max_length) for p in pairs]
    rows = chosen + rejected
    return {**prompt_completion_batch([p for p, _ in rows], [c for _, c in rows], pad_id), "index": index}


def count_tokens(batch: Batch) -> int:
    """Real (non-padding) tokens in a batch."""
    return int(batch["attention_mask"].sum())


def sft_step(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked next-token cross-entropy on the completion tokens (logits only where labels need them)."""
    loss = sft_loss(model_logits(model, batch, logits_to_keep(batch["labels"])), batch["labels"])
    return loss, {"loss": loss.item()}


def pair_logps(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen_logps, rejected_logps, chosen mean NLL), each (B,), from one forward."""
    if "chosen_ids" in batch:  # shared prompt, single-token answers: one row per pair
        logp = torch.log_softmax(model_logits(model, batch, keep=1)[:, -1].float(), dim=-1)  # (B, V)
        chosen = logp.gather(1, batch["chosen_ids"].unsqueeze(1)).squeeze(1)
        rejected = logp.gather(1, batch["rejected_ids"].unsqueeze(1)).squeeze(1)
        return chosen, rejected, -chosen
    logits = model_logits(model, batch, logits_to_keep(batch["labels"]))
    logps = sequence_logps(logits, batch["labels"])
    b = logps.shape[0] // 2
    chosen_tokens = (batch["labels"][:b, 1:] != IGNORE_INDEX).sum(-1).clamp(min=1)
    return logps[:b], logps[b:], -logps[:b] / chosen_tokens


def make_dpo_step(cfg: DPOConfig, reference: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]) -> StepFn:
    """A DPO step; `reference(batch)` gives the reference's (chosen, rejected) log-probs (B,)."""

    def dpo_step(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        policy_chosen_logps, policy_rejected_logps, chosen_nll = pair_logps(model, batch)
        ref_chosen_logps, ref_rejected_logps = reference(batch)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            cfg.beta, cfg.loss_type, cfg.label_smoothing)
        loss = losses.mean()
        if cfg.rpo_alpha:
            loss = loss + cfg.rpo_alpha * chosen_nll.mean()
        margins = chosen_rewards - rejected_rewards
        return loss, {"loss": loss.item(),
                      "rewards/chosen": chosen_rewards.mean().item(),
                      "rewards/rejected": rejected_rewards.mean().item(),
                      "rewards/margins": margins.mean().item(),
                      "rewards/accuracies": (margins > 0).float().mean().item(),
                      "logratios/chosen": (policy_chosen_logps.detach() - ref_chosen_logps).mean().item(),
                      "logratios/rejected": (policy_rejected_logps.detach() - ref_rejected_logps).mean().item(),
                      "logps/chosen": policy_chosen_logps.detach().mean().item(),
                      "logps/rejected": policy_rejected_logps.detach().mean().item()}

    return dpo_step


def precomputed_reference(chosen: torch.Tensor, rejected: torch.Tensor):
    """Reference log-probs looked up by the batch's pair indices (no reference model kept)."""

    def reference(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch["index"].cpu()
        device = batch["input_ids"].device
        return chosen[idx].to(device), rejected[idx].to(device)

    return reference


def live_reference(ref_model_fn: Callable[[], object]):
    """Reference log-probs from a forward pass each step, in eval mode without gradients.

    ref_model_fn() returns a context manager yielding the reference model (a frozen copy, or
    the LoRA policy with its adapter disabled).
    """

    def reference(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), ref_model_fn() as ref:
            was_training = ref.training
            ref.eval()
            chosen, rejected, _ = pair_logps(ref, batch)
            ref.train(was_training)
        return chosen, rejected

    return reference


@torch.no_grad()
def compute_reference_logps(model: torch.nn.Module, pairs: Sequence[PreferencePair], pad_id: int,
                            max_length: int, device, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (chosen, rejected) log-probs (N,) of every pair, in eval mode (no dropout), once."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    batches = by_length([pair_length(p) for p in pairs], batch_size)
    for index in batches:
        batch = collate_pairs([pairs[i] for i in index], pad_id, max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r, _ = pair_logps(model, batch)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    model.train(was_training)
    inverse = torch.argsort(torch.tensor([i for b in batches for i in b], dtype=torch.long))
    return torch.cat(chosen)[inverse], torch.cat(rejected)[inverse]


__all__ = ["collate_pairs", "collate_sft", "compute_reference_logps", "count_tokens", "live_reference",
           "make_dpo_step", "pair_length", "precomputed_reference", "sft_step"]
