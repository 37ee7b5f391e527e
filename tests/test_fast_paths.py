"""Every fast path gives the same numbers as the plain computation it replaces."""

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from sftdpo.batching import IGNORE_INDEX, left_padded, logits_to_keep, model_logits, prompt_completion_batch
from sftdpo.losses import sequence_logps
from sftdpo.steps import collate_pairs, pair_logps, sft_step
from sftdpo.tasks.base import PreferencePair

V = 50


def _model():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_layer=2, n_embd=16, n_head=2, n_positions=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


PROMPTS = [[3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]
COMPLETIONS = [[20], [21, 22, 23], [24, 25]]


def _plain_logps(model, prompt, completion):
    """Sum of log p(completion | prompt) from one unpadded sequence."""
    ids = torch.tensor([prompt + completion])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    picked = logp[torch.arange(len(targets)), targets]
    return picked[len(prompt) - 1:].sum()


def test_left_padding_equals_unpadded_forward():
    model = _model()
    batch = left_padded(PROMPTS, pad_id=0)
    logits = model_logits(model, batch)
    for row, p in enumerate(PROMPTS):
        alone = model(input_ids=torch.tensor([p])).logits[0]
        assert torch.allclose(logits[row, -len(p):], alone, atol=1e-5)


def test_logits_to_keep_covers_every_label():
    batch = prompt_completion_batch(PROMPTS, COMPLETIONS, pad_id=0)
    keep = logits_to_keep(batch["labels"])
    assert keep == max(len(c) for c in COMPLETIONS) + 1
    assert (batch["labels"][:, :-keep + 1] == IGNORE_INDEX).all()


def test_sequence_logps_with_kept_logits_equal_plain():
    model = _model()
    batch = prompt_completion_batch(PROMPTS, COMPLETIONS, pad_id=0)
    got = sequence_logps(model_logits(model, batch, logits_to_keep(batch["labels"])), batch["labels"])
    want = torch.stack([_plain_logps(model, p, c) for p, c in zip(PROMPTS, COMPLETIONS)])
    assert torch.allclose(got, want, atol=1e-5)


def test_sft_step_equals_plain_cross_entropy():
    model = _model()
    batch = prompt_completion_batch(PROMPTS, COMPLETIONS, pad_id=0)
    loss, _ = sft_step(model, batch)
    total = sum(-_plain_logps(model, p, c) for p, c in zip(PROMPTS, COMPLETIONS))
    assert torch.allclose(loss, total / sum(len(c) for c in COMPLETIONS), atol=1e-5)


def test_shared_prompt_pairs_equal_two_row_path():
    model = _model()
    pairs = [PreferencePair(tuple(p), (30 + i,), (40 + i,)) for i, p in enumerate(PROMPTS)]
    fast = collate_pairs(pairs, pad_id=0, max_length=32)
    assert "chosen_ids" in fast and fast["input_ids"].shape[0] == len(pairs)
    chosen, rejected, nll = pair_logps(model, fast)
    want_c = torch.stack([_plain_logps(model, list(p.prompt_ids), list(p.chosen_ids)) for p in pairs])
    want_r = torch.stack([_plain_logps(model, list(p.prompt_ids), list(p.rejected_ids)) for p in pairs])
    assert torch.allclose(chosen, want_c, atol=1e-5)
    assert torch.allclose(rejected, want_r, atol=1e-5)
    assert torch.allclose(nll, -want_c, atol=1e-5)
    # the generic two-row path (a multi-token pair forces it) gives the same numbers
    long_pairs = pairs + [PreferencePair((5, 6), (7, 8), (9,))]
    slow = collate_pairs(long_pairs, pad_id=0, max_length=32)
    assert "labels" in slow and slow["input_ids"].shape[0] == 2 * len(long_pairs)
    c2, r2, _ = pair_logps(model, slow)
    assert torch.allclose(c2[:3], want_c, atol=1e-5) and torch.allclose(r2[:3], want_r, atol=1e-5)


def test_single_token_gradients_match():
    """The fast DPO path back-propagates the same gradient as the plain two-row path."""
    pairs = [PreferencePair(tuple(p), (30 + i,), (40 + i,)) for i, p in enumerate(PROMPTS)]
    grads = []
    for fast in (True, False):
        model = _model()
        if fast:
            batch = collate_pairs(pairs, 0, 32)
        else:
            rows = [(list(p.prompt_ids), list(p.chosen_ids)) for p in pairs] + \
                   [(list(p.prompt_ids), list(p.rejected_ids)) for p in pairs]
            batch = prompt_completion_batch([r[0] for r in rows], [r[1] for r in rows], 0)
        c, r, _ = pair_logps(model, batch)
        F.logsigmoid(c - r).sum().backward()
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _sliced_token_logps(logits, labels):
    """The plain computation: drop the last position, log-softmax, gather (copies the logits)."""
    labels = labels[:, labels.shape[1] - logits.shape[1]:]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(logp, 2, targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask.float()


def test_unsliced_losses_equal_sliced_plain_path():
    """token_logps and sft_loss score the full logits with a shifted target instead of slicing them:
    same values and the same gradient as the slicing computation."""
    from sftdpo.losses import sft_loss, token_logps

    batch = prompt_completion_batch(PROMPTS, COMPLETIONS, pad_id=0)
    keep = logits_to_keep(batch["labels"])
    torch.manual_seed(1)
    base = torch.randn(3, keep, V)
    grads = {}
    for name, fn in (("fast", token_logps), ("plain", _sliced_token_logps)):
        logits = base.clone().requires_grad_(True)
        logps, mask = fn(logits, batch["labels"])
        (logps.sum() * 0.7).backward()
        grads[name] = (logps.detach(), mask, logits.grad)
    assert torch.allclose(grads["fast"][0], grads["plain"][0], atol=1e-6)
    assert torch.equal(grads["fast"][1], grads["plain"][1])
    assert torch.allclose(grads["fast"][2], grads["plain"][2], atol=1e-6)
    logits = base.clone().requires_grad_(True)
    loss = sft_loss(logits, batch["labels"])
    plain_logps, plain_mask = _sliced_token_logps(base, batch["labels"])
    assert torch.allclose(loss, -plain_logps.sum() / plain_mask.sum(), atol=1e-6)


def test_fused_gelu_equals_gelu_new():
    """use_fast_kernels swaps GPT-2's gelu_new modules for the fused kernel: same logits and gradients."""
    from sftdpo.params import use_fast_kernels

    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    outs = []
    for fast in (False, True):
        model = _model()
        if fast:
            assert use_fast_kernels(model) == 2  # one per block
            assert use_fast_kernels(model) == 0  # idempotent
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        outs.append((logits.detach(), model.transformer.h[0].mlp.c_fc.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5, rtol=1e-4)


def test_length_sorted_reference_logps_come_back_in_pair_order():
    """compute_reference_logps batches pairs by length; each pair still gets its own log-probs."""
    from sftdpo.steps import compute_reference_logps

    model = _model()
    pairs = [PreferencePair(tuple(p), tuple(c), tuple(c[::-1]) + (30,)) for p, c in zip(PROMPTS, COMPLETIONS)]
    pairs = pairs[::-1] + pairs  # lengths not sorted, repeats split across batches
    chosen, rejected = compute_reference_logps(model, pairs, pad_id=0, max_length=64, device="cpu", batch_size=2)
    for i, p in enumerate(pairs):
        assert torch.allclose(chosen[i], _plain_logps(model, list(p.prompt_ids), list(p.chosen_ids)), atol=1e-5)
        assert torch.allclose(rejected[i], _plain_logps(model, list(p.prompt_ids), list(p.rejected_ids)), atol=1e-5)


def test_length_sorted_answer_logps_come_back_in_prompt_order():
    from types import SimpleNamespace

    from sftdpo.tasks.paraphrase import ParaphraseTask

    model = _model()
    task = SimpleNamespace(label_ids=(1, 2), tokenizer=SimpleNamespace(pad_token_id=0))
    prompts = [tuple(p) for p in PROMPTS[1:] + PROMPTS[:1]]  # shortest first
    logps = ParaphraseTask.answer_logps(task, model, prompts, batch_size=2)
    for i, prompt in enumerate(prompts):
        last = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)
        assert torch.allclose(logps[i], last[[1, 2]], atol=1e-5)
