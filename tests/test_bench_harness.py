"""The performance harness (benchmarks/run.py): its pure pieces, and a quick in-process run of a few
of our cases on the tiny backbone. No timing is asserted; TRL is not needed (its case is skipped
without it)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
from harness import Settings, Target  # noqa: E402


def test_flop_formula_fft_and_lora():
    n = 1_000_000
    assert harness.train_flops_per_token(frozen_params=0, trainable_params=n) == 6 * n  # FFT: 6N
    # LoRA: forward 2N + input gradient 2N for the frozen base, 6 per adapter parameter
    assert harness.train_flops_per_token(frozen_params=n, trainable_params=1000) == 4 * n + 6 * 1000
    assert harness.mfu(6e9, 10.0, 100.0) == pytest.approx(0.6)  # 60 GFLOP/s of a 100 GFLOP/s peak
    assert math.isnan(harness.mfu(6e9, 10.0, 0.0))
    assert harness.matmul_gflops(1000, 0.02) == pytest.approx(100.0)


def test_step_flops_counts_body_tokens_and_head_positions():
    import cases

    split = {"body_trainable": 100, "body_frozen": 0, "head_trainable": 10, "head_frozen": 0}
    assert cases.step_flops(split, tokens=50, head_positions=5) == 6 * 100 * 50 + 6 * 10 * 5
    lora = {"body_trainable": 4, "body_frozen": 100, "head_trainable": 0, "head_frozen": 10}
    assert cases.step_flops(lora, tokens=50, head_positions=5) == (6 * 4 + 4 * 100) * 50 + 4 * 10 * 5


def test_param_split_of_tied_gpt2_and_lora():
    import cases
    from transformers import GPT2Config, GPT2LMHeadModel

    from sftdpo.config import LoRAConfig
    from sftdpo.params import add_lora

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_embd=8, n_head=2, n_positions=16))
    total = sum(p.numel() for p in model.parameters())
    split = cases.param_split(model)
    assert split["head_trainable"] == 50 * 8  # the tied embedding, once
    assert split["body_trainable"] == total - 50 * 8 - 16 * 8  # no position embedding
    lora = cases.param_split(add_lora(model, LoRAConfig(r=2), seed=0))
    assert lora["head_frozen"] == 50 * 8 and lora["head_trainable"] == 0
    assert lora["body_frozen"] == split["body_trainable"] and 0 < lora["body_trainable"] < 1000


def test_window_rates_median_and_spread():
    stamps = [0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 8.0]  # step i starts at stamps[i]; the last is the end
    rates = harness.window_rates(stamps, [4] * 6, warmup=1, window=2, repeats=5)
    assert rates == [4.0, 2.0]  # steps 1-2: 8 items in 2 s; steps 3-4: 8 in 4 s; no third window
    assert harness.median([3.0, 1.0, 2.0]) == 2.0
    assert harness.spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert harness.spread([5.0]) == 0.0
    assert harness.steps_needed(Settings(warmup_steps=4, repeats=5, window_steps=8)) == 44


def test_case_selection():
    everything = harness.all_cases()
    names = [c["name"] for c in everything]
    assert len(names) == len(set(names))
    assert "train/paraphrase/dpo/fft/trl-matched" in names and "scaling/gpt2-124m/lora-r16" in names
    no_trl = [c["name"] for c in harness.all_cases(trl=False)]
    assert not any("trl" in n for n in no_trl)
    chosen = [c["name"] for c in harness.select_cases(everything, ["train/paraphrase/dpo"])]
    assert chosen[0] == "peak/matmul/start"  # utilisation needs a peak
    assert {n for n in chosen[1:]} == {f"train/paraphrase/dpo/{p}/{i}" for p in ("fft", "lora")
                                       for i in ("ours", "trl-defaults", "trl-matched")}
    globbed = [c["name"] for c in harness.select_cases(everything, ["scaling/*/fft"])]
    assert globbed == ["peak/matmul/start", "scaling/mini/fft", "scaling/gpt2-124m/fft"]
    assert [c["name"] for c in harness.select_cases(everything, ["eval"])] == [
        "eval/paraphrase", "eval/sonnet-generate/cache", "eval/sonnet-generate/no-cache"]
    assert harness.select_cases(everything, None) == everything
    assert harness.estimate_seconds(everything, Settings()) > harness.estimate_seconds(
        everything, Settings.quick_settings())


def _fake_results() -> list[dict]:
    rows = [{"name": "peak/matmul/start", "group": "peak", "gflops": 180.0},
            {"name": "peak/matmul/end", "group": "peak", "gflops": 185.0}]
    rates = {"ours": 30.0, "trl-defaults": 6.0, "trl-matched": 12.0}
    for task in harness.TASKS:
        for kind in harness.KINDS:
            for params in harness.PARAMS:
                for impl, rate in rates.items():
                    rows.append({"name": f"train/{task}/{kind}/{params}/{impl}", "group": "train",
                                 "throughput": rate, "mfu": 0.1, "ref_precompute_s": 1.5})
    for shape in ("mini", "gpt2-124m"):
        for label, step, mem in (("fft", 6.0, 2000.0), ("lora-r8", 4.0, 600.0), ("lora-r16", 4.2, 650.0)):
            rows.append({"name": f"scaling/{shape}/{label}", "group": "scaling", "shape": shape,
                         "shape_desc": shape, "step_s": step, "train_memory_mib": mem,
                         "trainable_params": 10, "gflop_per_step": 700.0, "mfu": 0.72 if label == "fft" else 0.6})
    rows.append({"name": "eval/sonnet-generate/cache", "group": "eval", "throughput": 300.0, "unit": "new tokens/s"})
    rows.append({"name": "eval/sonnet-generate/no-cache", "group": "eval", "throughput": 100.0,
                 "unit": "new tokens/s"})
    rows.append({"name": "eval/paraphrase", "group": "eval", "error": "exit 1: boom"})
    return rows


def test_targets_and_tables():
    results = _fake_results()
    ts = {t.name: t for t in harness.targets(results)}
    assert ts["paraphrase DPO fft: ours / TRL defaults"].value == pytest.approx(5.0)
    assert ts["paraphrase DPO fft: ours / TRL defaults"].met is True
    assert ts["paraphrase DPO fft: ours / TRL precompute, no checkpointing"].met is True  # 2.5 >= 2
    assert ts["124M shape: LoRA r=8 step time / FFT step time"].value == pytest.approx(4 / 6)
    assert ts["124M shape: LoRA r=8 step time / FFT step time"].met is True
    assert ts["124M shape: FFT SFT step MFU (of measured matmul peak)"].met is True
    assert Target("x", None, 1.0).met is None and "not measured" in Target("x", None, 1.0).line()
    assert "NOT MET" in Target("x", 0.5, 1.0).line()
    assert harness.peak_gflops(results) == 185.0
    text = "\n".join(harness.report_lines(results, {"cpu": "test cpu", "threads": 2}))
    assert "| paraphrase | DPO | fft | 30.0 pairs/s | 6.0 | 12.0 | 5.00x | 2.50x |" in text
    assert "| KV cache speed-up | 3.00x |" in text
    assert "| eval/paraphrase | exit 1: boom |" in text  # a failed case is listed, not dropped
    assert "185.0 GFLOP/s" in text


def test_docs_page():
    empty = harness.docs_page([], {})
    assert empty.startswith("# Performance") and "Not measured on a quiet machine yet" in empty
    assert harness.FULL_COMMAND in empty and "Model FLOP utilisation" in empty
    full = harness.docs_page(_fake_results(), {"date": "2026-01-01", "cpu": "cpu", "threads": 2,
                                               "versions": {"torch": "2.13.0", "trl": "1.16.0"}})
    assert "torch 2.13.0, trl 1.16.0" in full and "Targets (issue #7)" in full


@pytest.fixture(scope="module")
def quick_ctx(tiny_backbone, data_root, small_paraphrase_splits):
    import cases

    s = Settings.quick_settings(threads=1)
    data = cases.prepare_data(str(tiny_backbone), str(data_root), s)
    return s, {"data": data, "model_dir": str(tiny_backbone), "data_dir": str(data_root), "fast_kernels": True,
               "peak": 50.0}


@pytest.mark.parametrize("name", ["train/paraphrase/dpo/fft/ours", "train/sonnet/sft/lora/ours",
                                  "train/sonnet/dpo/fft/ours"])
def test_quick_training_case_of_ours(quick_ctx, name):
    import cases

    s, ctx = quick_ctx
    case = next(c for c in harness.all_cases(trl=False) if c["name"] == name)
    r = cases.run_case(case, s, ctx)
    assert len(r["windows"]) == s.repeats and r["throughput"] > 0 and r["timed_steps"] == s.repeats * s.window_steps
    assert 0 < r["mfu"] and r["tokens_per_s"] > 0
    if case["kind"] == "dpo":
        assert r["ref_precompute_s"] > 0 and r["unit"] == "pairs/s"
    if case["params"] == "lora":
        assert 0 < r["body_trainable"] < r["body_frozen"]


def test_quick_scaling_and_eval_cases(quick_ctx):
    import cases

    s, ctx = quick_ctx
    by = {c["name"]: c for c in harness.all_cases(trl=False)}
    fft = cases.run_case(by["scaling/mini/fft"], s, ctx)
    lora = cases.run_case(by["scaling/mini/lora-r16"], s, ctx)
    assert len(fft["steps"]) == s.scaling_repeats and fft["step_s"] > 0
    assert lora["trainable_params"] < fft["trainable_params"]
    assert fft["gflop_per_step"] > lora["gflop_per_step"] > 0  # 6N vs 4N + adapters
    gen = cases.run_case(by["eval/sonnet-generate/no-cache"], s, ctx)
    assert gen["unit"] == "new tokens/s" and sum(gen["items"]) > 0


def test_quick_trl_case(quick_ctx):
    pytest.importorskip("trl")
    import cases

    s, ctx = quick_ctx
    case = {"name": "train/paraphrase/dpo/lora/trl-matched", "group": "train", "task": "paraphrase",
            "kind": "dpo", "params": "lora", "impl": "trl-matched"}
    r = cases.run_case(case, s, ctx)
    assert r["throughput"] > 0 and r["precompute_ref_log_probs"] and not r["gradient_checkpointing"]
    assert r["ref_precompute_s"] > 0 and r["body_trainable"] > 0


def test_cli_runs_a_case_in_a_worker_process(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--threads", "1", "--only", "peak",
                           "--isolate", "--out", str(out), "--docs", str(tmp_path / "perf.md")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["results"]] == ["peak/matmul/start", "peak/matmul/end"]
    assert all(r["gflops"] > 0 for r in saved["results"])
    assert saved["meta"]["versions"]["torch"] and saved["meta"]["threads"] == 1
    assert (tmp_path / "perf.md").read_text().startswith("# Performance")
