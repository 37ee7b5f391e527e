"""`study --dry-run`: the cells of a grid and a rough estimate of their training cost.

Training FLOPs per cell = (6 N for FFT, 4 N for LoRA) x tokens, with N the model's parameters
and tokens = epochs x examples x mean tokens per example (characters / 4, a GPT-2-like BPE
rate). Evaluation and sampling are left out. Time = FLOPs / an effective throughput you give
(default 100 TFLOP/s: a bf16 H100 at ~25-30% utilisation).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..config import TrainConfig
from .grid import Cell

HUB_PARAMS = {"gpt2": 124e6, "gpt2-medium": 355e6, "gpt2-large": 774e6, "gpt2-xl": 1.56e9}
CHARS_PER_TOKEN = 4.0


def model_params(ref: str) -> float:
    """Parameters of a model reference, from the built-in spec, a known hub name or config.json."""
    from ..backbone import SPECS

    if ref.startswith("builtin:"):
        s = SPECS[ref.split(":", 1)[1]]
        return 12 * s.n_layer * s.n_embd**2 + (s.vocab_size + s.n_positions) * s.n_embd
    if ref in HUB_PARAMS:
        return HUB_PARAMS[ref]
    config = Path(ref) / "config.json"
    if config.exists():
        c = json.loads(config.read_text())
        d = c.get("n_embd") or c.get("hidden_size", 768)
        layers = c.get("n_layer") or c.get("num_hidden_layers", 12)
        return 12 * layers * d**2 + c.get("vocab_size", 50257) * d
    return HUB_PARAMS["gpt2"]


def task_sizes(data_root: Path) -> dict[str, tuple[int, float]]:
    """(training examples, mean tokens per example) per task, from the data dir."""
    from ..data.datadir import DataDir, load_quora
    from ..data.quora import split_pairs
    from ..data.sonnets import read_sonnets

    data = DataDir(Path(data_root))
    train = split_pairs(load_quora(data)[0])["train"]
    prompt_chars = len('Is "" a paraphrase of ""? Answer "yes" or "no":') + 4
    para_tokens = sum(len(p.question1) + len(p.question2) + prompt_chars for p in train) / len(train) / CHARS_PER_TOKEN
    sonnets = read_sonnets(data.sonnets_train)
    son_tokens = sum(len(s.text) for s in sonnets) / len(sonnets) / CHARS_PER_TOKEN
    return {"paraphrase": (len(train), para_tokens), "sonnet": (len(sonnets), son_tokens)}


def cell_tokens(cfg: TrainConfig, examples: int, tokens_per_example: float) -> float:
    """Training tokens of a cell: SFT epochs, then DPO epochs over pairs (two sequences a pair,
    one for paraphrase, whose pairs share the prompt and differ in one answer token)."""
    size = cfg.data.train_size
    n = examples * size if size <= 1 else min(examples, size)
    if cfg.data.both_orders:
        n *= 2
    sft = cfg.sft_epochs_run * n * tokens_per_example if cfg.regime != "dpo" else 0.0
    per_pair = 1 if cfg.task == "paraphrase" else 2
    dpo = cfg.dpo_optim.epochs * n * tokens_per_example * per_pair if cfg.regime != "sft" else 0.0
    return sft + dpo


def estimate(cells: list[Cell], data_root: Path, tflops: float = 100.0) -> list[str]:
    """Lines describing the grid and its estimated cost."""
    sizes = task_sizes(data_root)
    counts = Counter((c.axes["task"], c.axes["regime"], c.axes["params"]) for c in cells)
    lines = [f"{len(cells)} cells:"]
    lines += [f"  {task:10} {regime:8} {params:5} {n:4} cells" for (task, regime, params), n in counts.items()]
    total_flops = total_tokens = 0.0
    for c in cells:
        examples, per_example = sizes[c.config.task]
        tokens = cell_tokens(c.config, examples, per_example)
        total_tokens += tokens
        total_flops += (4 if c.config.params == "lora" else 6) * model_params(c.config.model) * tokens
    hours = total_flops / (tflops * 1e12) / 3600
    lines += [f"training tokens: {total_tokens:.3g}; training FLOPs: {total_flops:.3g}",
              f"estimated training time at {tflops:g} effective TFLOP/s: {hours:.1f} GPU-hours "
              f"({hours * 3600 / max(1, len(cells)):.0f} GPU-seconds per cell on average; evaluation and "
              "sampling not included)",
              "examples per task from the data dir: " + ", ".join(f"{t} {n:,} (~{k:.0f} tokens each)"
                                                                 for t, (n, k) in sizes.items())]
    return lines
