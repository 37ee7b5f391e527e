"""The Task interface: what a study needs from a task. A new task is one file implementing it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SFTExample:
    """A supervised example as token ids: loss on the completion only."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]


@dataclass(frozen=True)
class PreferencePair:
    """A DPO pair: the same prompt, a chosen and a rejected completion (token ids)."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


class Task(ABC):
    """A task: its data as token ids, its preference pairs, its metrics and baselines.

    Subclasses set `name`, `metric` (the primary metric's key in evaluate()'s result) and
    `higher_is_better`, and are constructed with (data_root, tokenizer).
    """

    name: str
    metric: str
    higher_is_better: bool = True
    splits: tuple[str, ...] = ("train", "dev", "test")

    def __init__(self, data_root: Path, tokenizer):
        self.data_root = Path(data_root)
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:  # GPT-2 has none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token

    @abstractmethod
    def sft_examples(self, split: str = "train", **options) -> list[SFTExample]:
        """Supervised examples of a split."""

    @abstractmethod
    def preference_pairs(self, split: str = "train", **options) -> list[PreferencePair]:
        """DPO pairs of a split."""

    @abstractmethod
    def evaluate(self, model, split: str = "test", seed: int = 0, **options) -> dict[str, float]:
        """Metrics of a model on a split; the primary metric under key `self.metric`."""

    @abstractmethod
    def baselines(self, split: str = "test", seed: int = 0) -> dict[str, float]:
        """Reference points a model must beat (majority class, calibration baselines)."""

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of a text, no special tokens added."""
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
