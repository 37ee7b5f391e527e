"""`sftdpo study --executor ray` (sftdpo.study.executors): cells as Ray tasks on a local Ray instance
that the tests start (2 CPUs), outcomes recorded by the driver alone, failures recorded, reruns
skipping finished cells; and the one-line errors when Ray is missing or options do not apply.

The grid: the smoke preset cut to paraphrase x sft/dpo/sft-dpo x fft x one seed (3 cells), where
the dpo cell's run directory is taken by a file, so that cell fails in its worker until it is removed.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

import sftdpo.regimes
from sftdpo.cli import main
from sftdpo.errors import DataError, UsageError
from sftdpo.study.executors import LocalExecutor, RayExecutor, _check_reachable, make_executor

GRID = ["--preset", "smoke", "--quiet", "--set", "tasks=paraphrase", "--set", "regimes=sft,dpo,sft-dpo",
        "--set", "params=fft", "--set", "seeds=1"]
KEYS = ["paraphrase-sft-fft-s1", "paraphrase-dpo-fft-sigmoid-s1", "paraphrase-sft-dpo-fft-h0-sigmoid-s1"]
BLOCKED = KEYS[1]
"""Its run directory is taken by a plain file, so the cell fails in its worker with a one-line error."""


def read_store(study_dir: Path) -> dict[str, dict]:
    db = sqlite3.connect(f"file:{study_dir / 'study.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, status, attempts, metrics, error FROM cells ORDER BY position").fetchall()
    finally:
        db.close()
    return {k: {"status": s, "attempts": a, "metrics": json.loads(m) if m else None, "error": e}
            for k, s, a, m, e in rows}


@pytest.fixture(scope="module")
def ray_instance(tiny_backbone: Path):
    """A local Ray instance for this module; its workers inherit $SFTDPO_CACHE_DIR (the tiny backbone)."""
    import ray  # installed with the dev extra

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def no_training_here(monkeypatch):
    """Training in the test (driver) process fails the test: every cell must run in a Ray worker."""
    def train_in_driver(*args, **kwargs):
        raise AssertionError("a cell trained in the driver process, not in a Ray worker")

    monkeypatch.setattr(sftdpo.regimes, "train", train_in_driver)
    monkeypatch.setattr("sftdpo.report.build_report", lambda folder: Path(folder) / "report.md", raising=False)


def study(out: Path, data_root: Path, *extra: str, capsys) -> tuple[int, str, str]:
    rc = main(["study", *GRID, "--executor", "ray", "--out", str(out), "--data-dir", str(data_root), *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_ray_study_records_failures_and_reruns_only_unfinished_cells(ray_instance, no_training_here, tmp_path,
                                                                     data_root, capsys):
    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / BLOCKED).write_text("not a run directory")
    rc, printed, _ = study(out, data_root, capsys=capsys)
    assert rc == 1  # a cell failed
    first = read_store(out)
    assert list(first) == KEYS
    for key in KEYS:
        row = first[key]
        assert row["attempts"] == 1
        if key == BLOCKED:
            assert row["status"] == "failed" and row["metrics"] is None
            assert "cannot create run directory" in row["error"] and len(row["error"].splitlines()) == 1
            assert f"] {key}: failed cannot create run directory" in printed
        else:
            assert row["status"] == "done", row["error"]
            assert "accuracy" in row["metrics"]["test"] and (out / "runs" / key / "metrics.json").exists()
            assert f"] {key}: done accuracy " in printed
    assert sorted(line.split("]")[0] for line in printed.splitlines() if line.startswith("[")) == \
        ["[1/3", "[2/3", "[3/3"]
    assert f"study smoke in {out}: 2 done, 1 failed" in printed

    # again, still blocked: the done cells are skipped, the failed one is tried again
    rc, printed, _ = study(out, data_root, capsys=capsys)
    assert rc == 1
    second = read_store(out)
    assert [line.split()[1].rstrip(":") for line in printed.splitlines() if line.startswith("[")] == [BLOCKED]
    assert {k: r["attempts"] for k, r in second.items()} == {KEYS[0]: 1, BLOCKED: 2, KEYS[2]: 1}
    assert all(second[k] == first[k] for k in KEYS if k != BLOCKED)

    # unblocked: only that cell runs, and the study is complete
    (out / "runs" / BLOCKED).unlink()
    rc, printed, _ = study(out, data_root, capsys=capsys)
    assert rc == 0, printed
    third = read_store(out)
    assert [line.split()[1].rstrip(":") for line in printed.splitlines() if line.startswith("[")] == [BLOCKED]
    assert all(row["status"] == "done" for row in third.values())
    assert {k: r["attempts"] for k, r in third.items()} == {KEYS[0]: 1, BLOCKED: 3, KEYS[2]: 1}
    assert all(third[k] == first[k] for k in KEYS if k != BLOCKED)
    assert f"study smoke in {out}: 3 done" in printed


def test_ray_executor_uses_the_running_instance_and_cluster_resources(ray_instance):
    executor = RayExecutor(cpus_per_cell=1)
    executor.start()
    assert not executor.started_ray  # the test's instance, left running
    assert executor.gpus_per_cell == 0.0 and executor.capacity() == 2
    assert RayExecutor(cpus_per_cell=0.5).capacity() == 4
    assert RayExecutor(cpus_per_cell=4).capacity() == 1  # never below one cell
    executor.close()
    assert ray_instance.is_initialized()


def test_missing_ray_is_one_line(monkeypatch, tmp_path, data_root, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["study", *GRID, "--executor", "ray", "--out", str(tmp_path / "s"), "--data-dir", str(data_root)])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("sftdpo: error: --executor ray needs Ray") and 'pip install -e ".[ray]"' in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("extra, match", [
    (["--cpus-per-cell", "2"], "--cpus-per-cell apply to --executor ray only"),
    (["--ray-address", "auto", "--gpus-per-cell", "1"], "--ray-address, --gpus-per-cell apply to --executor ray"),
    (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell must be positive"),
])
def test_executor_options_that_do_not_apply(extra, match, tmp_path, data_root, capsys):
    rc = main(["study", *GRID, "--out", str(tmp_path / "s"), "--data-dir", str(data_root), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("sftdpo: error:") and match in err, err
    assert not (tmp_path / "s").exists()


def test_make_executor():
    assert isinstance(make_executor("local"), LocalExecutor)


def test_an_address_nobody_answers_fails_at_once():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(DataError, match="no Ray cluster answers"):
        _check_reachable(f"ray://127.0.0.1:{port}", timeout=2)
    with pytest.raises(UsageError, match="expected auto, HOST:PORT"):
        _check_reachable("somewhere")
