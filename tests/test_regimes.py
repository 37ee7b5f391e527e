"""End to end through sftdpo.regimes.train: every regime x FFT/LoRA on paraphrase, sonnet SFT and
DPO, the run directory's files, the DPO reference, determinism, and exact resume after a crash.

Paraphrase runs see 256 train / 48 dev / 48 test pairs (the `small_paraphrase_splits` fixture);
runs are trained once per module and shared by the tests that only read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sftdpo.regimes as regimes
from sftdpo.config import TrainConfig, from_dict, load_config, merge, read_yaml
from sftdpo.errors import UsageError
from sftdpo.evaluate import evaluate_run
from sftdpo.io import read_json, read_jsonl
from sftdpo.regimes import train
from sftdpo.steps import compute_reference_logps, sft_step
from sftdpo.tasks.base import PreferencePair

pytestmark = pytest.mark.usefixtures("small_paraphrase_splits")

LN2 = math.log(2)
BASE = {"task": "paraphrase", "model": "builtin:tiny", "data": {"train_size": 32, "dev_size": 32},
        "sft": {"epochs": 1, "batch_size": 8}, "dpo_optim": {"epochs": 1, "batch_size": 8}}
REGIMES = ["sft", "dpo", "sft-dpo"]
PARAMS = ["fft", "lora"]
DPO_RUNS = [(r, p) for r in ("dpo", "sft-dpo") for p in PARAMS]
# 44 examples in batches of 8: 6 steps per epoch, the last one short (4); 12 steps in 2 epochs
RESUMABLE = {
    "sft": {"regime": "sft", "params": "fft", "data": {"train_size": 44},
            "sft": {"epochs": 2, "lr": 3e-3, "warmup_ratio": 0.0}},
    "dpo": {"regime": "dpo", "params": "lora", "data": {"train_size": 44}, "dpo_optim": {"epochs": 2}},
}
FAIL_AT_CALL = 9  # epoch 2, step 3
TIMING_KEYS = {"eval_seconds"}
ROW_TIMING_KEYS = {"tokens_per_s", "elapsed"}


def make_config(tree: dict) -> TrainConfig:
    return load_config(overrides=merge(BASE, tree))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_root: Path, tiny_backbone: Path):
    """run(name, tree) -> (cfg, run_dir, metrics): trains each named run once per module."""
    done: dict[str, tuple[TrainConfig, Path, dict]] = {}

    def run(name: str, tree: dict) -> tuple[TrainConfig, Path, dict]:
        if name not in done:
            cfg = make_config(tree)
            run_dir = tmp_path_factory.mktemp(name) / "run"
            done[name] = (cfg, run_dir, train(cfg, run_dir, data_root, progress=False))
        return done[name]

    return run


def paraphrase_run(runs, regime: str, params: str):
    return runs(f"para-{regime}-{params}", {"regime": regime, "params": params})


def sonnet_run(runs, regime: str):
    return runs(f"sonnet-{regime}", {"task": "sonnet", "regime": regime, "data": {"train_size": 8, "eval_samples": 1},
                                     "pairs": {"construction": "shuffled"}})


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def log_rows(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "log.jsonl")


# ------------------------------------------------------------------ every regime x params on paraphrase


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("regime", REGIMES)
def test_paraphrase_run_directory(runs, regime: str, params: str) -> None:
    cfg, run_dir, metrics = paraphrase_run(runs, regime, params)
    for name in ("config.yaml", "log.jsonl", "curve.jsonl", "metrics.json", "checkpoint/config.json"):
        assert (run_dir / name).exists(), name
    assert from_dict(TrainConfig, read_yaml(run_dir / "config.yaml")) == cfg
    assert read_json(run_dir / "metrics.json") == metrics
    stages = regimes.stages_of(cfg)
    assert (metrics["task"], metrics["regime"], metrics["params"]) == ("paraphrase", regime, params)
    for split in ("dev", "test"):
        assert 0 <= metrics[split]["accuracy"] <= 1 and 0 <= metrics[split]["f1"] <= 1
        assert metrics[split]["n"] == {"dev": 32, "test": 48}[split]  # dev_size 32; all test pairs
    assert "majority_accuracy" in metrics["baselines"]
    assert metrics["train_seconds"] > 0 and metrics["peak_memory_mb"] > 0 and metrics["flops"] > 0
    assert metrics["steps"] == 4 * len(stages)  # 32 examples, batch 8, 1 epoch per stage
    if params == "lora":
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
        assert metrics["trainable_fraction"] < 0.5
    else:
        assert metrics["trainable_params"] == metrics["total_params"] and metrics["trainable_fraction"] == 1.0
    assert set(metrics["stages"]) == set(stages)
    for stage in stages:
        done = read_json(run_dir / "stages" / stage / "done.json")
        assert (done["steps"], done["epochs"], done["examples"], done["skipped_steps"]) == (4, 1, 32, 0)
        assert (run_dir / "stages" / stage / "model" / "config.json").exists()
    rows = log_rows(run_dir)
    assert [(r["stage"], r["step"]) for r in rows] == [(s, i) for s in stages for i in range(1, 5)]
    for r in rows:
        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
            assert math.isfinite(r[key]), key
    curve = read_jsonl(run_dir / "curve.jsonl")
    assert [(p["stage"], p["epoch"]) for p in curve] == [(s, 1) for s in stages]
    assert all(0 <= p["accuracy"] <= 1 and 0 <= p["f1"] <= 1 for p in curve)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("regime", REGIMES)
def test_checkpoint_is_a_plain_model_that_scores_the_metrics(runs, data_root: Path, regime: str,
                                                             params: str) -> None:
    from transformers import AutoModelForCausalLM

    _, run_dir, metrics = paraphrase_run(runs, regime, params)
    checkpoint = run_dir / "checkpoint"
    assert not (checkpoint / "adapter_config.json").exists()  # LoRA is merged, not saved as an adapter
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
    assert not any("lora_" in n for n, _ in model.named_parameters())
    again = evaluate_run(run_dir, data_root, "test")["test"]
    for key in ("accuracy", "f1", "predicted_yes", "label_mass", "n"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-6), key


@pytest.mark.parametrize("regime, params", DPO_RUNS)
def test_dpo_rows_log_rewards_and_logps(runs, regime: str, params: str) -> None:
    _, run_dir, _ = paraphrase_run(runs, regime, params)
    rows = [r for r in log_rows(run_dir) if r["stage"] == "dpo"]
    assert len(rows) == 4
    for r in rows:
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "logps/chosen", "logps/rejected"):
            assert math.isfinite(r[key]), key
        assert r["rewards/margins"] == pytest.approx(r["rewards/chosen"] - r["rewards/rejected"], abs=1e-6)
        assert 0 <= r["rewards/accuracies"] <= 1
        assert r["logps/chosen"] < 0 and r["logps/rejected"] < 0
        beta = 0.1  # the preset's: rewards are beta * log-ratios
        assert r["rewards/chosen"] == pytest.approx(beta * r["logratios/chosen"], abs=1e-5)
        assert r["rewards/rejected"] == pytest.approx(beta * r["logratios/rejected"], abs=1e-5)
    sft_rows = [r for r in log_rows(run_dir) if r["stage"] == "sft"]
    assert all("rewards/chosen" not in r for r in sft_rows)


@pytest.mark.parametrize("regime, params", DPO_RUNS)
def test_step0_check_is_ln2(runs, regime: str, params: str) -> None:
    """Before DPO the policy is the reference: loss ln 2, every reward 0 (sft-dpo + LoRA included:
    the SFT adapter is merged before DPO, so the adapter-off reference is the SFT model)."""
    _, run_dir, metrics = paraphrase_run(runs, regime, params)
    check = read_json(run_dir / "stages" / "dpo" / "done.json")["step0_check"]
    assert check["loss"] == pytest.approx(LN2, abs=1e-4)
    assert check["max_abs_reward"] < 1e-4
    assert metrics["stages"]["dpo"]["step0_check"] == check
    assert metrics["stages"]["dpo"]["pairs"]["pairs"] == 32


@pytest.mark.parametrize("regime, params", DPO_RUNS)
def test_dpo_reference_is_the_starting_policy(runs, tiny_backbone: Path, regime: str, params: str) -> None:
    """The cached reference log-probs are the backbone's (dpo) or the SFT stage model's (sft-dpo)."""
    from sftdpo.models import load_model_and_tokenizer

    cfg, run_dir, _ = paraphrase_run(runs, regime, params)
    stage = run_dir / "stages" / "dpo"
    pairs = [PreferencePair(*map(tuple, row)) for row in read_json(stage / "pairs.json")]
    saved = load_file(str(stage / "ref_logps.safetensors"))

    def logps_of(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        model, tok = load_model_and_tokenizer(str(path))
        return compute_reference_logps(model, pairs, tok.pad_token_id, cfg.data.max_length, "cpu")

    backbone = logps_of(tiny_backbone)
    start = backbone if regime == "dpo" else logps_of(run_dir / "stages" / "sft" / "model")
    assert torch.allclose(saved["chosen"], start[0], atol=1e-4)
    assert torch.allclose(saved["rejected"], start[1], atol=1e-4)
    if regime == "sft-dpo":  # SFT moved the model, so the backbone would be the wrong reference
        assert (saved["chosen"] - backbone[0]).abs().max() > 1e-3


def test_sft_loss_goes_down(runs) -> None:
    _, run_dir, _ = runs("resume-sft-A", RESUMABLE["sft"])
    losses = [r["loss"] for r in log_rows(run_dir)]
    assert len(losses) == 12
    # the label word starts at ~1/V probability (loss ~7); 12 clipped steps at lr 3e-3 take > 1 nat off
    assert losses[-1] < losses[0]
    assert (losses[-1] + losses[-2]) / 2 < (losses[0] + losses[1]) / 2 - 1.0, losses


# ------------------------------------------------------------------ run directory reuse


def test_finished_run_is_not_retrained(runs, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, run_dir, metrics = paraphrase_run(runs, "sft", "fft")
    log_before = (run_dir / "log.jsonl").read_bytes()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(regimes, "run_stage", forbidden)
    monkeypatch.setattr(regimes, "finish", forbidden)
    assert train(cfg, run_dir, data_root, resume=True, progress=False) == metrics
    assert (run_dir / "log.jsonl").read_bytes() == log_before


def test_existing_run_needs_resume_and_the_same_config(runs, data_root: Path) -> None:
    cfg, run_dir, metrics = paraphrase_run(runs, "sft", "fft")
    with pytest.raises(UsageError, match="--resume"):
        train(cfg, run_dir, data_root, progress=False)
    other = make_config({"regime": "sft", "params": "fft", "seed": cfg.seed + 1})
    with pytest.raises(UsageError, match="different config"):
        train(other, run_dir, data_root, resume=True, progress=False)
    assert read_json(run_dir / "metrics.json") == metrics
    assert from_dict(TrainConfig, read_yaml(run_dir / "config.yaml")) == cfg


# ------------------------------------------------------------------ sonnet


@pytest.mark.parametrize("regime", ["sft", "dpo"])
def test_sonnet_end_to_end(runs, regime: str) -> None:
    cfg, run_dir, metrics = sonnet_run(runs, regime)
    for name in ("config.yaml", "log.jsonl", "curve.jsonl", "metrics.json", "generations.jsonl",
                 "checkpoint/config.json"):
        assert (run_dir / name).exists(), name
    test = metrics["test"]
    assert 0 <= test["chrf"] <= 100 and test["nll"] > 0 and test["samples"] == 1
    assert "prompt_only_chrf" in metrics["baselines"]
    generations = read_jsonl(run_dir / "generations.jsonl")
    assert len(generations) == test["n"] > 0
    assert all(g["sample"] == 0 and g["text"].count("\n") >= 2 for g in generations)
    curve = read_jsonl(run_dir / "curve.jsonl")
    assert len(curve) == 1 and curve[0]["nll"] > 0
    if regime == "dpo":
        done = read_json(run_dir / "stages" / "dpo" / "done.json")
        assert done["pairs"] == {"pairs": 8, "unique_prompts": 8, "unique_prompts_per_pair": 1.0}
        assert done["step0_check"]["loss"] == pytest.approx(LN2, abs=1e-4)
        assert all("rewards/margins" in r for r in log_rows(run_dir))


# ------------------------------------------------------------------ determinism and exact resume


def _row_values(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ROW_TIMING_KEYS} for r in rows]


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_same_config_same_results(runs, kind: str) -> None:
    _, dir_a, a = runs(f"resume-{kind}-A", RESUMABLE[kind])
    _, dir_b, b = runs(f"resume-{kind}-A2", RESUMABLE[kind])
    assert dir_a != dir_b
    assert without_timing(a["test"]) == without_timing(b["test"])
    assert without_timing(a["dev"]) == without_timing(b["dev"])
    assert _row_values(log_rows(dir_a)) == _row_values(log_rows(dir_b))
    assert read_jsonl(dir_a / "curve.jsonl") == read_jsonl(dir_b / "curve.jsonl")


def _failing_step_patch(monkeypatch: pytest.MonkeyPatch, kind: str, calls: list) -> None:
    """Make the stage's step function raise on its FAIL_AT_CALL-th call."""

    def counted(step):
        def wrapped(model, batch):
            calls.append(1)
            if len(calls) == FAIL_AT_CALL:
                raise RuntimeError("injected failure")
            return step(model, batch)
        return wrapped

    if kind == "sft":
        monkeypatch.setattr(regimes, "sft_step", counted(sft_step))
    else:
        real = regimes.make_dpo_step
        monkeypatch.setattr(regimes, "make_dpo_step", lambda cfg, reference: counted(real(cfg, reference)))


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(runs, tmp_path: Path, data_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    cfg, dir_a, a = runs(f"resume-{kind}-A", RESUMABLE[kind])
    dir_b = tmp_path / "run"
    calls: list = []
    with monkeypatch.context() as mp:
        _failing_step_patch(mp, kind, calls)
        with pytest.raises(RuntimeError, match="injected failure"):
            train(cfg, dir_b, data_root, progress=False, save_every=1)
    assert len(calls) == FAIL_AT_CALL
    assert not (dir_b / "metrics.json").exists()
    state = json.loads((dir_b / "stages" / kind / "state" / "loop.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 8)
    assert [r["step"] for r in log_rows(dir_b)] == list(range(1, 9))

    b = train(cfg, dir_b, data_root, resume=True, progress=False, save_every=1)
    assert without_timing(b["test"]) == without_timing(a["test"])
    assert without_timing(b["dev"]) == without_timing(a["dev"])
    rows_a, rows_b = log_rows(dir_a), log_rows(dir_b)
    assert [(r["stage"], r["step"]) for r in rows_b] == [(kind, i) for i in range(1, 13)]
    assert [(r["stage"], r["step"]) for r in rows_b] == [(r["stage"], r["step"]) for r in rows_a]
    for ra, rb in zip(rows_a, rows_b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6), rb["step"]
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4, abs=1e-6)
    assert read_jsonl(dir_b / "curve.jsonl") == read_jsonl(dir_a / "curve.jsonl")
    done = read_json(dir_b / "stages" / kind / "done.json")
    assert (done["steps"], done["epochs"], done["examples"]) == (12, 2, 44)


def test_ctrl_c_saves_and_resumes_exactly(runs, tmp_path: Path, data_root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT during step 9 finishes that step, saves, raises Interrupted; resuming equals run A."""
    import signal

    from sftdpo.loop import Interrupted

    cfg, dir_a, a = runs("resume-sft-A", RESUMABLE["sft"])
    dir_b = tmp_path / "run"
    calls: list = []

    def interrupting(model, batch):
        calls.append(1)
        if len(calls) == FAIL_AT_CALL:  # deliver Ctrl-C to the handler the loop installed
            handler = signal.getsignal(signal.SIGINT)
            if not callable(handler) or handler is signal.default_int_handler:
                raise RuntimeError("the loop installed no SIGINT handler")
            handler(signal.SIGINT, None)
        return sft_step(model, batch)

    with monkeypatch.context() as mp:
        mp.setattr(regimes, "sft_step", interrupting)
        with pytest.raises(Interrupted, match="--resume") as info:
            train(cfg, dir_b, data_root, progress=False)  # save_every 0: the interrupt itself saves
    assert info.value.exit_code == 130
    state = json.loads((dir_b / "stages" / "sft" / "state" / "loop.json").read_text())
    assert state["global_step"] == FAIL_AT_CALL
    b = train(cfg, dir_b, data_root, resume=True, progress=False)
    assert len(calls) == FAIL_AT_CALL  # the patched step is gone; the resumed run used the real one
    assert without_timing(b["test"]) == without_timing(a["test"])
    losses_a = [r["loss"] for r in log_rows(dir_a)]
    losses_b = [r["loss"] for r in log_rows(dir_b)]
    assert losses_b == pytest.approx(losses_a, abs=1e-6) and len(losses_b) == 12


@pytest.mark.parametrize("params", PARAMS)
def test_live_reference_equals_precomputed(runs, params: str) -> None:
    """--no-precompute-ref (a reference forward each step) trains the same as cached log-probs."""
    _, dir_pre, pre = paraphrase_run(runs, "dpo", params)
    _, dir_live, live = runs(f"para-dpo-{params}-live", {"regime": "dpo", "params": params,
                                                         "dpo": {"precompute_ref_log_probs": False}})
    assert not (dir_live / "stages" / "dpo" / "ref_logps.safetensors").exists()
    check = live["stages"]["dpo"]["step0_check"]
    assert check["loss"] == pytest.approx(LN2, abs=1e-4) and check["max_abs_reward"] < 1e-4
    rows_pre, rows_live = log_rows(dir_pre), log_rows(dir_live)
    assert len(rows_pre) == len(rows_live) == 4
    for rp, rl in zip(rows_pre, rows_live):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
            assert rl[key] == pytest.approx(rp[key], abs=1e-5), (key, rl["step"])
    assert live["test"]["accuracy"] == pytest.approx(pre["test"]["accuracy"])


def test_early_handoff(runs) -> None:
    """sft-dpo with sft.epochs 2 and handoff 1: one SFT epoch, on the 2-epoch LR schedule, then DPO."""
    from sftdpo.schedule import cosine_lr

    cfg, run_dir, metrics = runs("para-handoff", {"regime": "sft-dpo", "params": "fft", "handoff_epoch": 1,
                                                  "sft": {"epochs": 2}})
    sft_rows = [r for r in log_rows(run_dir) if r["stage"] == "sft"]
    dpo_rows = [r for r in log_rows(run_dir) if r["stage"] == "dpo"]
    assert len(sft_rows) == 4 and len(dpo_rows) == 4
    assert metrics["stages"]["sft"]["epochs"] == 1
    warmup = int(cfg.sft.warmup_ratio * 8)
    expected = [cosine_lr(s, 8, cfg.sft.lr, warmup, cfg.sft.min_lr_ratio) for s in range(4)]
    assert [r["lr"] for r in sft_rows] == pytest.approx(expected)
    assert sft_rows[-1]["lr"] > cfg.sft.lr * (cfg.sft.min_lr_ratio + 0.1)  # not decayed to the floor
    assert metrics["stages"]["dpo"]["step0_check"]["loss"] == pytest.approx(LN2, abs=1e-4)


def test_report_to_tensorboard_writes_event_files(tmp_path, data_root, tiny_backbone):
    """--report-to tensorboard (offline): every step also lands in RUN_DIR/tracking as TensorBoard events."""
    from sftdpo.config import load_config
    from sftdpo.regimes import train

    cfg = load_config(overrides={"task": "sonnet", "regime": "sft", "model": "builtin:tiny",
                                 "sft": {"epochs": 1}, "data": {"train_size": 8}})
    train(cfg, tmp_path / "run", data_root, progress=False, report_to="tensorboard")
    events = list((tmp_path / "run" / "tracking").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "sft/loss" in acc.Tags()["scalars"]
    assert len(acc.Scalars("sft/loss")) == 1  # 8 sonnets, batch 8: one step


@pytest.mark.parametrize("params", PARAMS)
def test_sft_dpo_reuses_the_sft_runs_stage_with_the_same_result(runs, tmp_path, data_root, params,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stage cache, sft-dpo copies the sft run's SFT stage: same metrics and DPO log as training it."""
    _, _, alone = paraphrase_run(runs, "sft-dpo", params)
    cache = tmp_path / "stage-cache"
    sft_cfg = make_config({"regime": "sft", "params": params})
    sft_metrics = train(sft_cfg, tmp_path / "sft", data_root, progress=False, stage_cache=cache)
    announced = list(cache.glob("*.json"))
    assert len(announced) == 1

    cfg = make_config({"regime": "sft-dpo", "params": params})
    calls, original = [], regimes.run_stage

    def counting_run_stage(stage, *args, **kwargs):
        calls.append(stage)
        return original(stage, *args, **kwargs)

    monkeypatch.setattr(regimes, "run_stage", counting_run_stage)
    shared = train(cfg, tmp_path / "sft-dpo", data_root, progress=False, stage_cache=cache)
    assert calls == ["dpo"]  # the SFT stage was copied, not trained
    assert shared["stages"]["sft"]["reused_from"] == "sft"
    assert shared["stages"]["sft"]["train_seconds"] == sft_metrics["stages"]["sft"]["train_seconds"]
    assert without_timing(shared["test"]) == without_timing(alone["test"])
    rows = lambda d, stage: _row_values([r for r in log_rows(d) if r["stage"] == stage])  # noqa: E731
    _, alone_dir, _ = paraphrase_run(runs, "sft-dpo", params)
    assert rows(tmp_path / "sft-dpo", "dpo") == rows(alone_dir, "dpo")
    assert rows(tmp_path / "sft-dpo", "sft") == rows(tmp_path / "sft", "sft")
    assert sft_dpo_key_differs_with_handoff(data_root)


def sft_dpo_key_differs_with_handoff(data_root) -> bool:
    from sftdpo.regimes import sft_stage_key

    full = make_config({"regime": "sft-dpo", "sft": {"epochs": 2}})
    early = make_config({"regime": "sft-dpo", "sft": {"epochs": 2}, "handoff_epoch": 1})
    sft = make_config({"regime": "sft", "sft": {"epochs": 2}})
    return (sft_stage_key(full, data_root) == sft_stage_key(sft, data_root)
            != sft_stage_key(early, data_root))
