"""Task 1: Quora paraphrase detection as a cloze, answered by the next token ` yes` or ` no`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from .. import metrics
from ..batching import by_length, left_padded, model_logits
from ..data.datadir import DataDir, load_quora
from ..data.quora import QuoraPair, read_pairs, split_pairs
from ..errors import UsageError
from ..models import single_token_id
from .base import PreferencePair, SFTExample, Task

TEMPLATE = 'Is "{q1}" a paraphrase of "{q2}"? Answer "yes" or "no":'
LABEL_WORDS = {1: " yes", 0: " no"}
MAX_QUESTION_CHARS = 400  # longer questions are cut so every prompt fits the context


def cloze_prompt(q1: str, q2: str) -> str:
    """The CS224N cloze prompt for a question pair."""
    return TEMPLATE.format(q1=q1[:MAX_QUESTION_CHARS], q2=q2[:MAX_QUESTION_CHARS])


class ParaphraseTask(Task):
    """Quora Question Pairs; accuracy and macro F1 of the restricted yes/no prediction."""

    name = "paraphrase"
    metric = "accuracy"

    def __init__(self, data_root: Path, tokenizer, eval_file: Path | None = None):
        super().__init__(data_root, tokenizer)
        self.eval_file = Path(eval_file) if eval_file else None
        self.label_ids = {y: single_token_id(tokenizer, w) for y, w in LABEL_WORDS.items()}
        self._prompts: dict[tuple[str, str], tuple[int, ...]] = {}

    @cached_property
    def splits_data(self) -> dict[str, list[QuoraPair]]:
        pairs, _ = load_quora(DataDir(self.data_root))
        return split_pairs(pairs)

    def pairs(self, split: str) -> list[QuoraPair]:
        """The labelled pairs of a split; with an eval file, 'test' reads that file instead."""
        if split == "test" and self.eval_file is not None:
            return read_pairs(self.eval_file)[0]
        if split not in self.splits_data:
            raise UsageError(f"unknown split '{split}' for paraphrase; choose train, dev or test")
        return self.splits_data[split]

    def prompt_ids(self, pair: QuoraPair) -> tuple[int, ...]:
        """Token ids of the pair's cloze prompt (tokenized once per pair and question order)."""
        key = (pair.question1, pair.question2)
        if key not in self._prompts:
            self._prompts[key] = self.encode(cloze_prompt(pair.question1, pair.question2))
        return self._prompts[key]

    def training_pairs(self, split: str, both_orders: bool = False) -> list[QuoraPair]:
        """The split's pairs, each also as (q2, q1) right after it when both_orders."""
        pairs = self.pairs(split)
        if not both_orders:
            return pairs
        return [q for p in pairs for q in (p, QuoraPair(p.id + "/swap", p.question2, p.question1, p.label))]

    def sft_examples(self, split: str = "train", both_orders: bool = False) -> list[SFTExample]:
        """Prompt -> the label word (one token)."""
        return [SFTExample(self.prompt_ids(p), (self.label_ids[p.label],))
                for p in self.training_pairs(split, both_orders)]

    def preference_pairs(self, split: str = "train", both_orders: bool = False, **options) -> list[PreferencePair]:
        """Same prompt; chosen = the correct answer token, rejected = the wrong one."""
        return [PreferencePair(self.prompt_ids(p), (self.label_ids[p.label],), (self.label_ids[1 - p.label],))
                for p in self.training_pairs(split, both_orders)]

    @torch.no_grad()
    def answer_logps(self, model, prompts: list[tuple[int, ...]], batch_size: int = 64) -> torch.Tensor:
        """(N, 2) log p(` no`), log p(` yes`) at the answer position of each prompt."""
        model.eval()
        device = next(model.parameters()).device
        columns = torch.tensor([self.label_ids[0], self.label_ids[1]], device=device)
        out, batches = [], by_length([len(p) for p in prompts], batch_size)
        for index in batches:
            batch = {k: v.to(device) for k, v in left_padded([prompts[i] for i in index],
                                                              self.tokenizer.pad_token_id).items()}
            last = model_logits(model, batch, keep=1)[:, -1]  # (B, V)
            out.append(torch.log_softmax(last.float(), dim=-1)[:, columns].cpu())
        if not out:
            return torch.empty(0, 2)
        return torch.cat(out)[torch.argsort(torch.tensor([i for b in batches for i in b]))]

    def evaluate(self, model, split: str = "test", seed: int = 0, batch_size: int = 64,
                 limit: int | None = None, **options) -> dict[str, float]:
        """Accuracy and macro F1 of the yes/no prediction (on the first `limit` pairs if given)."""
        pairs = self.pairs(split)[:limit]
        logps = self.answer_logps(model, [self.prompt_ids(p) for p in pairs], batch_size)
        predictions = logps.argmax(dim=1).tolist()
        labels = [p.label for p in pairs]
        self.last_outputs = {"predictions": predictions, "labels": labels}
        return {"accuracy": metrics.accuracy(labels, predictions), "f1": metrics.macro_f1(labels, predictions),
                "predicted_yes": sum(predictions) / len(predictions),
                "label_mass": float(logps.exp().sum(dim=1).mean()), "n": len(pairs)}

    def baselines(self, split: str = "test", seed: int = 0) -> dict[str, float]:
        """Majority class of the train split, scored on the split."""
        train = self.splits_data["train"]
        majority = int(sum(p.label for p in train) * 2 > len(train))
        labels = [p.label for p in self.pairs(split)]
        preds = [majority] * len(labels)
        return {"majority_accuracy": metrics.accuracy(labels, preds), "majority_f1": metrics.macro_f1(labels, preds)}
