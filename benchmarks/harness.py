"""Pure pieces of the performance harness (benchmarks/run.py): the case list, statistics, FLOP
formulas, targets, tables and the docs page. No torch import here, so tests and the planner stay fast.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from dataclasses import dataclass, field

GROUPS = ("peak", "train", "scaling", "eval")
TASKS = ("paraphrase", "sonnet")
KINDS = ("sft", "dpo")
IMPLS = ("ours", "trl-defaults", "trl-matched")
"""ours: sftdpo's loop. trl-defaults: TRL's trainer with its defaults (gradient checkpointing on;
DPO: a live reference model, no precompute). trl-matched: TRL with our strategy (gradient
checkpointing off; DPO: precompute_ref_log_probs=True)."""
PARAMS = ("fft", "lora")
SCALING_PARAMS = (("fft", 0), ("lora", 8), ("lora", 16))


# ---- settings ---------------------------------------------------------------------------------

@dataclass
class Settings:
    """Everything a case needs besides its own fields; one instance per harness run (JSON to workers)."""

    threads: int = 2
    repeats: int = 5
    """Timed windows per case; the median is reported."""
    window_steps: int = 8
    """Optimizer steps per timed window (training cases)."""
    warmup_steps: int = 4
    """Untimed optimizer steps before the first window (training cases), or untimed calls (others)."""
    batch_size: int = 8
    pairs: int = 512
    """Paraphrase pairs (and SFT examples) in the training set."""
    sonnet_pairs: int = 128
    """Sonnet pairs (prompt = first 3 lines, chosen = the rest, rejected = another sonnet's lines)."""
    paraphrase_max_length: int = 192
    sonnet_max_length: int = 256
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    scaling_shapes: dict = field(default_factory=lambda: {
        "mini": {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 8192, "batch": 8, "seq": 128},
        "gpt2-124m": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "batch": 8, "seq": 128},
    })
    scaling_repeats: int = 5
    """Timed steps per scaling case (each one optimizer step)."""
    scaling_warmup: int = 1
    eval_pairs: int = 512
    """Paraphrase dev pairs per timed evaluation."""
    eval_batch_size: int = 64
    gen_prompts: int = 4
    """Held-out sonnet prompts per timed generation round."""
    max_new_tokens: int = 128
    matmul_size: int = 2048
    matmul_reps: int = 10
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_settings(cls, threads: int = 2) -> Settings:
        """A smoke of every code path in about a minute: tiny model, tiny shapes, two windows."""
        return cls(threads=threads, repeats=2, window_steps=2, warmup_steps=1, batch_size=4, pairs=32,
                   sonnet_pairs=16, scaling_shapes={
                       "mini": {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 1024, "batch": 4, "seq": 32},
                       "gpt2-124m": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 2048, "batch": 4,
                                     "seq": 32}},
                   scaling_repeats=2, scaling_warmup=1, eval_pairs=32, eval_batch_size=16, gen_prompts=1,
                   max_new_tokens=8, matmul_size=256, matmul_reps=3, quick=True)


# ---- cases ------------------------------------------------------------------------------------

def all_cases(trl: bool = True) -> list[dict]:
    """Every case of a full run, in run order (peak first and last: a drift check)."""
    cases = [{"name": "peak/matmul/start", "group": "peak"}]
    for task in TASKS:
        for kind in KINDS:
            for params in PARAMS:
                for impl in IMPLS if trl else IMPLS[:1]:
                    cases.append({"name": f"train/{task}/{kind}/{params}/{impl}", "group": "train", "task": task,
                                  "kind": kind, "params": params, "impl": impl})
    for shape in ("mini", "gpt2-124m"):
        for params, r in SCALING_PARAMS:
            label = params if params == "fft" else f"lora-r{r}"
            cases.append({"name": f"scaling/{shape}/{label}", "group": "scaling", "shape": shape,
                          "params": params, "lora_r": r})
    cases.append({"name": "eval/paraphrase", "group": "eval", "what": "paraphrase"})
    for cache in (True, False):
        cases.append({"name": f"eval/sonnet-generate/{'cache' if cache else 'no-cache'}", "group": "eval",
                      "what": "generate", "use_cache": cache})
    cases.append({"name": "peak/matmul/end", "group": "peak"})
    return cases


def select_cases(cases: list[dict], only: list[str] | None) -> list[dict]:
    """Cases whose name matches one of the patterns: a group (`train`), a name prefix
    (`train/paraphrase/dpo`) or a glob (`train/*/dpo/fft/*`). None or [] keeps all. Peak
    measurements are kept whenever anything that reports utilisation is selected."""
    if not only:
        return list(cases)

    def hit(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p.rstrip("/") + "/")
                   for p in only)

    chosen = [c for c in cases if hit(c["name"])]
    if any(c["group"] in ("train", "scaling") for c in chosen) and not any(c["group"] == "peak" for c in chosen):
        chosen = [c for c in cases if c["group"] == "peak" and c["name"].endswith("/start")] + chosen
    return chosen


def case_label(case: dict) -> str:
    return case["name"]


# ---- statistics -------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """(max - min) / median: how much the repeats disagree."""
    if len(values) < 2:
        return 0.0
    m = median(values)
    return (max(values) - min(values)) / m if m else float("nan")


def window_rates(stamps: list[float], items_per_step: list[int], warmup: int, window: int,
                 repeats: int) -> list[float]:
    """Items per second over consecutive windows of `window` steps, after `warmup` steps.

    stamps[i] is the time step i started (len = steps + 1: the last is the end of the last step);
    items_per_step[i] the examples (pairs) of step i. Returns up to `repeats` rates.
    """
    rates = []
    for r in range(repeats):
        a, b = warmup + r * window, warmup + (r + 1) * window
        if b >= len(stamps):
            break
        seconds = stamps[b] - stamps[a]
        rates.append(sum(items_per_step[a:b]) / seconds if seconds > 0 else float("nan"))
    return rates


def steps_needed(settings: Settings) -> int:
    return settings.warmup_steps + settings.repeats * settings.window_steps


# ---- FLOPs ------------------------------------------------------------------------------------

def train_flops_per_token(frozen_params: int, trainable_params: int) -> float:
    """Model FLOPs of one training token: 6 per trainable matmul parameter (forward 2, input
    gradient 2, weight gradient 2), 4 per frozen one (forward 2, input gradient 2, no weight
    gradient). FFT: 6N. LoRA: 4 N_base + 6 N_adapters. Attention-score FLOPs are not counted."""
    return 6.0 * trainable_params + 4.0 * frozen_params


def mfu(flops_per_token: float, tokens_per_s: float, peak_gflops: float) -> float:
    """Model FLOP utilisation: achieved model FLOP/s over the measured matmul peak."""
    if not peak_gflops or not math.isfinite(peak_gflops):
        return float("nan")
    return flops_per_token * tokens_per_s / (peak_gflops * 1e9)


def matmul_gflops(n: int, seconds: float) -> float:
    return 2.0 * n ** 3 / seconds / 1e9


# ---- targets ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    """What the issue asks, in words."""
    value: float | None
    """The measured ratio (None when its cases were not run)."""
    threshold: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def line(self) -> str:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        op = ">=" if self.higher_is_better else "<="
        shown = "—" if self.value is None or not math.isfinite(self.value) else f"{self.value:.2f}"
        return f"| {self.name} | {shown} | {op} {self.threshold:g} | {verdict} |"


def _by_name(results: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in results if not r.get("error")}


def train_rate(results: dict[str, dict], task: str, kind: str, params: str, impl: str) -> float | None:
    r = results.get(f"train/{task}/{kind}/{params}/{impl}")
    return r.get("throughput") if r else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def targets(results: list[dict]) -> list[Target]:
    """The issue's targets, each with its measured ratio."""
    by = _by_name(results)
    out = []
    for params in PARAMS:
        ours = train_rate(by, "paraphrase", "dpo", params, "ours")
        out.append(Target(f"paraphrase DPO {params}: ours / TRL defaults",
                          ratio(ours, train_rate(by, "paraphrase", "dpo", params, "trl-defaults")), 4.0))
        out.append(Target(f"paraphrase DPO {params}: ours / TRL precompute, no checkpointing",
                          ratio(ours, train_rate(by, "paraphrase", "dpo", params, "trl-matched")), 2.0))
    for params in PARAMS:
        out.append(Target(f"sonnet DPO {params}: ours / TRL precompute, no checkpointing",
                          ratio(train_rate(by, "sonnet", "dpo", params, "ours"),
                                train_rate(by, "sonnet", "dpo", params, "trl-matched")), 1.5))
    for task in TASKS:
        for params in PARAMS:
            out.append(Target(f"{task} SFT {params}: ours / TRL SFTTrainer without checkpointing",
                              ratio(train_rate(by, task, "sft", params, "ours"),
                                    train_rate(by, task, "sft", params, "trl-matched")), 1.5))

    def step(shape: str, label: str) -> float | None:
        r = by.get(f"scaling/{shape}/{label}")
        return r.get("step_s") if r else None

    def mem(shape: str, label: str) -> float | None:
        r = by.get(f"scaling/{shape}/{label}")
        return r.get("train_memory_mib") if r else None

    out.append(Target("124M shape: LoRA r=8 step time / FFT step time",
                      ratio(step("gpt2-124m", "lora-r8"), step("gpt2-124m", "fft")), 0.75, higher_is_better=False))
    out.append(Target("mini: LoRA r=8 step time / FFT step time",
                      ratio(step("mini", "lora-r8"), step("mini", "fft")), 1.0, higher_is_better=False))
    out.append(Target("124M shape: LoRA r=8 peak memory / FFT peak memory",
                      ratio(mem("gpt2-124m", "lora-r8"), mem("gpt2-124m", "fft")), 0.75, higher_is_better=False))
    fft124 = by.get("scaling/gpt2-124m/fft")
    out.append(Target("124M shape: FFT SFT step MFU (of measured matmul peak)",
                      fft124.get("mfu") if fft124 else None, 0.70))
    return out


# ---- tables -----------------------------------------------------------------------------------

def fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def peak_gflops(results: list[dict]) -> float | None:
    """The best matmul peak measured in this run (start and end)."""
    values = [r["gflops"] for r in results if r["name"].startswith("peak/") and not r.get("error")]
    return max(values) if values else None


def training_table(results: list[dict]) -> list[str]:
    by = _by_name(results)
    lines = ["| task | step | params | ours | TRL defaults | TRL matched | ours / TRL defaults | ours / TRL matched "
             "| ours MFU | ref precompute s (ours / TRL) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for kind in KINDS:
            for params in PARAMS:
                rates = {impl: train_rate(by, task, kind, params, impl) for impl in IMPLS}
                if all(v is None for v in rates.values()):
                    continue
                unit = "pairs/s" if kind == "dpo" else "ex/s"
                ours = by.get(f"train/{task}/{kind}/{params}/ours", {})
                matched = by.get(f"train/{task}/{kind}/{params}/trl-matched", {})
                ref = "—"
                if kind == "dpo":
                    ref = f"{fmt(ours.get('ref_precompute_s'))} / {fmt(matched.get('ref_precompute_s'))}"
                lines.append(
                    f"| {task} | {kind.upper()} | {params} | {fmt(rates['ours'], 1)} {unit} "
                    f"| {fmt(rates['trl-defaults'], 1)} | {fmt(rates['trl-matched'], 1)} "
                    f"| {fmt_ratio(ratio(rates['ours'], rates['trl-defaults']))} "
                    f"| {fmt_ratio(ratio(rates['ours'], rates['trl-matched']))} "
                    f"| {fmt(ours.get('mfu', None), 2)} | {ref} |")
    return lines


def scaling_table(results: list[dict]) -> list[str]:
    by = _by_name(results)
    lines = ["| shape | params | trainable | step s (median) | step / FFT | training memory MiB | memory / FFT "
             "| peak RSS Δ MiB | model GFLOP/step | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["group"] != "scaling" or r.get("error"):
            continue
        fft = by.get(f"scaling/{r['shape']}/fft", {})
        label = r["name"].rsplit("/", 1)[1]
        lines.append(
            f"| {r['shape_desc']} | {label} | {fmt(r.get('trainable_params'))} | {fmt(r.get('step_s'), 3)} "
            f"| {fmt_ratio(ratio(r.get('step_s'), fft.get('step_s')))} | {fmt(r.get('train_memory_mib'), 0)} "
            f"| {fmt_ratio(ratio(r.get('train_memory_mib'), fft.get('train_memory_mib')))} "
            f"| {fmt(r.get('peak_rss_delta_mib'), 0)} | {fmt(r.get('gflop_per_step'), 1)} | {fmt(r.get('mfu'), 2)} |")
    return lines


def eval_table(results: list[dict]) -> list[str]:
    by = _by_name(results)
    lines = ["| benchmark | median | unit | spread |", "|---|---|---|---|"]
    for r in results:
        if r["group"] == "eval" and not r.get("error"):
            lines.append(f"| {r['name']} | {fmt(r.get('throughput'), 1)} | {r.get('unit', '')} "
                         f"| {fmt(r.get('spread'), 2)} |")
    cache, nocache = by.get("eval/sonnet-generate/cache"), by.get("eval/sonnet-generate/no-cache")
    if cache and nocache:
        lines.append(f"| KV cache speed-up | {fmt_ratio(ratio(cache['throughput'], nocache['throughput']))} | | |")
    return lines


def errors_table(results: list[dict]) -> list[str]:
    bad = [r for r in results if r.get("error")]
    if not bad:
        return []
    return ["| case | error |", "|---|---|"] + [f"| {r['name']} | {r['error']} |" for r in bad]


def report_lines(results: list[dict], meta: dict) -> list[str]:
    """The printed summary (markdown tables)."""
    peak = peak_gflops(results)
    out = [f"machine: {meta.get('cpu', '?')}, {meta.get('threads')} threads; matmul peak "
           f"{fmt(peak, 1)} GFLOP/s ({meta.get('matmul_desc', '')})", ""]
    if any(r["group"] == "train" for r in results):
        out += ["Training throughput (median of the timed windows):", ""] + training_table(results) + [""]
    if any(r["group"] == "scaling" for r in results):
        out += ["FFT vs LoRA, one SFT optimizer step:", ""] + scaling_table(results) + [""]
    if any(r["group"] == "eval" for r in results):
        out += ["Evaluation and generation:", ""] + eval_table(results) + [""]
    ts = [t for t in targets(results) if t.value is not None]
    if ts:
        note = " (quick run: tiny model and stand-in shapes, so the verdicts mean nothing)" if meta.get("quick") else ""
        out += [f"Targets (issue #7){note}:", "", "| target | measured | wanted | verdict |", "|---|---|---|---|"]
        out += [t.line() for t in ts] + [""]
    err = errors_table(results)
    if err:
        out += ["Failed cases:", ""] + err + [""]
    return out


# ---- time estimate ----------------------------------------------------------------------------

# Rough seconds per case of a full run on a quiet 2-core CPU (model load and data included; the
# worker's interpreter start is STARTUP_S). Used for the estimate printed before a run.
STARTUP_S = 8.0
FULL_CASE_SECONDS = {
    "peak": 5, "train/paraphrase/dpo/ours": 25, "train/paraphrase/dpo/trl-defaults": 75,
    "train/paraphrase/dpo/trl-matched": 60, "train/paraphrase/sft/ours": 20,
    "train/paraphrase/sft/trl-defaults": 50, "train/paraphrase/sft/trl-matched": 40,
    "train/sonnet/dpo/ours": 60, "train/sonnet/dpo/trl-defaults": 150, "train/sonnet/dpo/trl-matched": 100,
    "train/sonnet/sft/ours": 35, "train/sonnet/sft/trl-defaults": 75, "train/sonnet/sft/trl-matched": 55,
    "scaling/mini": 10, "scaling/gpt2-124m/fft": 60, "scaling/gpt2-124m/lora": 40,
    "eval/paraphrase": 20, "eval/sonnet-generate/cache": 25, "eval/sonnet-generate/no-cache": 50,
}


def estimate_seconds(cases: list[dict], settings: Settings, in_process: bool = False) -> float:
    """A rough duration of the selected cases (full-run defaults scale with repeats/windows)."""
    if settings.quick:
        return 15 + len(cases) * (1 if in_process else STARTUP_S + 3)
    scale = steps_needed(settings) / steps_needed(Settings())
    total = 0.0
    for c in cases:
        name = c["name"]
        key = next((k for k in sorted(FULL_CASE_SECONDS, key=len, reverse=True)
                    if name.startswith(k) or name.replace("/fft/", "/").replace("/lora/", "/").startswith(k)), None)
        seconds = FULL_CASE_SECONDS.get(key, 30)
        total += STARTUP_S + seconds * (scale if c["group"] == "train" else 1.0)
    return total


# ---- docs/performance.md ----------------------------------------------------------------------

FULL_COMMAND = "python benchmarks/run.py --data-dir ../shared/data --threads 2"

METHOD = """\
## What is measured, and how

- **One command, one run, side by side.** Every case runs in a fresh Python process (so memory
  high-water marks and TRL's model patches never leak between cases) with the same thread count
  (`torch.set_num_threads` and `OMP_NUM_THREADS`), the same model folder, the same token ids, batch
  size 8 and fp32. Each timing is repeated (5 timed windows after warm-up steps) and the median
  is reported; `spread` in the JSON is (max - min) / median of the repeats.
- **Training throughput, ours vs TRL** (`train/*`): the built-in `mini` backbone (4 x 256, vocab
  8,192). Paraphrase: 512 train pairs (seeded subsample), the cloze prompt and the ` yes`/` no`
  answer exactly as our task builds them; SFT on (prompt, right answer), DPO on (prompt, right,
  wrong). Sonnets: 128 `shuffled` pairs, prompt = BOS + the first 3 lines, chosen = the rest + EOS,
  rejected = another sonnet's lines; SFT on (prompt, chosen). Completion-only loss on both sides.
  TRL gets our token ids as pre-tokenized datasets (its own tokenization, which appends an EOS to
  each answer, is bypassed), so both sides train on identical sequences. Throughput = pairs (DPO)
  or examples (SFT) per second over windows of 8 optimizer steps after 4 warm-up steps: the loop
  alone (batching, forward, backward, clipping, AdamW, logging); model load, tokenization and the
  reference precompute are outside the windows (the precompute is timed and reported on its own).
  - `ours`: `sftdpo.loop.Loop` with `sft_step` or the DPO step, built as `sftdpo train` builds it
    (precomputed reference log-probs; LoRA r=8 on c_attn, c_proj, c_fc).
  - `TRL defaults`: `trl.DPOTrainer` / `trl.SFTTrainer` with TRL's defaults (gradient
    checkpointing on; DPO: a live reference model, dropout disabled), except `bf16=False` (fp32).
  - `TRL matched`: the same with our strategy where TRL offers it: no gradient checkpointing and,
    for DPO, `precompute_ref_log_probs=True` and `disable_dropout=False` (our loop keeps the
    model's dropout: the same model config on both sides).
  - LoRA on both sides: peft `LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
    target_modules=[c_attn, c_proj, c_fc])`.
- **FFT vs LoRA** (`scaling/*`): one SFT optimizer step of our loop on a fixed batch of random
  tokens (loss on every token after the first), random init, at the mini shape (4 x 256, vocab
  8,192, batch 8 x 128 tokens) and the GPT-2 124M shape (12 x 768, vocab 50,257, batch 8 x 128),
  FFT and LoRA r=8 / r=16 on all linear layers of the blocks. Step time: median of 5 steps after
  1 warm-up step. **Training memory** (what training needs beside the weights) = the peak tensor
  memory one steady-state step allocates (activations, gradients, temporaries), read from torch
  profiler memory events (every CPU allocation and free, in order; one extra untimed step), plus
  the AdamW state. Beside it, the OS view: the peak resident-set growth over the steps (`VmHWM`
  reset through `/proc/self/clear_refs` once model and optimizer exist, minus the resident set at
  that reset); allocator caching and page reuse blur that one, so the targets use the former.
- **Evaluation** (`eval/*`): paraphrase evaluation (our `ParaphraseTask.evaluate`: one forward per
  batch of 64, logits at the answer position only) on 512 dev pairs, examples/s; sonnet
  generation (our `SonnetTask.sample_ids`: top-p 0.9, temperature 1.2, up to 128 new tokens) on 4
  held-out prompts per round, new tokens/s, with `use_cache=True` and `False` (the model's
  generation config).
- **Matmul peak** (`peak/*`): best of 10 fp32 2048 x 2048 `torch.mm` at the run's thread count,
  measured at the start and at the end of the run (a drift check; the larger is used).
- **Model FLOP utilisation** = model FLOPs per second / the matmul peak. Model FLOPs of a step:
  6 per trainable and 4 per frozen matmul parameter (forward 2, input gradient 2, weight gradient
  2 only when trained) for every real (non-padding) token through the blocks, plus the same for the
  LM head (the tied token embedding) at each position whose logits a loss reads. FFT: 6N per token;
  LoRA: 4 N_base + 6 N_adapters. Attention-score FLOPs, a live reference forward and
  gradient-checkpointing recomputation are not counted (they are overhead, not model FLOPs); the
  position embedding (a lookup) is not a matmul.
"""


FAST_PATHS = """\
## Where our loop's speed comes from

Each fast path has a test that it computes what the plain path computes (`tests/test_fast_paths.py`).

- **Precomputed reference log-probs**: one eval-mode pass before training, cached; no reference
  model runs in the loop (TRL: `precompute_ref_log_probs=True`, off by default).
- **One row per paraphrase pair**: chosen and rejected share the prompt and are single tokens, so
  one forward of the prompt gives both log-probs (TRL runs a chosen and a rejected row).
- **Logits only where a label needs them** (`logits_to_keep`, left-padded batches): the vocab-sized
  LM head runs on the answer positions only (paraphrase: one position).
- **Cross-entropy on the unsliced logits** (`losses.next_token_targets`): the targets are shifted
  instead of the logits, which saves a copy of the (B, K, V) logits forward and backward.
- **Fused tanh-GELU** (`params.use_fast_kernels`): GPT-2's `gelu_new` is eight tensor ops, each
  allocating a (B, T, 4d) tensor forward and backward; torch's `gelu(approximate="tanh")` is one
  kernel for the same function. The JSON records whether a run had it (`fast_kernels`).
- **Length-grouped batches** (`optim.group_by_length`, when the loop has it): little compute on
  padding.
- **No gradient checkpointing**: at these sizes memory is not the constraint, recomputation is pure
  cost (TRL turns it on by default).
- **LoRA**: the base weights, tied embedding and LM head included, are frozen (no weight gradients,
  no AdamW state); only the adapters train.
"""


def docs_page(results: list[dict], meta: dict) -> str:
    """docs/performance.md: how to run, the latest full results, the method."""
    lines = ["# Performance", "",
             "How fast sftdpo trains and evaluates on a CPU, beside TRL's trainers, and what LoRA buys "
             "over full fine-tuning; measured by one command (issue #7).", "",
             "## Run it", "", "```bash", "pip install -e \".[bench]\"   # TRL, pinned; without it the TRL "
             "cases are skipped", FULL_COMMAND, "```", "",
             "It writes `benchmarks/results/<date>-full.json` (every repeat, the settings and versions), "
             "prints the tables below and rewrites this page. `--quick` smokes every code path in under a "
             "minute, in one process, on the tiny backbone (numbers meaningless; this page is left alone; "
             "`--isolate` runs each case in its own interpreter as a full run does); "
             "`--only train/paraphrase/dpo` (a group, a name prefix or a glob; `--list` shows the "
             "names) runs a subset; `--threads`, `--repeats`, `--out` as expected. "
             f"A full run takes about {meta.get('estimate_min', 35)} minutes on a quiet 2-core CPU.", ""]
    if results:
        versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
        lines += ["## Results", "",
                  f"Measured {meta.get('date', '?')} on {meta.get('cpu', '?')} ({meta.get('cores', '?')} cores), "
                  f"{meta.get('threads')} threads, {meta.get('python', '')}; {versions}; commit "
                  f"{meta.get('commit', '?')}. Command: `{meta.get('command', FULL_COMMAND)}` "
                  f"({meta.get('elapsed_min', '?')} minutes).", ""]
        lines += report_lines(results, meta)
    else:
        lines += ["## Results", "", "Not measured on a quiet machine yet: run the command above, which "
                  "rewrites this section.", ""]
    lines += [METHOD, FAST_PATHS]
    return "\n".join(lines).rstrip() + "\n"
