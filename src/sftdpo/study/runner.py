"""Runs a study's cells with the training engine, recording each in the store.

Each cell trains in DIR/runs/<key>/ with resume on, so a cell killed mid-way continues where
its last saved state left off; a finished cell is never rerun. A failed cell is recorded with
its error and the grid goes on. One process per study directory (a lock file says so). An
sft-dpo cell copies the SFT stage of the same seed's sft cell when that one is done (DIR/stage-cache
announces finished SFT stages): the same result for a quarter less training.

Cells run through an executor (study/executors.py): one after another in this process, or as
Ray tasks; either way the outcomes come back here and only this process writes the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import to_dict
from ..errors import SftdpoError, UsageError
from ..io import atomic_write_text, read_jsonl
from .executors import CellOutcome, LocalExecutor
from .grid import Cell, StudySpec, expand
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellResult:
    """What a finished cell reports to the progress line."""

    key: str
    status: str
    summary: str
    seconds: float


class StudyLock:
    """An exclusive lock on DIR/.lock for the lifetime of a study run."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UsageError(f"another `sftdpo study` is running on {self.path.parent}; wait for it to finish "
                             "or use another --out") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        return False


def summary_of(metrics: dict) -> str:
    """A one-line result: the test metrics that matter and the training time."""
    test = metrics.get("test", {})
    keys = [k for k in ("accuracy", "f1", "chrf", "nll") if k in test]
    return ", ".join(f"{k} {test[k]:.4f}" for k in keys) + f" ({metrics.get('train_seconds', 0):.0f} s)"


def run_cell(cell: Cell, study_dir: Path, data_root: Path, progress: bool, report_to: str | None = None,
             mixed_precision: str | None = None) -> dict:
    """Train and evaluate one cell in its run directory (resuming it if it was started)."""
    from ..regimes import train

    run_dir = study_dir / "runs" / cell.key
    set_aside_stale_run(run_dir, cell)
    extra = {"mixed_precision": mixed_precision} if mixed_precision else {}
    return train(cell.config, run_dir, data_root, resume=True, progress=progress, save_every=50,
                 report_to=report_to, stage_cache=study_dir / "stage-cache", **extra)


def execute_cell(cell_runner: Callable[[Cell, Path, Path, bool], dict], cell: Cell, study_dir: Path,
                 data_root: Path, progress: bool) -> CellOutcome:
    """Run one cell and turn what happened into an outcome (wherever it runs: here or a Ray worker).

    A user error keeps its one line; a bug keeps its traceback. Ctrl-C (KeyboardInterrupt, or the
    loop's Interrupted, exit code 130) is not an outcome: it propagates and stops the study.
    """
    start = time.perf_counter()
    try:
        metrics = cell_runner(cell, study_dir, data_root, progress)
        curve = read_jsonl(study_dir / "runs" / cell.key / "curve.jsonl")
        return CellOutcome("done", summary_of(metrics), time.perf_counter() - start, metrics=metrics, curve=curve)
    except KeyboardInterrupt:
        raise
    except SftdpoError as e:
        if e.exit_code == 130:  # Ctrl-C inside the loop: saved, stop the study
            raise
        return CellOutcome("failed", str(e), time.perf_counter() - start, error=str(e))
    except Exception as e:  # a bug in one cell must not stop the grid; the store keeps the trace
        return CellOutcome("failed", f"{type(e).__name__}: {e}", time.perf_counter() - start,
                           error="".join(traceback.format_exception(e))[-4000:])


def set_aside_stale_run(run_dir: Path, cell: Cell) -> None:
    """A run dir left by an earlier config of this cell is renamed <key>.old-<hash>, not resumed."""
    from ..regimes import saved_config
    from .grid import config_hash

    old = saved_config(run_dir)
    if old is None:
        return
    old_hash = config_hash(old)
    if old_hash != cell.config_hash:
        target = run_dir.with_name(f"{run_dir.name}.old-{old_hash}")
        shutil.rmtree(target, ignore_errors=True)
        run_dir.rename(target)
        log.info("%s: config changed; the old run is kept in %s", cell.key, target)


def run_study(spec: StudySpec, study_dir: Path, data_root: Path, progress: bool = True,
              on_result: Callable[[CellResult, int, int], None] | None = None,
              cell_runner: Callable[[Cell, Path, Path, bool], dict] = run_cell, executor=None) -> Store:
    """Expand the grid, sync it into the store, and run every unfinished cell through `executor`
    (default: in this process, in grid order); outcomes are recorded as they come back."""
    study_dir = Path(study_dir).absolute()
    data_root = Path(data_root).absolute()
    executor = executor or LocalExecutor()
    cells = expand(spec)
    executor.start()  # a cluster that cannot be reached fails here, before anything is written
    try:
        return _run_cells(spec, cells, study_dir, data_root, progress, on_result, cell_runner, executor)
    finally:
        executor.close()


def _run_cells(spec: StudySpec, cells: list[Cell], study_dir: Path, data_root: Path, progress: bool,
               on_result, cell_runner, executor) -> Store:
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create study directory {study_dir}: {e.strerror}") from None
    with StudyLock(study_dir):
        atomic_write_text(study_dir / "study.yaml", yaml.safe_dump(to_dict(spec), sort_keys=False))
        store = Store(study_dir / "study.sqlite")
        changes = store.sync(cells)
        log.info("study %s: %d cells (%d new, %d changed)", spec.name, len(cells), changes["added"],
                 changes["changed"])
        todo = [c for c in cells if store.rows([c.key])[0].status != "done"]
        execute = functools.partial(execute_cell, cell_runner, study_dir=study_dir, data_root=data_root,
                                    progress=progress)
        started = lambda cell: store.mark_running(cell.key)  # noqa: E731
        with contextlib.closing(executor.map(todo, execute, started=started)) as outcomes:
            for done, (cell, outcome) in enumerate(outcomes, start=len(cells) - len(todo) + 1):
                if outcome.status == "done":
                    store.mark_done(cell.key, outcome.metrics, outcome.curve)
                else:
                    store.mark_failed(cell.key, outcome.error)
                if on_result:
                    on_result(CellResult(cell.key, outcome.status, outcome.summary, outcome.seconds), done,
                              len(cells))
        return store
