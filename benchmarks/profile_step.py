"""Where one SFT training step spends its time: torch.profiler over forward, backward, clipping
and AdamW, at the benchmark's shapes (random init, batch 8 x 128 random tokens), FFT or LoRA.

    python benchmarks/profile_step.py --shape 124m --params fft --threads 2
    python benchmarks/profile_step.py --shape mini --params lora --threads 2

Prints the step time and the ops with the most self CPU time (the profile behind the gaps in
docs/performance.md); --out FILE also writes that table as markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SHAPES = {"mini": dict(n_layer=4, n_embd=256, n_head=4, vocab_size=8192),
          "124m": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="124m")
    ap.add_argument("--params", choices=["fft", "lora"], default="fft")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import GPT2Config, GPT2LMHeadModel

    from sftdpo.batching import prompt_completion_batch
    from sftdpo.config import LoRAConfig
    from sftdpo.params import add_lora, use_fast_kernels
    from sftdpo.steps import sft_step

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel._from_config(GPT2Config(n_positions=1024, **SHAPES[args.shape]),
                                         attn_implementation="sdpa")
    use_fast_kernels(model)
    if args.params == "lora":
        model = add_lora(model, LoRAConfig(r=8), 0)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, SHAPES[args.shape]["vocab_size"], (8, 128)).tolist()
    batch = prompt_completion_batch([r[:1] for r in ids], [r[1:] for r in ids], 0)

    def step():
        loss, _ = sft_step(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, AdamW state
    start = time.perf_counter()
    step()
    plain = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e6:.3f} | {100 * e.self_cpu_time_total / total:.1f}% |"
            for e in events[:args.top]]
    table = "\n".join([f"{args.shape} {args.params}, {args.threads} threads: step {plain:.3f} s unprofiled",
                       "", "| op | calls | self CPU s | share |", "|---|---|---|---|", *rows])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
