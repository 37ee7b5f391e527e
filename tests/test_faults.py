"""Faults during `sftdpo train`: NaN losses (skipped with a warning; a run of them stops the run and
keeps the last good state), divergence (marked in metrics.json and the study report), and SIGKILLs
at seeded random moments, each followed by --resume, ending with the same metrics and log as an
uninterrupted run and with every file of the run directory loadable at every kill.

NaN and divergence runs are in-process on the tiny backbone and 256/48/48 paraphrase pairs; the
killed run is `python -m sftdpo.cli train` on the sonnets (small data, so each start is quick; about
25 s of CPU in all, most of it the four process starts and two final evaluations).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_main, without_timing
from safetensors.torch import load_file

import sftdpo.regimes as regimes
from sftdpo.io import read_jsonl
from sftdpo.loop import MAX_BAD_STEPS
from sftdpo.params import trainable_state
from sftdpo.steps import sft_step

KILL_SEED = int(os.environ.get("SFTDPO_TEST_KILL_SEED", "20240611"))
"""Seeds the moments the kill test SIGKILLs `sftdpo train` (3 kills; see test_killed_train_...)."""


def paraphrase_argv(run_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return ["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny", "--train-size", "32",
            "--batch-size", "4", "--dev-size", "8", "--epochs", "1", "--out", str(run_dir),
            "--data-dir", str(data_root), "--quiet", *extra]


def patch_step(monkeypatch: pytest.MonkeyPatch, change) -> list[dict]:
    """SFT steps go through change(call, loss, metrics) -> (loss, metrics); returns the trainable
    weights each call started from."""
    starts: list[dict] = []

    def step(model, batch):
        starts.append(trainable_state(model))
        loss, metrics = sft_step(model, batch)
        return change(len(starts), loss, metrics)

    monkeypatch.setattr(regimes, "sft_step", step)
    return starts


def nan(loss, metrics):
    return loss * float("nan"), {**metrics, "loss": float("nan")}


# ---- NaN losses ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("small_paraphrase_splits")
def test_isolated_nan_steps_are_skipped_with_a_warning(tmp_path: Path, data_root: Path, tiny_backbone: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Steps 2 and 5 of 8 have a NaN loss: each is skipped with a warning, the run finishes, and the
    skipped steps are counted in metrics.json."""
    patch_step(monkeypatch, lambda call, loss, m: nan(loss, m) if call in (2, 5) else (loss, m))
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="sftdpo"):
        code, out, err = run_main(paraphrase_argv(run_dir, data_root))
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert warnings == ["sft step 2: non-finite loss or gradient; step skipped",
                        "sft step 5: non-finite loss or gradient; step skipped"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["skipped_steps"] == 2
    assert metrics["stages"]["sft"]["skipped_steps"] == 2 and not metrics["diverged"]
    assert [math.isnan(r["loss"]) for r in read_jsonl(run_dir / "log.jsonl")] == [s in (2, 5) for s in range(1, 9)]
    assert all(torch.isfinite(t).all() for t in load_file(str(run_dir / "checkpoint" / "model.safetensors")).values())


@pytest.mark.usefixtures("small_paraphrase_splits")
def test_repeated_nan_steps_stop_the_run_and_keep_the_last_good_state(tmp_path: Path, data_root: Path,
                                                                      tiny_backbone: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """From step 4 on every loss is NaN: the 10th in a row stops the run with one line and exit 1;
    the saved state holds the weights of the last good step (3), finite."""
    starts = patch_step(monkeypatch, lambda call, loss, m: nan(loss, m) if call >= 4 else (loss, m))
    run_dir = tmp_path / "run"
    code, out, err = run_main(paraphrase_argv(run_dir, data_root, "--train-size", "64", "--save-every", "1"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0] == (f"sftdpo: error: sft: {MAX_BAD_STEPS} consecutive steps had a NaN/inf loss or gradient; "
                        "lower the learning rate or check the data")
    assert len(starts) == 3 + MAX_BAD_STEPS
    stage = run_dir / "stages" / "sft"
    assert not (run_dir / "metrics.json").exists() and not (stage / "done.json").exists()
    saved = load_file(str(stage / "state" / "trainable.safetensors"))
    last_good = starts[3]  # the weights step 4 started from: after step 3, the last good one
    assert saved.keys() == last_good.keys()
    assert all(torch.equal(saved[k], last_good[k]) and torch.isfinite(saved[k]).all() for k in saved)
    assert not all(torch.equal(saved[k], starts[0][k]) for k in saved)  # steps 1-3 did train
    loop = json.loads((stage / "state" / "loop.json").read_text())
    assert loop["skipped_steps"] == loop["bad_streak"] == MAX_BAD_STEPS - 1


# ---- divergence -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("small_paraphrase_splits")
def test_divergence_is_marked_in_the_metrics(tmp_path: Path, data_root: Path, tiny_backbone: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The logged loss jumps to 20x its start from step 3: the smoothed loss passes 3x the start at
    step 4, which is warned about and recorded; the run still finishes."""
    first: list[float] = []

    def blow_up(call, loss, metrics):
        first.append(metrics["loss"])
        return (loss, metrics) if call < 3 else (loss, {**metrics, "loss": 20 * first[0]})

    patch_step(monkeypatch, blow_up)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="sftdpo"):
        code, _, err = run_main(paraphrase_argv(run_dir, data_root))
    assert code == 0, err
    assert any("sft step 4: training diverged" in r.getMessage() for r in caplog.records)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["diverged"] is True
    assert metrics["stages"]["sft"]["diverged"] is True and metrics["stages"]["sft"]["diverged_step"] == 4


def test_divergence_and_skipped_steps_are_in_the_report() -> None:
    from sftdpo.report import health_section
    from sftdpo.report.results import Record

    records = [Record("a-s1", {"task": "paraphrase"}, {"diverged": True, "skipped_steps": 0}, Path(".")),
               Record("b-s1", {"task": "paraphrase"}, {"diverged": False, "skipped_steps": 3}, Path(".")),
               Record("c-s1", {"task": "paraphrase"}, {"diverged": False, "skipped_steps": 0}, Path("."))]
    text = health_section(records)
    assert "**Diverged runs**" in text and "a-s1" in text.split("\n")[0]
    assert "b-s1 (3)" in text and "c-s1" not in text
    assert health_section(records[2:]) == ""


# ---- SIGKILL at random moments, then --resume -----------------------------------------------------

KILL_ARGS = ["train", "--task", "sonnet", "--regime", "sft", "--model", "builtin:tiny", "--train-size", "32",
             "--batch-size", "1", "--epochs", "2", "--save-every", "1", "--eval-samples", "1", "--quiet"]
KILL_STEPS = 64
KILL_WINDOWS = [(3, 16), (22, 36), (42, 54)]
"""Each kill comes once the log holds a seeded number of rows from its window (plus 0-50 ms)."""


def complete_rows(log: Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def is_temporary(path: Path, run_dir: Path) -> bool:
    """A file an atomic write had not yet renamed into place (it may be partial by design)."""
    parts = path.relative_to(run_dir).parts
    return path.name.startswith(".") or any(p.endswith(".tmp") for p in parts)


def check_loadable(run_dir: Path) -> list[str]:
    """Load every file of the run dir by its kind; returns the temporary files seen (not loaded)."""
    temporary = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        name = str(path.relative_to(run_dir))
        if is_temporary(path, run_dir):
            temporary.append(name)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            text = path.read_text()
            lines = text.split("\n")
            for line in lines[:-1]:  # every complete line; a torn last one is read past by design
                json.loads(line)
            assert lines[-1] == "" or name == "log.jsonl", f"{name} ends in a torn line"
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), name
        elif path.suffix == ".safetensors":
            assert load_file(str(path)), name
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        else:
            path.read_text(encoding="utf-8")
    return temporary


def test_killed_train_resumes_to_the_uninterrupted_result(tmp_path: Path, data_root: Path,
                                                          tiny_backbone: Path) -> None:
    reference = tmp_path / "reference"
    code, _, err = run_main([*KILL_ARGS, "--out", str(reference), "--data-dir", str(data_root)])
    assert code == 0, err

    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "sftdpo.cli", *KILL_ARGS, "--out", str(run_dir), "--data-dir", str(data_root)]
    env = {**os.environ, "SFTDPO_CACHE_DIR": os.environ["SFTDPO_CACHE_DIR"], "OMP_NUM_THREADS": "1"}
    rng = random.Random(KILL_SEED)
    log = run_dir / "log.jsonl"
    for attempt, (low, high) in enumerate(KILL_WINDOWS):
        target, delay = rng.randrange(low, high), rng.uniform(0.0, 0.05)
        stderr = tmp_path / f"attempt{attempt}.stderr"
        with open(stderr, "w") as err_file:
            proc = subprocess.Popen(command + ["--resume"] * (attempt > 0), env=env, stdout=subprocess.DEVNULL,
                                    stderr=err_file)
            try:
                deadline = time.monotonic() + 600  # only a guard against a hang
                while complete_rows(log) < target:
                    assert proc.poll() is None, f"train ended (exit {proc.returncode}):\n{stderr.read_text()[-3000:]}"
                    assert time.monotonic() < deadline, f"fewer than {target} steps after 600 s"
                    time.sleep(0.005)
                time.sleep(delay)
                still_running = proc.poll() is None
                proc.send_signal(signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        assert still_running and proc.returncode == -signal.SIGKILL, "the run finished before the kill"
        rows = complete_rows(log)
        assert target <= rows < KILL_STEPS, (attempt, target, rows)
        check_loadable(run_dir)
        assert not (run_dir / "metrics.json").exists()
        print(f"kill seed {KILL_SEED}: attempt {attempt} killed at {rows} logged steps (target {target} + "
              f"{delay * 1000:.0f} ms)")

    final = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert check_loadable(run_dir) == []
    got = json.loads((run_dir / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert without_timing(got) == without_timing(want)
    assert [without_timing(r) for r in read_jsonl(run_dir / "log.jsonl")] == \
        [without_timing(r) for r in read_jsonl(reference / "log.jsonl")]
    assert [r["step"] for r in read_jsonl(run_dir / "log.jsonl")] == list(range(1, KILL_STEPS + 1))
    assert read_jsonl(run_dir / "curve.jsonl") == read_jsonl(reference / "curve.jsonl")
    assert (run_dir / "generations.jsonl").read_text() == (reference / "generations.jsonl").read_text()


def test_resume_removes_the_temp_files_of_writes_cut_short(tmp_path: Path) -> None:
    from sftdpo.io import atomic_write_text, remove_partial_writes

    (tmp_path / "stages" / "sft").mkdir(parents=True)
    torn = [tmp_path / ".metrics.json.k3j_x9a0", tmp_path / "stages" / "sft" / ".done.json.abcdefgh"]
    kept = [tmp_path / ".hidden", tmp_path / "log.jsonl", tmp_path / ".metrics.json.too-long-a-name"]
    for path in torn + kept:
        path.write_text("{")
    atomic_write_text(tmp_path / "real.json", "{}")
    assert sorted(remove_partial_writes(tmp_path)) == sorted(torn)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in torn)
    assert (tmp_path / "real.json").read_text() == "{}"
