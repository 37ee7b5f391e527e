"""Workers of the performance harness: each `run_*` function measures one case in this process and
returns its result dict. benchmarks/run.py starts a fresh interpreter per case (clean memory
high-water mark, no state shared between TRL and our loop), or calls them in-process (--in-process).

Timing: a training case records the wall-clock start of every optimizer step (our loop: when it
asks for the step's batch; TRL: `on_step_begin`) and the end of the last one. After `warmup_steps`
untimed steps, `repeats` consecutive windows of `window_steps` steps each give a rate (pairs or
examples per second); the median is reported. Model load, tokenization and the reference
log-prob precompute are outside the windows (the precompute is timed and reported on its own).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (Settings, matmul_gflops, median, spread, steps_needed,  # noqa: E402
                     train_flops_per_token, window_rates)

IGNORE_INDEX = -100


# ---- process-level helpers --------------------------------------------------------------------

def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float | None:
    v = _status_kib("VmRSS")
    return None if v is None else v / 1024


def peak_rss_mib() -> float | None:
    v = _status_kib("VmHWM")
    return None if v is None else v / 1024


# ---- data -------------------------------------------------------------------------------------

def prepare_data(model_dir: str, data_dir: str, s: Settings) -> dict:
    """Token ids of the training sets, built once by the parent with our tasks (shared by both sides).

    paraphrase: `s.pairs` pairs of the train split (seeded subsample): DPO pairs (cloze prompt; chosen
    the right ` yes`/` no`, rejected the other) and SFT examples (prompt -> the right answer).
    sonnet: `s.sonnet_pairs` of the `shuffled` pairs (prompt BOS + first 3 lines; chosen = the
    rest + EOS; rejected = another sonnet's lines); SFT examples = (prompt, chosen).
    """
    from sftdpo.evaluate import make_task
    from sftdpo.models import load_model_and_tokenizer
    from sftdpo.regimes import subsample

    _, tokenizer = load_model_and_tokenizer(model_dir)
    para = make_task("paraphrase", Path(data_dir), tokenizer)
    pairs = subsample(para.preference_pairs("train"), s.pairs, s.seed)
    sft = subsample(para.sft_examples("train"), s.pairs, s.seed)
    son = make_task("sonnet", Path(data_dir), tokenizer)
    spairs = subsample(son.preference_pairs("train", construction="shuffled", seed=s.seed, progress=False),
                       s.sonnet_pairs, s.seed)

    def pair_rows(items):
        return [[list(p.prompt_ids), list(p.chosen_ids), list(p.rejected_ids)] for p in items]

    return {"pad_id": tokenizer.pad_token_id,
            "paraphrase": {"pairs": pair_rows(pairs), "sft": [[list(e.prompt_ids), list(e.completion_ids)]
                                                                for e in sft],
                           "max_length": s.paraphrase_max_length},
            "sonnet": {"pairs": pair_rows(spairs), "sft": [[list(p.prompt_ids), list(p.chosen_ids)] for p in spairs],
                       "max_length": s.sonnet_max_length}}


def _pairs(rows):
    from sftdpo.tasks.base import PreferencePair

    return [PreferencePair(tuple(p), tuple(c), tuple(r)) for p, c, r in rows]


def _examples(rows):
    from sftdpo.tasks.base import SFTExample

    return [SFTExample(tuple(p), tuple(c)) for p, c in rows]


# ---- FLOP accounting --------------------------------------------------------------------------

def param_split(model) -> dict[str, int]:
    """Matmul parameters of the body (blocks) and of the LM head, trainable and frozen.

    The position embedding (a lookup) is left out; the token embedding counts once, as the tied LM
    head (a (V, d) matmul at the positions a label needs).
    """
    head = model.get_output_embeddings().weight
    out = {"body_trainable": 0, "body_frozen": 0, "head_trainable": 0, "head_frozen": 0}
    for name, p in model.named_parameters():
        if "wpe" in name:
            continue
        part = "head" if p is head else "body"
        if "wte" in name and p is not head:  # an untied input embedding: a lookup, no FLOPs
            continue
        out[f"{part}_{'trainable' if p.requires_grad else 'frozen'}"] += p.numel()
    return out


def step_flops(split: dict[str, int], tokens: int, head_positions: int) -> float:
    """Model FLOPs of a training step: the body on every real token, the LM head where labels need it."""
    return (train_flops_per_token(split["body_frozen"], split["body_trainable"]) * tokens
            + train_flops_per_token(split["head_frozen"], split["head_trainable"]) * head_positions)


def batch_counts(batch: dict) -> tuple[int, int, int]:
    """(examples, real tokens, positions whose logits a loss reads) of one of our batches."""
    tokens = int(batch["attention_mask"].sum())
    if "chosen_ids" in batch:  # one row per pair, both answers read from its last position
        return len(batch["chosen_ids"]), tokens, len(batch["chosen_ids"])
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    rows = batch["input_ids"].shape[0]
    return (rows // 2 if "index" in batch else rows), tokens, labelled


def _summary(stamps, items, tokens, head_positions, s: Settings, split, peak: float | None) -> dict:
    rates = window_rates(stamps, items, s.warmup_steps, s.window_steps, s.repeats)
    a, b = s.warmup_steps, min(len(stamps) - 1, s.warmup_steps + s.repeats * s.window_steps)
    seconds = stamps[b] - stamps[a]
    flops = step_flops(split, sum(tokens[a:b]), sum(head_positions[a:b]))
    return {"throughput": median(rates), "windows": rates, "spread": spread(rates),
            "timed_steps": b - a, "timed_seconds": seconds, "step_s": seconds / max(1, b - a),
            "tokens_per_s": sum(tokens[a:b]) / seconds, "model_gflops_per_s": flops / seconds / 1e9,
            "mfu": flops / seconds / (peak * 1e9) if peak else None, **split}


# ---- our loop ---------------------------------------------------------------------------------

def _engine_model(model_dir: str, fast_kernels: bool):
    """Load a model the way our engine does (models.load_model_and_tokenizer)."""
    from sftdpo.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir)
    if fast_kernels:
        from sftdpo.params import use_fast_kernels

        use_fast_kernels(model)
    return model, tokenizer


def _lora_cfg(s: Settings, r: int):
    from sftdpo.config import LoRAConfig

    return LoRAConfig(r=r, alpha=s.lora_alpha, dropout=s.lora_dropout, targets=tuple(s.lora_targets))


def _make_loop(model, step_fn, collate, n: int, s: Settings, lengths, workdir: Path, stage: str):
    """Our Loop as regimes.run_stage builds it (length grouping included when the loop has it)."""
    import dataclasses

    from accelerate import Accelerator

    from sftdpo.config import OptimConfig
    from sftdpo.loop import Loop

    steps_per_epoch = math.ceil(n / s.batch_size)
    epochs = max(1, math.ceil((steps_needed(s) + 1) / steps_per_epoch))
    accelerator = Accelerator(cpu=True)
    kwargs = dict(model=model, step_fn=step_fn, collate=collate, n_examples=n,
                  cfg=OptimConfig(epochs=epochs, batch_size=s.batch_size), seed=s.seed, stage_dir=workdir,
                  log_path=workdir / "log.jsonl", stage=stage, accelerator=accelerator, progress=False)
    if "lengths" in {f.name for f in dataclasses.fields(Loop)}:
        kwargs["lengths"] = lengths
    return Loop(**kwargs), epochs


def run_train_ours(case: dict, s: Settings, data: dict, model_dir: str, peak: float | None,
                   fast_kernels: bool) -> dict:
    import torch

    from sftdpo.config import DPOConfig
    from sftdpo.loop import LoopState
    from sftdpo.params import add_lora, reference_context
    from sftdpo.steps import (collate_pairs, collate_sft, compute_reference_logps, make_dpo_step,
                              precomputed_reference, sft_step)

    task = data[case["task"]]
    pad, max_length = data["pad_id"], task["max_length"]
    torch.manual_seed(s.seed)
    model, _ = _engine_model(model_dir, fast_kernels)
    if case["params"] == "lora":
        model = add_lora(model, _lora_cfg(s, 8), s.seed)
    result: dict = {}
    if case["kind"] == "dpo":
        pairs = _pairs(task["pairs"])
        start = time.perf_counter()
        ref_ctx = reference_context(model) if case["params"] == "lora" else None
        with (ref_ctx() if ref_ctx else contextlib.nullcontext(model)) as ref:
            chosen, rejected = compute_reference_logps(ref, pairs, pad, max_length, torch.device("cpu"))
        result["ref_precompute_s"] = time.perf_counter() - start
        step = make_dpo_step(DPOConfig(), precomputed_reference(chosen, rejected))
        n = len(pairs)
        lengths = [len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]

        def collate(idx):
            return collate_pairs([pairs[i] for i in idx], pad, max_length, idx)
    else:
        examples = _examples(task["sft"])
        step, n = sft_step, len(examples)
        lengths = [len(e.prompt_ids) + len(e.completion_ids) for e in examples]

        def collate(idx):
            return collate_sft([examples[i] for i in idx], pad, max_length)

    stamps, items, tokens, heads = [], [], [], []

    def timed_collate(idx):
        stamps.append(time.perf_counter())
        batch = collate(idx)
        b, t, h = batch_counts(batch)
        items.append(b), tokens.append(t), heads.append(h)
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        loop, epochs = _make_loop(model, step, timed_collate, n, s, lengths, Path(tmp), case["kind"])
        state, stop = LoopState(), threading.Event()
        while len(stamps) <= steps_needed(s) and state.epoch < epochs:
            loop._run_epoch(state, stop)
            state.epoch += 1
            state.step_in_epoch = 0
        stamps.append(time.perf_counter())
    split = param_split(loop.unwrapped)
    return {**result, **_summary(stamps, items, tokens, heads, s, split, peak),
            "unit": "pairs/s" if case["kind"] == "dpo" else "examples/s",
            "examples": n, "attn_implementation": loop.unwrapped.config._attn_implementation}


# ---- TRL --------------------------------------------------------------------------------------

def run_train_trl(case: dict, s: Settings, data: dict, model_dir: str, peak: float | None) -> dict:
    """TRL's DPOTrainer / SFTTrainer on the same token ids, batch size, precision and threads.

    trl-defaults: TRL's defaults (gradient checkpointing on; DPO: a live reference model, dropout
    disabled) except bf16=False (fp32 like ours). trl-matched: our strategy where TRL offers it:
    gradient checkpointing off; DPO: precompute_ref_log_probs=True and the model's dropout kept
    (disable_dropout=False), as in our loop.
    The datasets are our token ids (TRL's own tokenization, and the EOS it appends, are bypassed),
    so both sides train on exactly the same sequences.
    """
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from sftdpo.steps import fit

    task = data[case["task"]]
    max_length = task["max_length"]
    defaults = case["impl"] == "trl-defaults"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(s.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = None
    if case["params"] == "lora":
        peft_config = LoraConfig(r=8, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                 target_modules=list(s.lora_targets), fan_in_fan_out=True, bias="none",
                                 task_type="CAUSAL_LM")
    stamps, ends, items, tokens, heads = [], [], [], [], []
    timing: dict = {"ref_precompute_s": 0.0}

    class Stamps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    def counting(collator, pairs: bool):
        def collate(examples):
            batch = collator(examples)
            rows = batch["input_ids"].shape[0]
            items.append(rows // 2 if pairs else rows)
            tokens.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch
                          else int(batch["input_ids"].numel()))
            if "completion_mask" in batch:
                heads.append(int(batch["completion_mask"].sum()))
            else:
                heads.append(int((batch["labels"] != IGNORE_INDEX).sum()))
            return batch
        return collate

    workdir = tempfile.mkdtemp(prefix="bench-trl-")
    common = dict(output_dir=workdir, per_device_train_batch_size=s.batch_size, max_steps=steps_needed(s),
                  bf16=False, use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no",
                  seed=s.seed, disable_tqdm=True, max_length=None)
    if not defaults:  # transformers 5 renamed gradient_checkpointing (kept as a deprecated alias)
        ckpt = "activation_checkpointing" if "activation_checkpointing" in trl.DPOConfig.__dataclass_fields__ \
            else "gradient_checkpointing"
        common[ckpt] = False
        if case["kind"] == "dpo":
            common["disable_dropout"] = False  # same model config as ours: its dropout stays on
    if case["kind"] == "dpo":
        class IdsDPOTrainer(trl.DPOTrainer):
            def _prepare_dataset(self, dataset, *args, **kwargs):
                return dataset  # already our token ids

            def _precompute_ref_logps(self, *args, **kwargs):
                start = time.perf_counter()
                out = super()._precompute_ref_logps(*args, **kwargs)
                timing["ref_precompute_s"] += time.perf_counter() - start
                return out

        rows = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
        for p, c, r in task["pairs"]:
            longer = c if len(c) >= len(r) else r
            prompt, _ = fit(p, longer, max_length)
            rows["prompt_ids"].append(prompt)
            rows["chosen_ids"].append(fit(prompt, c, max_length)[1])
            rows["rejected_ids"].append(fit(prompt, r, max_length)[1])
        args = trl.DPOConfig(**common, precompute_ref_log_probs=not defaults)
        trainer = IdsDPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                processing_class=tokenizer, peft_config=peft_config, callbacks=[Stamps()])
        trainer.data_collator = counting(trainer.data_collator, pairs=True)
        unit = "pairs/s"
    else:
        rows = {"input_ids": [], "completion_mask": []}
        for p, c in task["sft"]:
            prompt, completion = fit(p, c, max_length)
            rows["input_ids"].append(prompt + completion)
            rows["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
        args = trl.SFTConfig(**common, completion_only_loss=True)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                 processing_class=tokenizer, peft_config=peft_config, callbacks=[Stamps()])
        trainer.data_collator = counting(trainer.data_collator, pairs=False)
        unit = "examples/s"
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its end-of-training print is not part of a measurement
    trainer.train()
    stamps = stamps[:len(ends)] + [ends[-1]]
    policy = trainer.model
    split = param_split(policy)
    return {**timing, **_summary(stamps, items, tokens, heads, s, split, peak), "unit": unit,
            "examples": len(task["pairs"] if case["kind"] == "dpo" else task["sft"]),
            "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
            "precompute_ref_log_probs": bool(getattr(trainer.args, "precompute_ref_log_probs", False)),
            "disable_dropout": bool(getattr(trainer.args, "disable_dropout", False)),
            "trl_version": trl.__version__, "attn_implementation": policy.config._attn_implementation}


def step_peak_tensor_mib(step) -> float:
    """Peak of the tensor memory a call allocates (MiB above what was live before it), from torch
    profiler memory events (every CPU allocation and free, in order): allocator- and OS-independent."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e["ts"]):
        live += e["args"].get("Bytes", 0)
        peak = max(peak, live)
    return peak / 2**20


# ---- FFT vs LoRA at two shapes ----------------------------------------------------------------

def run_scaling(case: dict, s: Settings, peak: float | None, fast_kernels: bool) -> dict:
    """One SFT optimizer step of our loop (forward, backward, clipping, AdamW) on a fixed synthetic
    batch: `batch` rows of `seq` random tokens, loss on every token after the first (random init).

    Memory, beside the weights: `train_memory_mib` = the peak tensor memory one steady-state step
    allocates (activations, gradients, temporaries; torch profiler memory events, one extra
    untimed step) + the AdamW state. Also the OS view: `peak_rss_delta_mib`, the resident-set
    high-water mark (VmHWM, reset through /proc/self/clear_refs once model and optimizer exist)
    minus the resident set at that reset (allocator caching and page reuse blur it).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from sftdpo.batching import prompt_completion_batch
    from sftdpo.loop import LoopState
    from sftdpo.params import add_lora, use_fast_kernels
    from sftdpo.steps import sft_step

    shape = s.scaling_shapes[case["shape"]]
    torch.manual_seed(s.seed)
    config = GPT2Config(vocab_size=shape["vocab_size"], n_layer=shape["n_layer"], n_embd=shape["n_embd"],
                        n_head=shape["n_head"], n_positions=max(1024, shape["seq"]))
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    if fast_kernels:
        use_fast_kernels(model)
    if case["params"] == "lora":
        model = add_lora(model, _lora_cfg(s, case["lora_r"]), s.seed)
    g = torch.Generator().manual_seed(s.seed)
    ids = torch.randint(0, shape["vocab_size"], (shape["batch"], shape["seq"]), generator=g).tolist()
    batch = prompt_completion_batch([r[:1] for r in ids], [r[1:] for r in ids], 0)
    b, tokens, heads = batch_counts(batch)
    s_loop = Settings(**{**s.__dict__, "batch_size": shape["batch"]})
    with tempfile.TemporaryDirectory() as tmp:
        loop, _ = _make_loop(model, sft_step, lambda idx: batch, shape["batch"], s_loop, None, Path(tmp), "sft")
        state = LoopState()
        micro = [list(range(shape["batch"]))]
        reset_ok = reset_peak_rss()
        base_rss = rss_mib()
        times = []
        for i in range(s.scaling_warmup + s.scaling_repeats):
            start = time.perf_counter()
            loop._optimizer_step(micro, state)
            if i >= s.scaling_warmup:
                times.append(time.perf_counter() - start)
        peak_rss = peak_rss_mib()
        step_peak = step_peak_tensor_mib(lambda: loop._optimizer_step(micro, state))
        optim_state = sum(t.numel() * t.element_size() for st in loop.optimizer.state.values()
                          for t in st.values() if torch.is_tensor(t)) / 2**20
    split = param_split(loop.unwrapped)
    flops = step_flops(split, tokens, heads)
    step_s = median(times)
    desc = (f"{shape['n_layer']}x{shape['n_embd']}, vocab {shape['vocab_size']}, "
            f"batch {shape['batch']} x seq {shape['seq']}")
    return {"step_s": step_s, "steps": times, "spread": spread(times), "tokens": tokens,
            "gflop_per_step": flops / 1e9, "model_gflops_per_s": flops / step_s / 1e9,
            "mfu": flops / step_s / (peak * 1e9) if peak else None,
            "train_memory_mib": step_peak + optim_state, "step_peak_tensor_mib": step_peak,
            "optimizer_state_mib": optim_state,
            "weights_mib": sum(p.numel() * p.element_size() for p in loop.unwrapped.parameters()) / 2**20,
            "peak_rss_delta_mib": (peak_rss - base_rss) if reset_ok and peak_rss and base_rss else None,
            "peak_rss_mib": peak_rss, "rss_before_mib": base_rss, "memory_method":
            "VmHWM after reset via /proc/self/clear_refs, minus VmRSS at the reset" if reset_ok else "unavailable",
            "trainable_params": sum(p.numel() for p in loop.unwrapped.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in loop.unwrapped.parameters()), "shape_desc": desc,
            "throughput": shape["batch"] / step_s, "unit": "examples/s", **split}


# ---- evaluation and generation ----------------------------------------------------------------

def run_eval(case: dict, s: Settings, data_dir: str, model_dir: str, fast_kernels: bool) -> dict:
    """Paraphrase: our evaluation (one forward per batch, logits at the answer position) on dev
    pairs, examples/s. Generation: our sonnet sampling (top-p 0.9, temperature 1.2) of up to
    max_new_tokens per held-out prompt, new tokens/s, with the KV cache on or off."""
    import torch

    from sftdpo.evaluate import make_task

    torch.manual_seed(s.seed)
    model, tokenizer = _engine_model(model_dir, fast_kernels)
    times, counts = [], []
    if case["what"] == "paraphrase":
        task = make_task("paraphrase", Path(data_dir), tokenizer)
        task.evaluate(model, "dev", limit=s.eval_pairs, batch_size=s.eval_batch_size)  # tokenizes, warms up
        for _ in range(s.repeats):
            start = time.perf_counter()
            out = task.evaluate(model, "dev", limit=s.eval_pairs, batch_size=s.eval_batch_size)
            times.append(time.perf_counter() - start)
            counts.append(out["n"])
        unit = "examples/s"
    else:
        from dataclasses import replace

        task = make_task("sonnet", Path(data_dir), tokenizer)
        task.generation = replace(task.generation, max_new_tokens=s.max_new_tokens)
        model.generation_config.use_cache = bool(case["use_cache"])
        prompts = [task.prompt_ids(h.prompt) for h in task.held_out("dev")][:s.gen_prompts]
        task.sample_ids(model, prompts[0], seed=10_000)  # warm-up
        for r in range(s.repeats):
            start = time.perf_counter()
            n = sum(len(task.sample_ids(model, p, seed=r * 1000 + i)) for i, p in enumerate(prompts))
            times.append(time.perf_counter() - start)
            counts.append(n)
        unit = "new tokens/s"
    rates = [c / t for c, t in zip(counts, times)]
    return {"throughput": median(rates), "windows": rates, "spread": spread(rates), "unit": unit,
            "items": counts, "seconds": times}


# ---- matmul peak ------------------------------------------------------------------------------

def run_peak(case: dict, s: Settings) -> dict:
    """Best (and median) fp32 GFLOP/s of `matmul_reps` n x n matmuls at this thread count."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(s.matmul_size, s.matmul_size, generator=g)
    b = torch.randn(s.matmul_size, s.matmul_size, generator=g)
    out = torch.empty_like(a)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(s.matmul_reps):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return {"gflops": matmul_gflops(s.matmul_size, min(times)),
            "gflops_median": matmul_gflops(s.matmul_size, median(times)), "throughput": None,
            "unit": "GFLOP/s", "matmul": f"{s.matmul_size}x{s.matmul_size} fp32, best of {s.matmul_reps}"}


# ---- dispatch ---------------------------------------------------------------------------------

def run_case(case: dict, s: Settings, ctx: dict) -> dict:
    """Run one case; ctx: data (prepared ids), model_dir, data_dir, peak (GFLOP/s), fast_kernels."""
    set_threads(s.threads)
    group = case["group"]
    start = time.perf_counter()
    if group == "peak":
        out = run_peak(case, s)
    elif group == "train" and case["impl"] == "ours":
        out = run_train_ours(case, s, ctx["data"], ctx["model_dir"], ctx.get("peak"), ctx["fast_kernels"])
    elif group == "train":
        out = run_train_trl(case, s, ctx["data"], ctx["model_dir"], ctx.get("peak"))
    elif group == "scaling":
        out = run_scaling(case, s, ctx.get("peak"), ctx["fast_kernels"])
    elif group == "eval":
        out = run_eval(case, s, ctx["data_dir"], ctx["model_dir"], ctx["fast_kernels"])
    else:
        raise ValueError(f"unknown case group {group}")
    if not (group == "train" and case["impl"] != "ours") and group != "peak":
        out["fast_kernels"] = bool(ctx.get("fast_kernels"))
    return {**case, **out, "case_seconds": time.perf_counter() - start}


def worker_main(case_file: str, result_file: str) -> None:
    """Entry point of a worker interpreter: read case + context JSON, write the result JSON."""
    job = json.loads(Path(case_file).read_text())
    s = Settings(**job["settings"])
    ctx = job["ctx"]
    if ctx.get("data_file"):
        ctx["data"] = json.loads(Path(ctx["data_file"]).read_text())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run_case(job["case"], s, ctx)
    Path(result_file).write_text(json.dumps(result))
