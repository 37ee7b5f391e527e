"""The study runner (sftdpo.study.runner, `sftdpo study`): every cell once, failures recorded,
reruns that run only what is unfinished, the study lock, the smoke preset end to end, and a
study SIGKILLed mid-grid that resumes to exactly the results of an uninterrupted one.

The real studies use the smoke preset with one seed (12 cells, tiny backbone, the full data
directory; ~40 s each on one core). The uninterrupted reference runs once per module, in-process
through `sftdpo.cli.main`; the killed one runs as `python -m sftdpo.cli` subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import without_timing
from safetensors.torch import load_file

import sftdpo.loop
import sftdpo.regimes
from sftdpo.cli import main
from sftdpo.errors import UsageError
from sftdpo.io import read_jsonl
from sftdpo.loop import Interrupted
from sftdpo.study.grid import expand, load_spec
from sftdpo.study.runner import StudyLock, run_study, summary_of
from sftdpo.study.store import Store

SMOKE_ARGS = ["--preset", "smoke", "--quiet", "--set", "seeds=1"]
SMOKE_CELLS = 12
KILL_SEED = int(os.environ.get("SFTDPO_TEST_KILL_SEED", "20240611"))
"""Seeds the moment the kill test SIGKILLs the study (after 3..8 finished cells, plus 0..2 s)."""


def read_store(study_dir: Path) -> dict[str, dict]:
    """key -> {status, attempts, metrics, curve, error}, read through a read-only connection."""
    db = sqlite3.connect(f"file:{study_dir / 'study.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT key, status, attempts, metrics, curve, error FROM cells ORDER BY position").fetchall()
    finally:
        db.close()
    return {k: {"status": s, "attempts": a, "metrics": json.loads(m) if m else None,
                "curve": json.loads(c) if c else None, "error": e} for k, s, a, m, c, e in rows}


def log_keys(run_dir: Path) -> Counter:
    return Counter((r["stage"], r["step"]) for r in read_jsonl(run_dir / "log.jsonl"))


# ---- with a fake cell runner --------------------------------------------------------------------

class FakeRunner:
    """A fast cell_runner: records calls; raises for the keys in `fail`."""

    def __init__(self, fail: dict[str, BaseException] | None = None):
        self.calls: list[str] = []
        self.fail = fail or {}

    def __call__(self, cell, study_dir: Path, data_root: Path, progress: bool) -> dict:
        self.calls.append(cell.key)
        if cell.key in self.fail:
            raise self.fail[cell.key]
        return {"test": {"accuracy": 0.5 + 0.001 * cell.config.seed}, "train_seconds": 1.0}


@pytest.fixture
def spec():
    return load_spec("smoke")


def test_every_cell_runs_once(tmp_path, spec):
    runner, seen = FakeRunner(), []
    store = run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=runner,
                      on_result=lambda result, done, total: seen.append((result.key, result.status, done, total)))
    keys = [c.key for c in expand(spec)]
    assert runner.calls == keys
    assert seen == [(k, "done", i, 24) for i, k in enumerate(keys, start=1)]
    assert store.counts() == {"pending": 0, "running": 0, "done": 24, "failed": 0}
    rows = store.rows()
    assert all(r.attempts == 1 and r.metrics["train_seconds"] == 1.0 and r.curve == [] for r in rows)
    assert rows[0].metrics["test"]["accuracy"] == pytest.approx(0.5 + 0.001 * rows[0].axes["seed"])
    assert (tmp_path / "study" / "study.sqlite").exists()


def test_study_yaml_reloads_to_the_same_grid(tmp_path, spec):
    run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=FakeRunner())
    again = load_spec(file=tmp_path / "study" / "study.yaml")
    assert again == spec
    assert [c.config_hash for c in expand(again)] == [c.config_hash for c in expand(spec)]


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, spec):
    keys = [c.key for c in expand(spec)]
    bad, usage = keys[4], keys[9]
    runner = FakeRunner({bad: RuntimeError("boom in the step"), usage: UsageError("bad value for the cell")})
    results = {}
    store = run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=runner,
                      on_result=lambda result, done, total: results.__setitem__(result.key, result))
    assert runner.calls == keys
    assert store.counts() == {"pending": 0, "running": 0, "done": 22, "failed": 2}
    rows = {r.key: r for r in store.rows()}
    assert rows[bad].status == "failed" and rows[bad].metrics is None
    assert "RuntimeError: boom in the step" in rows[bad].error
    assert "Traceback" in rows[bad].error  # a bug keeps its trace
    assert rows[usage].error == "bad value for the cell"  # a user error keeps its one line
    assert results[bad].status == "failed" and results[bad].summary == "RuntimeError: boom in the step"
    assert all(rows[k].status == "done" for k in keys if k not in (bad, usage))


def test_rerun_runs_only_unfinished_and_failed_cells(tmp_path, spec):
    keys = [c.key for c in expand(spec)]
    run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=FakeRunner({keys[3]: RuntimeError("x")}))
    again = FakeRunner()
    store = run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=again)
    assert again.calls == [keys[3]]
    assert store.counts()["done"] == 24
    rows = {r.key: r for r in store.rows()}
    assert rows[keys[3]].attempts == 2 and rows[keys[3]].error is None
    assert all(rows[k].attempts == 1 for k in keys if k != keys[3])
    third = FakeRunner()
    run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=third)
    assert third.calls == []


def test_an_interrupted_study_resumes_the_running_cell(tmp_path, spec):
    """Ctrl-C (Interrupted, exit code 130) stops the study and leaves the cell to resume next time."""
    keys = [c.key for c in expand(spec)]
    with pytest.raises(Interrupted):
        run_study(spec, tmp_path / "study", tmp_path, progress=False,
                  cell_runner=FakeRunner({keys[5]: Interrupted("stopped")}))
    rows = {r.key: r for r in Store(tmp_path / "study" / "study.sqlite").rows()}
    assert [rows[k].status for k in keys[:6]] == ["done"] * 5 + ["running"]
    again = FakeRunner()
    store = run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=again)
    assert again.calls == keys[5:]
    assert store.rows([keys[5]])[0].attempts == 2


def test_adding_a_seed_runs_only_the_new_cells(tmp_path):
    one = load_spec("smoke", overrides=["seeds=1"])
    run_study(one, tmp_path / "study", tmp_path, progress=False, cell_runner=FakeRunner())
    two = load_spec("smoke", overrides=["seeds=1,2"])
    runner = FakeRunner()
    store = run_study(two, tmp_path / "study", tmp_path, progress=False, cell_runner=runner)
    assert runner.calls == [c.key for c in expand(two) if c.config.seed == 2]
    assert len(runner.calls) == 12
    assert store.counts()["done"] == 24
    assert [r.key for r in store.rows()] == [c.key for c in expand(two)]


def test_a_changed_base_value_reruns_only_the_changed_cells(tmp_path, spec):
    run_study(spec, tmp_path / "study", tmp_path, progress=False, cell_runner=FakeRunner())
    changed = load_spec("smoke", overrides=["base.sonnet.sft.lr=0.002"])
    runner = FakeRunner()
    store = run_study(changed, tmp_path / "study", tmp_path, progress=False, cell_runner=runner)
    assert runner.calls == [c.key for c in expand(changed) if c.key.startswith("sonnet-")]
    assert all(r.attempts == (2 if r.key.startswith("sonnet-") else 1) for r in store.rows())


def test_study_lock(tmp_path, spec):
    folder = tmp_path / "study"
    folder.mkdir()
    with StudyLock(folder):
        assert (folder / ".lock").read_text() == str(os.getpid())
        with pytest.raises(UsageError, match="another `sftdpo study` is running"):
            with StudyLock(folder):
                pass
        with pytest.raises(UsageError, match="another `sftdpo study` is running"):
            run_study(spec, folder, tmp_path, progress=False, cell_runner=FakeRunner())
    with StudyLock(folder):  # released
        pass
    runner = FakeRunner()
    run_study(spec, folder, tmp_path, progress=False, cell_runner=runner)
    assert len(runner.calls) == 24


def test_study_lock_is_held_across_processes(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    code = ("import sys, time; from pathlib import Path; from sftdpo.study.runner import StudyLock\n"
            "with StudyLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError):
            with StudyLock(folder):
                pass
    finally:
        proc.kill()
        proc.wait()
    with StudyLock(folder):  # a killed holder leaves no stale lock
        pass


def test_summary_of():
    assert summary_of({"test": {"accuracy": 0.5, "f1": 0.25, "n": 3}, "train_seconds": 2.0}) == \
        "accuracy 0.5000, f1 0.2500 (2 s)"
    assert summary_of({"test": {"chrf": 36.1, "nll": 5.9}}) == "chrf 36.1000, nll 5.9000 (0 s)"


def test_cli_study_exit_code_and_status_with_a_failing_cell(tmp_path, monkeypatch, capsys):
    """`sftdpo study` exits 1 when a cell failed; `study status` shows the error's last line."""
    def fake_train(cfg, run_dir, data_root, resume=False, progress=True, save_every=0, report_to=None,
                   stage_cache=None):
        assert resume and not progress and save_every == 50
        if run_dir.name == "sonnet-dpo-fft-shuffled-sigmoid-s1":
            raise RuntimeError("the sonnet dpo cell broke")
        test = {"accuracy": 0.5, "f1": 0.25} if cfg.task == "paraphrase" else {"chrf": 30.0, "nll": 6.0}
        return {"task": cfg.task, "regime": cfg.regime, "params": cfg.params, "seed": cfg.seed, "test": test,
                "train_seconds": 1.0}

    monkeypatch.setattr(sftdpo.regimes, "train", fake_train)
    # the report has its own tests; here it would only read the fake metrics
    monkeypatch.setattr("sftdpo.report.build_report", lambda folder: Path(folder) / "report.md", raising=False)
    out = tmp_path / "study"
    assert main(["study", *SMOKE_ARGS, "--out", str(out), "--data-dir", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "[9/12] sonnet-dpo-fft-shuffled-sigmoid-s1: failed RuntimeError: the sonnet dpo cell broke" in printed
    assert f"study smoke in {out}: 11 done, 1 failed" in printed.splitlines()
    assert main(["study", "status", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 13
    assert lines[8].split()[:2] == ["failed", "sonnet-dpo-fft-shuffled-sigmoid-s1"]
    assert lines[8].endswith("RuntimeError: the sonnet dpo cell broke")
    assert lines[0].startswith("done     paraphrase-sft-fft-s1  accuracy 0.5000")
    assert lines[-1] == "0 pending, 0 running, 11 done, 1 failed"


def test_cli_study_usage_errors(tmp_path, capsys):
    assert main(["study", "status", str(tmp_path)]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert main(["study", "status"]) == 2
    assert main(["study", "--preset", "smoke", "--set", "seedz=1", "--out", str(tmp_path / "s")]) == 2
    assert "seedz" in capsys.readouterr().err
    assert main(["study", "--preset", "smoke", "--config", str(tmp_path / "x.yaml")]) == 2
    assert "either --preset" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ---- with the real training engine --------------------------------------------------------------

def one_cell_spec(task: str, regime: str, *more: str):
    return load_spec("smoke", overrides=[f"tasks={task}", f"regimes={regime}", "params=fft", "seeds=1", *more])


class Killed(BaseException):
    """Stands for a SIGKILL: nothing catches it, nothing is cleaned up."""


def test_a_cell_killed_before_its_first_saved_state_keeps_its_log_rows_once(tmp_path, data_root, tiny_backbone,
                                                                            monkeypatch):
    """Killed after its optimizer steps but before the stage saved any state (save_every=50, 2 steps),
    the cell starts its stage again; log.jsonl must not then hold each step twice."""
    spec = one_cell_spec("sonnet", "sft")
    (key,) = [c.key for c in expand(spec)]

    def killed(self, state):
        raise Killed

    with monkeypatch.context() as mp:
        mp.setattr(sftdpo.loop.Loop, "_end_epoch", killed)
        with pytest.raises(Killed):
            run_study(spec, tmp_path / "study", data_root, progress=False)
    run_dir = tmp_path / "study" / "runs" / key
    assert log_keys(run_dir) == {("sft", 1): 1, ("sft", 2): 1}
    store = run_study(spec, tmp_path / "study", data_root, progress=False)
    assert store.rows()[0].status == "done" and store.rows()[0].attempts == 2
    assert sorted(log_keys(run_dir).items()) == [(("sft", 1), 1), (("sft", 2), 1)]


def test_a_changed_cell_reruns_with_its_new_config(tmp_path, data_root, tiny_backbone):
    spec = one_cell_spec("sonnet", "sft")
    store = run_study(spec, tmp_path / "study", data_root, progress=False)
    assert store.counts()["done"] == 1
    changed = one_cell_spec("sonnet", "sft", "base.sonnet.sft.lr=0.002")
    store = run_study(changed, tmp_path / "study", data_root, progress=False)
    row = store.rows()[0]
    assert row.status == "done", row.error
    assert row.config["sft"]["lr"] == 0.002


def test_a_cell_killed_while_caching_reference_log_probs_resumes(tmp_path, data_root, tiny_backbone, monkeypatch):
    spec = one_cell_spec("sonnet", "dpo")
    real_save = sftdpo.regimes.save_file

    def torn_save(tensors, path, *args, **kwargs):
        real_save(tensors, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # the process dies half-way through the write
        raise Killed

    with monkeypatch.context() as mp:
        mp.setattr(sftdpo.regimes, "save_file", torn_save)
        with contextlib.suppress(Killed):  # a fixed engine may not call save_file at all
            run_study(spec, tmp_path / "study", data_root, progress=False)
    row = run_study(spec, tmp_path / "study", data_root, progress=False).rows()[0]
    assert row.status == "done", row.error


def run_cli_study(out: Path, data_root: Path) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["study", *SMOKE_ARGS, "--out", str(out), "--data-dir", str(data_root)])
    return rc, stdout.getvalue()


@pytest.fixture(scope="module")
def reference_study(tmp_path_factory, data_root: Path, tiny_backbone: Path) -> tuple[Path, int, str]:
    """The smoke preset with one seed, uninterrupted, through `sftdpo.cli.main`: (dir, exit code, stdout)."""
    out = tmp_path_factory.mktemp("reference") / "study"
    rc, printed = run_cli_study(out, data_root)
    return out, rc, printed


def test_smoke_study_end_to_end(reference_study, capsys):
    out, rc, printed = reference_study
    assert rc == 0, printed
    keys = [c.key for c in expand(load_spec("smoke", overrides=["seeds=1"]))]
    assert len(keys) == SMOKE_CELLS
    for i, key in enumerate(keys, start=1):
        assert f"[{i}/12] {key}: done " in printed
    assert f"study smoke in {out}: 12 done" in printed.splitlines()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(keys)
    stored = read_store(out)
    for key in keys:
        run_dir = out / "runs" / key
        assert (run_dir / "metrics.json").exists() and (run_dir / "checkpoint").is_dir()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert stored[key]["status"] == "done" and stored[key]["attempts"] == 1
        assert stored[key]["metrics"] == metrics
        assert stored[key]["curve"] == read_jsonl(run_dir / "curve.jsonl") != []
        test = metrics["test"]
        assert ("accuracy" in test) if key.startswith("paraphrase") else ("chrf" in test)
        assert max(log_keys(run_dir).values()) == 1
    assert (out / "study.yaml").exists()
    assert main(["study", "status", str(out)]) == 0
    status = capsys.readouterr().out
    lines = status.strip().splitlines()
    for key, line in zip(keys, lines):
        assert line.split()[:2] == ["done", key]
    assert "12 done" in lines[-1]


def test_a_finished_study_reruns_nothing(reference_study, data_root):
    out, _, _ = reference_study
    before = read_store(out)
    runner = FakeRunner()
    store = run_study(load_spec("smoke", overrides=["seeds=1"]), out, data_root, progress=False, cell_runner=runner)
    assert runner.calls == []
    assert read_store(out) == before
    store.close()


def wait_for_done(proc: subprocess.Popen, db: Path, want: int, stderr: Path, timeout: float = 240) -> int:
    """Poll the store read-only until `want` cells are done; returns the count seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the study ended (exit {proc.returncode}) before {want} cells were done:\n"
                        f"{stderr.read_text()[-3000:]}")
        if db.exists():
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                try:
                    done = conn.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
                finally:
                    conn.close()
                if done >= want:
                    return done
            except sqlite3.OperationalError:  # not created yet, or the schema is being written
                pass
        time.sleep(0.05)
    pytest.fail(f"fewer than {want} cells done after {timeout} s")


def kill_study_after(command: list[str], env: dict, out: Path, cells: int, delay: float, stderr: Path) -> int:
    """Start `command` (a study into `out`), SIGKILL it `delay` s after `cells` cells are done; the
    number done when the wait ended. Fails if the study ended before the kill."""
    with open(stderr, "w") as err:  # a file, not a pipe nobody reads while we poll
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            done = wait_for_done(proc, out / "study.sqlite", cells, stderr)
            time.sleep(delay)
            still_running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert still_running and proc.returncode == -signal.SIGKILL, "the study finished before the kill"
    return done


@pytest.fixture(scope="module")
def killed_study(tmp_path_factory, data_root: Path, tiny_backbone: Path) -> dict:
    """`python -m sftdpo.cli study ...` SIGKILLed at a seeded random moment mid-grid, then rerun to the end."""
    out = tmp_path_factory.mktemp("killed") / "study"
    command = [sys.executable, "-m", "sftdpo.cli", "study", *SMOKE_ARGS, "--out", str(out),
               "--data-dir", str(data_root)]
    env = {**os.environ, "SFTDPO_CACHE_DIR": os.environ["SFTDPO_CACHE_DIR"], "OMP_NUM_THREADS": "1"}
    rng = random.Random(KILL_SEED)
    after_cells, delay = rng.randint(3, 8), rng.uniform(0.0, 2.0)
    kill_study_after(command, env, out, after_cells, delay, out.parent / "first.stderr")
    at_kill = read_store(out)
    running = [k for k, r in at_kill.items() if r["status"] == "running"]
    print(f"kill seed {KILL_SEED}: killed after {after_cells} done cells + {delay:.2f} s, running: {running}, "
          f"its files: {sorted(p.name for p in (out / 'runs' / running[0]).rglob('*'))[:40] if running else '-'}")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    return {"out": out, "at_kill": at_kill, "rerun": rerun, "after_cells": after_cells, "delay": delay}


def test_killed_study_finishes_every_cell_exactly_once(killed_study):
    out, at_kill, rerun = killed_study["out"], killed_study["at_kill"], killed_study["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"study smoke in {out}: 12 done" in rerun.stdout.splitlines()
    done_at_kill = [k for k, r in at_kill.items() if r["status"] == "done"]
    running_at_kill = [k for k, r in at_kill.items() if r["status"] == "running"]
    assert len(done_at_kill) >= killed_study["after_cells"] and len(done_at_kill) < SMOKE_CELLS
    assert len(running_at_kill) <= 1
    # the rerun trains only the cells not done before the kill
    rerun_keys = [line.split()[1].rstrip(":") for line in rerun.stdout.splitlines() if line.startswith("[")]
    assert rerun_keys == [k for k in at_kill if k not in done_at_kill]
    final = read_store(out)
    assert list(final) == list(at_kill) and len(final) == SMOKE_CELLS
    for key, row in final.items():
        assert row["status"] == "done", (key, row["error"])
        assert (out / "runs" / key / "metrics.json").exists()
        assert row["attempts"] == (2 if key in running_at_kill else 1), key
        if key in done_at_kill:  # finished cells are never touched again
            assert row["metrics"] == at_kill[key]["metrics"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(final)


def test_killed_study_logs_each_step_once(killed_study):
    out = killed_study["out"]
    repeated = {}
    for key in read_store(out):
        counts = log_keys(out / "runs" / key)
        assert counts, key
        twice = sorted(k for k, n in counts.items() if n > 1)
        if twice:
            repeated[key] = twice
    assert repeated == {}


def test_killed_study_equals_an_uninterrupted_one(killed_study, reference_study):
    out, reference = killed_study["out"], reference_study[0]
    assert reference_study[1] == 0
    got, want = read_store(out), read_store(reference)
    assert list(got) == list(want)
    for key in want:
        assert without_timing(got[key]["metrics"]) == without_timing(want[key]["metrics"]), key
        assert without_timing(got[key]["curve"]) == without_timing(want[key]["curve"]), key
        # and step by step: the same loss at every (stage, step) of the training log
        got_log = {(r["stage"], r["step"]): without_timing(r) for r in read_jsonl(out / "runs" / key / "log.jsonl")}
        want_log = {(r["stage"], r["step"]): without_timing(r)
                    for r in read_jsonl(reference / "runs" / key / "log.jsonl")}
        assert got_log == want_log, key


def _metric_sections(report: str) -> str:
    """The report without its timing-dependent parts (Q4 and the cost table)."""
    head, _, rest = report.partition("### Q4.")
    _, _, after_q4 = rest.partition("### Q5.")
    return head + after_q4.split("## Cost per run")[0]


def test_smoke_study_writes_a_full_report(reference_study):
    out = reference_study[0]
    report = (out / "report.md").read_text()
    for section in ["## Answers", *(f"### Q{i}." for i in range(1, 8)), "## paraphrase: test metrics",
                    "## sonnet: test metrics", "## Cost per run", "Anchors: majority class",
                    "random training sonnet", "LoRA / FFT ratios"]:
        assert section in report, section
    assert "**reproduced**" in report or "**inconclusive**" in report or "**contradicted**" in report
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} >= {"paraphrase_by_condition.png", "sonnet_by_condition.png",
                                      "paraphrase_dev_curves.png", "sonnet_dpo_rewards.png"}
    assert all(p.stat().st_size > 5_000 for p in pngs)
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + SMOKE_CELLS


def test_killed_study_report_equals_the_uninterrupted_one(killed_study, reference_study):
    killed = (killed_study["out"] / "report.md").read_text()
    reference = (reference_study[0] / "report.md").read_text()
    assert _metric_sections(killed).split("\n", 1)[1] == _metric_sections(reference).split("\n", 1)[1]


def test_study_killed_three_times_at_seeded_moments_ends_like_an_uninterrupted_one(
        tmp_path, data_root: Path, tiny_backbone: Path, reference_study):
    """SIGKILL `study` at 3 seeded moments (each after some more cells, plus a random delay into the
    next one), rerun each time; then: every file loads, every cell done once, the same metrics."""
    out = tmp_path / "study"
    command = [sys.executable, "-m", "sftdpo.cli", "study", *SMOKE_ARGS, "--out", str(out),
               "--data-dir", str(data_root)]
    env = {**os.environ, "SFTDPO_CACHE_DIR": os.environ["SFTDPO_CACHE_DIR"], "OMP_NUM_THREADS": "1"}
    rng = random.Random(KILL_SEED + 1)
    done = 0
    for kill in range(3):
        want, delay = min(done + rng.randint(1, 3), SMOKE_CELLS - 1), rng.uniform(0.0, 1.5)
        done = kill_study_after(command, env, out, want, delay, tmp_path / f"kill{kill}.stderr")
        for path in out.rglob("*.json"):  # every file a kill can leave must still load
            json.loads(path.read_text())
        for path in out.rglob("*.safetensors"):
            load_file(str(path))
    final_run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert final_run.returncode == 0, final_run.stderr[-3000:]
    got, want_rows = read_store(out), read_store(reference_study[0])
    assert list(got) == list(want_rows)
    for key, row in got.items():
        assert row["status"] == "done" and 1 <= row["attempts"] <= 4, (key, row)
        assert without_timing(row["metrics"]) == without_timing(want_rows[key]["metrics"]), key
        steps = [(r["stage"], r["step"]) for r in read_jsonl(out / "runs" / key / "log.jsonl")]
        assert len(steps) == len(set(steps)), key  # no step logged twice
