"""Task 2: Shakespeare sonnet continuation from the first 3 lines; chrF, NLL, diversity."""

from __future__ import annotations

import logging
import random
import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from .. import metrics
from ..batching import logits_to_keep, model_logits, prompt_completion_batch
from ..data.datadir import DataDir
from ..data.sonnets import HeldOut, Sonnet, read_held_out, read_sonnets
from ..errors import UsageError
from ..losses import token_logps
from .base import PreferencePair, SFTExample, Task

log = logging.getLogger(__name__)
PROMPT_LINES = 3


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings of the study (CS224N): nucleus sampling, hot temperature."""

    top_p: float = 0.9
    """Nucleus sampling mass."""
    temperature: float = 1.2
    """Softmax temperature."""
    max_new_tokens: int = 128
    """Longest continuation; generation also stops at end of text."""


class SonnetTask(Task):
    """131 training sonnets; held-out sonnets given as 3-line prompts with their true text."""

    name = "sonnet"
    metric = "chrf"

    def __init__(self, data_root: Path, tokenizer, prompts_file: Path | None = None,
                 references_file: Path | None = None, generation: GenerationSettings = GenerationSettings()):
        super().__init__(data_root, tokenizer)
        if (prompts_file is None) != (references_file is None):
            raise UsageError("--prompts and --references go together: give both or neither")
        self.custom = (Path(prompts_file), Path(references_file)) if prompts_file else None
        self.generation = generation
        self.bos = (tokenizer.eos_token_id,)
        self.eos = (tokenizer.eos_token_id,)

    @cached_property
    def train_sonnets(self) -> list[Sonnet]:
        return read_sonnets(DataDir(self.data_root).sonnets_train)

    def held_out(self, split: str) -> list[HeldOut]:
        """Held-out sonnets of a split; 'test' falls back to 'dev' when the data has no test set."""
        if self.custom:
            return read_held_out(*self.custom)
        sets = {name: (p, t) for name, p, t in DataDir(self.data_root).held_out_sets()}
        if split == "test" and "test" not in sets:
            log.info("no held-out sonnet test set in the data dir; using the dev set")
            split = "dev"
        if split not in sets:
            raise UsageError(f"no held-out sonnet set '{split}'; the data dir has: {', '.join(sets)}")
        return read_held_out(*sets[split])

    def prompt_ids(self, prompt: str) -> tuple[int, ...]:
        """BOS, then the prompt lines each ending in a newline."""
        return self.bos + self.encode(prompt + "\n")

    def sft_examples(self, split: str = "train", **options) -> list[SFTExample]:
        """Each full training sonnet after BOS, loss on every token and the final EOS."""
        if split != "train":
            raise UsageError("sonnet SFT examples exist only for the train split")
        return [SFTExample(self.bos, self.encode(s.text) + self.eos) for s in self.train_sonnets]

    def preference_pairs(self, split: str = "train", **options) -> list[PreferencePair]:
        from ..preferences import sonnet_pairs

        return sonnet_pairs(self, **options)

    @torch.no_grad()
    def sample_ids(self, model, prompt_ids: tuple[int, ...], seed: int) -> tuple[int, ...]:
        """Token ids sampled after prompt_ids with the study's settings (EOS kept if reached)."""
        model.eval()
        device = next(model.parameters()).device
        g = self.generation
        ids = torch.tensor([prompt_ids], device=device)
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 top_p=g.top_p, temperature=g.temperature, top_k=0,
                                 max_new_tokens=g.max_new_tokens, eos_token_id=self.eos[0],
                                 pad_token_id=self.eos[0])
        return tuple(out[0, ids.shape[1]:].tolist())

    def generate(self, model, prompts: list[str], seed: int = 0) -> list[str]:
        """Prompt + sampled continuation for each prompt; sample i is seeded by (seed, i)."""
        outputs = []
        for i, prompt in enumerate(prompts):
            new = self.sample_ids(model, self.prompt_ids(prompt), seed * 100_003 + i)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            outputs.append(prompt + "\n" + text.strip("\n"))
        return outputs

    @torch.no_grad()
    def continuation_nll(self, model, items: list[HeldOut], batch_size: int = 16) -> float:
        """Mean per-token NLL of the true continuation (lines 4-14 and EOS) given the prompt."""
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0.0
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            batch = prompt_completion_batch([self.prompt_ids(h.prompt) for h in chunk],
                                            [self.encode("\n".join(h.continuation_lines)) + self.eos
                                             for h in chunk], self.tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model_logits(model, batch, logits_to_keep(batch["labels"]))
            logps, mask = token_logps(logits, batch["labels"])
            total -= logps.sum().item()
            count += mask.sum().item()
        return total / count

    def evaluate(self, model, split: str = "test", seed: int = 0, samples: int = 1,
                 **options) -> dict[str, float]:
        """chrF (mean over `samples` sampling rounds), NLL, distinct-2 and repetition."""
        items = self.held_out(split)
        references = [h.reference for h in items]
        rounds, generations = [], []
        for r in range(samples):
            outs = self.generate(model, [h.prompt for h in items], seed=seed + r)
            rounds.append(metrics.chrf(outs, references))
            generations.extend(outs)
        continuations = [g.split("\n", PROMPT_LINES)[-1] for g in generations]
        result = {"chrf": statistics.fmean(rounds), "nll": self.continuation_nll(model, items),
                  "distinct_2": metrics.distinct_n(continuations, 2),
                  "repetition": metrics.repetition(continuations, 4), "n": len(items), "samples": samples}
        if samples > 1:
            result["chrf_sd"] = statistics.stdev(rounds)
        self.last_outputs = {"generations": generations, "references": references * samples,
                             "sample": [r for r in range(samples) for _ in items]}
        return result

    def baselines(self, split: str = "test", seed: int = 0) -> dict[str, float]:
        """chrF of the prompt alone, and of the prompt + lines 4-14 of a random training sonnet."""
        items = self.held_out(split)
        rng = random.Random(seed)
        references = [h.reference for h in items]
        prompt_only = [h.prompt for h in items]
        borrowed = [h.prompt + "\n" + "\n".join(rng.choice(self.train_sonnets).lines[PROMPT_LINES:])
                    for h in items]
        return {"prompt_only_chrf": metrics.chrf(prompt_only, references),
                "random_sonnet_chrf": metrics.chrf(borrowed, references)}
