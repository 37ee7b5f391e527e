"""Sonnet preference-pair constructions on the real sonnets with the tiny tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sftdpo.preferences import PROMPT_LINES, other_index, pair_stats, sonnet_pairs
from sftdpo.tasks.base import PreferencePair
from sftdpo.tasks.sonnet import GenerationSettings, SonnetTask

N_TRAIN_SONNETS = 131


@pytest.fixture
def task(tiny_model, data_root: Path) -> SonnetTask:
    """The sonnet task; short samples keep the sampled constructions fast."""
    return SonnetTask(data_root, tiny_model[1], generation=GenerationSettings(max_new_tokens=8))


@pytest.fixture
def five_sonnets(task: SonnetTask, monkeypatch: pytest.MonkeyPatch) -> SonnetTask:
    monkeypatch.setattr(task, "train_sonnets", task.train_sonnets[:5])
    return task


def test_other_index_never_returns_itself() -> None:
    rng = random.Random(0)
    draws = [other_index(i, 5, rng) for i in range(5) for _ in range(40)]
    assert all(d != i for d, i in zip(draws, [i for i in range(5) for _ in range(40)]))
    assert set(draws) == set(range(5))


def test_shuffled(task: SonnetTask) -> None:
    pairs = sonnet_pairs(task, "shuffled", seed=0, progress=False)
    assert len(task.train_sonnets) == N_TRAIN_SONNETS
    assert len(pairs) == N_TRAIN_SONNETS
    assert all(p.chosen_ids != p.rejected_ids for p in pairs)
    assert pair_stats(pairs) == {"pairs": 131, "unique_prompts": 131, "unique_prompts_per_pair": 1.0}
    # prompt = BOS + first 3 lines; chosen = lines 4.. + EOS; rejected = another sonnet's lines
    first = task.train_sonnets[0].lines
    assert pairs[0].prompt_ids == task.prompt_ids("\n".join(first[:PROMPT_LINES]))
    assert pairs[0].chosen_ids == task.encode("\n".join(first[PROMPT_LINES:])) + task.eos
    assert pairs[0].rejected_ids[-1] == task.eos[0]
    rejected_text = task.tokenizer.decode(pairs[0].rejected_ids[:-1])
    owners = [s for s in task.train_sonnets[1:] if rejected_text in s.text]
    assert owners, "the rejected continuation comes from another training sonnet"
    assert rejected_text not in task.train_sonnets[0].text
    # seeded: same seed, same pairs; another seed draws other rejections
    assert sonnet_pairs(task, "shuffled", seed=0, progress=False) == pairs
    other = sonnet_pairs(task, "shuffled", seed=1, progress=False)
    assert [p.chosen_ids for p in other] == [p.chosen_ids for p in pairs]
    assert [p.rejected_ids for p in other] != [p.rejected_ids for p in pairs]


def test_windows_has_many_more_prompts(task: SonnetTask) -> None:
    pairs = sonnet_pairs(task, "windows", seed=0, progress=False)
    expected = sum(len(s.lines) - PROMPT_LINES for s in task.train_sonnets)
    assert len(pairs) == expected > 10 * N_TRAIN_SONNETS
    stats = pair_stats(pairs)
    assert stats["unique_prompts"] > 10 * N_TRAIN_SONNETS
    assert stats["unique_prompts_per_pair"] > 0.95
    assert all(p.chosen_ids != p.rejected_ids for p in pairs)
    # the first window of each sonnet is the shuffled construction's prompt and chosen
    shuffled = sonnet_pairs(task, "shuffled", seed=0, progress=False)
    window_prompts = {p.prompt_ids for p in pairs}
    assert all(p.prompt_ids in window_prompts for p in shuffled)
    # a later window: lines 5-7 of sonnet 1 as prompt, lines 8.. as chosen
    lines = task.train_sonnets[0].lines
    later = pairs[4]
    assert later.prompt_ids == task.prompt_ids("\n".join(lines[4:7]))
    assert later.chosen_ids == task.encode("\n".join(lines[7:])) + task.eos


@pytest.mark.parametrize("construction", ["sampled", "many-per-prompt"])
def test_sampled_constructions_need_a_policy(task: SonnetTask, construction: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        sonnet_pairs(task, construction, progress=False)


def test_many_per_prompt(five_sonnets: SonnetTask, tiny_model) -> None:
    task, policy = five_sonnets, tiny_model[0]
    pairs = sonnet_pairs(task, "many-per-prompt", k=2, seed=3, policy=policy, progress=False)
    assert len(pairs) == 10
    assert pair_stats(pairs) == {"pairs": 10, "unique_prompts": 5, "unique_prompts_per_pair": 0.5}
    for i, sonnet in enumerate(task.train_sonnets):
        a, b = pairs[2 * i], pairs[2 * i + 1]
        assert a.prompt_ids == b.prompt_ids == task.prompt_ids("\n".join(sonnet.lines[:PROMPT_LINES]))
        assert a.chosen_ids == b.chosen_ids == task.encode("\n".join(sonnet.lines[PROMPT_LINES:])) + task.eos
        assert 1 <= len(a.rejected_ids) <= 8  # sampled, at most max_new_tokens
    assert len({p.rejected_ids for p in pairs}) > 5  # the k samples of a prompt differ
    assert sonnet_pairs(task, "many-per-prompt", k=2, seed=3, policy=policy, progress=False) == pairs
    assert sonnet_pairs(task, "many-per-prompt", k=2, seed=4, policy=policy, progress=False) != pairs


def test_sampled_is_one_per_prompt(five_sonnets: SonnetTask, tiny_model) -> None:
    pairs = sonnet_pairs(five_sonnets, "sampled", k=7, seed=3, policy=tiny_model[0], progress=False)
    assert pair_stats(pairs) == {"pairs": 5, "unique_prompts": 5, "unique_prompts_per_pair": 1.0}
    many = sonnet_pairs(five_sonnets, "many-per-prompt", k=2, seed=3, policy=tiny_model[0], progress=False)
    assert [p.rejected_ids for p in pairs] == [p.rejected_ids for p in many[::2]]  # same seeds for sample 0


def test_task_preference_pairs_forward_options(task: SonnetTask) -> None:
    pairs = task.preference_pairs("train", construction="shuffled", seed=0, progress=False)
    assert pairs == sonnet_pairs(task, "shuffled", seed=0, progress=False)


def test_pair_stats_hand_values() -> None:
    """Prompts (1,), (1,), (2,), (1,): 4 pairs, 2 unique prompts, 0.5 unique per pair."""
    pairs = [PreferencePair((1,), (5,), (6,)), PreferencePair((1,), (5,), (7,)),
             PreferencePair((2,), (5,), (6,)), PreferencePair((1,), (8,), (6,))]
    assert pair_stats(pairs) == {"pairs": 4, "unique_prompts": 2, "unique_prompts_per_pair": 0.5}
    assert pair_stats([]) == {"pairs": 0, "unique_prompts": 0, "unique_prompts_per_pair": 0.0}
