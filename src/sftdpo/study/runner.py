"""Runs a study's cells with the training engine, recording each in the store.

Each cell trains in DIR/runs/<key>/ with resume on, so a cell killed mid-way continues where
its last saved state left off; a finished cell is never rerun. A failed cell is recorded with
its error and the grid goes on. One process per study directory (a lock file says so).
"""

from __future__ import annotations

import fcntl
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


def run_cell(cell: Cell, study_dir: Path, data_root: Path, progress: bool, report_to: str | None = None) -> dict:
    """Train and evaluate one cell in its run directory (resuming it if it was started)."""
    from ..regimes import train

    run_dir = study_dir / "runs" / cell.key
    set_aside_stale_run(run_dir, cell)
    return train(cell.config, run_dir, data_root, resume=True, progress=progress, save_every=50,
                 report_to=report_to)


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
              cell_runner: Callable[[Cell, Path, Path, bool], dict] = run_cell) -> Store:
    """Expand the grid, sync it into the store, and run every unfinished cell in order."""
    study_dir = Path(study_dir)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create study directory {study_dir}: {e.strerror}") from None
    cells = expand(spec)
    with StudyLock(study_dir):
        atomic_write_text(study_dir / "study.yaml", yaml.safe_dump(to_dict(spec), sort_keys=False))
        store = Store(study_dir / "study.sqlite")
        changes = store.sync(cells)
        log.info("study %s: %d cells (%d new, %d changed)", spec.name, len(cells), changes["added"],
                 changes["changed"])
        todo = [c for c in cells if store.rows([c.key])[0].status != "done"]
        for done_before, cell in enumerate(todo, start=len(cells) - len(todo)):
            store.mark_running(cell.key)
            start = time.perf_counter()
            try:
                metrics = cell_runner(cell, study_dir, data_root, progress)
                curve = read_jsonl(study_dir / "runs" / cell.key / "curve.jsonl")
                store.mark_done(cell.key, metrics, curve)
                result = CellResult(cell.key, "done", summary_of(metrics), time.perf_counter() - start)
            except KeyboardInterrupt:
                raise
            except SftdpoError as e:
                if e.exit_code == 130:  # Ctrl-C inside the loop: saved, stop the study
                    raise
                store.mark_failed(cell.key, str(e))
                result = CellResult(cell.key, "failed", str(e), time.perf_counter() - start)
            except Exception as e:  # a bug in one cell must not stop the grid; the store keeps the trace
                store.mark_failed(cell.key, "".join(traceback.format_exception(e))[-4000:])
                result = CellResult(cell.key, "failed", f"{type(e).__name__}: {e}", time.perf_counter() - start)
            if on_result:
                on_result(result, done_before + 1, len(cells))
        return store
