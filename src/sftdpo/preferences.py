"""Sonnet preference-pair constructions (STUDY.md): sampled, shuffled, many-per-prompt, windows.

Every construction uses a true continuation as `chosen`. They differ in the prompts (first 3
lines, or any 3 consecutive lines) and the rejected continuation (the starting policy's sample,
or another sonnet's lines). Few unique prompts per pair is the collapse case of the paper.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from .tasks.base import PreferencePair

log = logging.getLogger(__name__)
PROMPT_LINES = 3


def other_index(i: int, n: int, rng: random.Random) -> int:
    """A uniformly drawn index of another item (never i itself)."""
    return (i + rng.randrange(1, n)) % n


def continuation(lines: Sequence[str], start: int, count: int | None = None) -> str:
    """Lines start..start+count of a sonnet (to its end if count is None), newline-joined."""
    return "\n".join(lines[start:] if count is None else lines[start:start + count])


def sonnet_pairs(task, construction: str = "shuffled", k: int = 4, seed: int = 0, policy=None,
                 progress: bool = True) -> list[PreferencePair]:
    """Preference pairs from the training sonnets; `policy` samples rejections where needed."""
    sonnets = [s.lines for s in task.train_sonnets]
    rng = random.Random(seed)
    if construction in ("sampled", "many-per-prompt"):
        if policy is None:
            raise ValueError(f"pairs '{construction}' need the starting policy to sample rejections")
        per_prompt = k if construction == "many-per-prompt" else 1
        return _sampled_pairs(task, sonnets, per_prompt, seed, policy, progress)
    starts_of = (lambda lines: range(len(lines) - PROMPT_LINES)) if construction == "windows" else (lambda _: [0])
    pairs = []
    for i, lines in enumerate(sonnets):
        for start in starts_of(lines):
            cut = start + PROMPT_LINES
            other = sonnets[other_index(i, len(sonnets), rng)]
            n_lines = len(lines) - cut
            pairs.append(PreferencePair(
                task.prompt_ids(continuation(lines, start, PROMPT_LINES)),
                task.encode(continuation(lines, cut)) + task.eos,
                task.encode(continuation(other, min(cut, len(other) - 1), n_lines)) + task.eos))
    return pairs


def _sampled_pairs(task, sonnets, per_prompt: int, seed: int, policy, progress: bool) -> list[PreferencePair]:
    from tqdm.auto import tqdm

    pairs = []
    total = len(sonnets) * per_prompt
    with tqdm(total=total, desc="sampling rejections", disable=not progress, leave=False) as bar:
        for i, lines in enumerate(sonnets):
            prompt = task.prompt_ids(continuation(lines, 0, PROMPT_LINES))
            chosen = task.encode(continuation(lines, PROMPT_LINES)) + task.eos
            for j in range(per_prompt):
                rejected = task.sample_ids(policy, prompt, seed * 1_000_003 + i * 1_009 + j)
                pairs.append(PreferencePair(prompt, chosen, rejected))
                bar.update(1)
    return pairs


def pair_stats(pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Pairs, unique prompts, and unique prompts per pair (low = few prompts, many pairs each)."""
    unique = len({p.prompt_ids for p in pairs})
    return {"pairs": len(pairs), "unique_prompts": unique, "unique_prompts_per_pair": unique / max(1, len(pairs))}
