"""`sftdpo train` under `accelerate launch` with 2 processes (CPU, gloo) against 1 process, same global batch.

The tiny backbone with dropout off (dropout masks depend on how a batch is split) trains a
paraphrase sft-dpo run (SFT, then DPO with precomputed reference log-probs) on 81 pairs, batch 8,
2 micro-batches per step, so the last micro-batch holds one example and one process gets none.

Measured (2-core CPU): every logged float (loss, grad norm, DPO rewards and log-probs, dev
metrics) within 1e-6 of the 1-process run, predictions and test accuracy/F1 identical. The
tolerance asserted is 1e-5. `rewards/accuracies` at the first DPO step is left out: there the
policy equals the reference, margins are +-3e-9 float noise, and their sign is arbitrary.
Only the main process writes: the same files as 1 process, no duplicated log rows, one report.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sftdpo.cli import main
from sftdpo.io import read_json, read_jsonl

TOLERANCE = 1e-5
TIMING_KEYS = {"train_seconds", "eval_seconds", "seconds_per_step", "tokens_per_s", "peak_memory_mb", "elapsed",
               "num_processes"}

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="compares CPU runs (gloo); GPUs: scripts/gpu_check.sh")


def train_args(model: Path, data_root: Path, out: Path) -> list[str]:
    return ["train", "--task", "paraphrase", "--regime", "sft-dpo", "--model", str(model), "--train-size", "81",
            "--dev-size", "16", "--set", "data.test_size=32", "--epochs", "2", "--dpo-epochs", "1",
            "--batch-size", "8", "--dpo-batch-size", "8", "--grad-accum", "2", "--set", "dpo_optim.grad_accum=2",
            "--lr", "3e-3", "--dpo-lr", "1e-3", "--data-dir", str(data_root), "--quiet", "--out", str(out)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_backbone: Path, data_root: Path) -> dict:
    """The same run with 1 process (in-process) and with 2 (`accelerate launch`)."""
    root = tmp_path_factory.mktemp("distributed")
    model = root / "model"  # the tiny backbone, dropout off
    shutil.copytree(tiny_backbone, model)
    config = json.loads((model / "config.json").read_text())
    config.update({k: 0.0 for k in ("attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_first_dropout")})
    (model / "config.json").write_text(json.dumps(config))

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(train_args(model, data_root, root / "one")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(root / "hf"),
           "PYTHONUNBUFFERED": "1"}
    # --multi_gpu is accelerate's multi-process launcher (torchrun); without GPUs it runs on the CPU (gloo)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "sftdpo.cli", *train_args(model, data_root, root / "two")]
    two = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    return {"one": root / "one", "two": root / "two", "stdout_one": out.getvalue(), "stdout_two": two.stdout}


def numbers(value, path: str = "") -> dict[str, object]:
    """Leaf values of nested metrics by dotted path, without wall-clock fields."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key not in TIMING_KEYS
                for k, v in numbers(item, f"{path}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}{i}.").items()}
    return {path[:-1]: value}


def assert_close(one: dict, two: dict, what: str) -> None:
    a, b = numbers(one), numbers(two)
    assert a.keys() == b.keys(), (what, a.keys() ^ b.keys())
    for key in a:
        if isinstance(a[key], float) or isinstance(b[key], float):
            assert abs(a[key] - b[key]) <= TOLERANCE, (what, key, a[key], b[key])
        else:
            assert a[key] == b[key], (what, key, a[key], b[key])


def test_two_processes_report_once_with_the_same_metrics(runs) -> None:
    assert runs["stdout_two"].count("paraphrase sft-dpo fft:") == 1  # only rank 0 prints
    one, two = read_json(runs["one"] / "metrics.json"), read_json(runs["two"] / "metrics.json")
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 2 * 6 + 6  # 81 examples, 16 per step: 6 steps an epoch
    for split in ("dev", "test"):
        for key in ("accuracy", "f1", "predicted_yes", "n"):
            assert one[split][key] == two[split][key], (split, key)
    assert_close(one, two, "metrics.json")
    assert read_json(runs["one"] / "predictions.json") == read_json(runs["two"] / "predictions.json")
    for stage in ("sft", "dpo"):
        assert_close(read_json(runs["one"] / "stages" / stage / "done.json"),
                     read_json(runs["two"] / "stages" / stage / "done.json"), f"{stage}/done.json")


def test_two_processes_log_every_step_like_one(runs) -> None:
    one, two = read_jsonl(runs["one"] / "log.jsonl"), read_jsonl(runs["two"] / "log.jsonl")
    keys = [(r["stage"], r["step"]) for r in two]
    assert len(keys) == len(set(keys)) == 18  # one row per optimizer step: no row written twice
    assert [(r["stage"], r["step"]) for r in one] == keys
    for a, b in zip(one, two):
        if a["stage"] == "dpo" and a["step"] == 1:  # margins are float noise around 0: sign arbitrary
            a, b = ({k: v for k, v in r.items() if k != "rewards/accuracies"} for r in (a, b))
        assert_close(a, b, f"log.jsonl {a['stage']} step {a['step']}")
        assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0
    assert_close(read_jsonl(runs["one"] / "curve.jsonl"), read_jsonl(runs["two"] / "curve.jsonl"), "curve.jsonl")
    assert len(read_jsonl(runs["two"] / "curve.jsonl")) == 3  # 2 SFT epochs + 1 DPO epoch


def test_two_processes_write_the_same_files_as_one(runs) -> None:
    def files(run: Path) -> list[str]:
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())

    assert files(runs["two"]) == files(runs["one"])
    assert not [f for f in files(runs["two"]) if f.endswith((".tmp", ".old"))]
    ref = runs["two"] / "stages" / "dpo" / "ref_logps.safetensors"
    from safetensors.torch import load_file

    assert {k: v.shape[0] for k, v in load_file(str(ref)).items()} == {"chosen": 81, "rejected": 81}
