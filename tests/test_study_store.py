"""The results store (sftdpo.study.store): syncing a grid into SQLite, cell states, attempts,
grid order, WAL mode, counts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sftdpo.study.grid import expand, load_spec
from sftdpo.study.store import STATES, Store


@pytest.fixture(scope="module")
def cells() -> list:
    return expand(load_spec("smoke"))


@pytest.fixture(scope="module")
def changed_cells() -> list:
    """The smoke grid with a sonnet base value changed: the 12 sonnet cells change hash."""
    return expand(load_spec("smoke", overrides=["base.sonnet.sft.epochs=2"]))


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "study.sqlite")
    yield s
    s.close()


def status(store: Store) -> dict[str, str]:
    return {r.key: r.status for r in store.rows()}


def finish(store: Store, key: str, accuracy: float = 0.5) -> None:
    store.mark_running(key)
    store.mark_done(key, {"test": {"accuracy": accuracy}}, [{"epoch": 0, "accuracy": accuracy}])


def test_sync_adds_every_cell_pending(store, cells):
    assert store.sync(cells) == {"added": 24, "changed": 0}
    rows = store.rows()
    assert [r.key for r in rows] == [c.key for c in cells]
    assert all(r.status == "pending" and r.attempts == 0 and r.metrics is None for r in rows)
    first = rows[0]
    assert first.config_hash == cells[0].config_hash
    assert first.axes == cells[0].axes
    assert first.config["task"] == "paraphrase" and first.config["seed"] == cells[0].config.seed


def test_sync_is_idempotent_and_keeps_done(store, cells):
    store.sync(cells)
    finish(store, cells[3].key, 0.75)
    assert store.sync(cells) == {"added": 0, "changed": 0}
    row = store.rows([cells[3].key])[0]
    assert row.status == "done"
    assert row.metrics == {"test": {"accuracy": 0.75}}
    assert row.curve == [{"epoch": 0, "accuracy": 0.75}]
    assert row.attempts == 1


def test_sync_adds_only_new_cells(store, cells):
    store.sync(cells[:10])
    finish(store, cells[0].key)
    assert store.sync(cells) == {"added": 14, "changed": 0}
    assert status(store)[cells[0].key] == "done"
    assert store.counts() == {"pending": 23, "running": 0, "done": 1, "failed": 0}


def test_sync_resets_a_done_cell_whose_config_changed(store, cells, changed_cells):
    store.sync(cells)
    para, sonnet = cells[0].key, cells[-1].key
    finish(store, para)
    finish(store, sonnet)
    store.mark_running(cells[-2].key)
    store.mark_failed(cells[-2].key, "boom")
    assert store.sync(changed_cells) == {"added": 0, "changed": 12}
    new = {c.key: c.config_hash for c in changed_cells}
    rows = {r.key: r for r in store.rows()}
    assert rows[para].status == "done" and rows[para].metrics is not None
    assert rows[sonnet].status == "pending"
    assert rows[sonnet].metrics is None and rows[sonnet].curve is None
    assert rows[sonnet].config_hash == new[sonnet] != cells[-1].config_hash
    assert rows[sonnet].config["sft"]["epochs"] == 2
    assert rows[cells[-2].key].status == "pending" and rows[cells[-2].key].error is None


def test_sync_resets_running_to_pending(store, cells):
    """A cell left `running` by a killed process is pending at the next start."""
    store.sync(cells)
    store.mark_running(cells[5].key)
    assert status(store)[cells[5].key] == "running"
    store.sync(cells)
    row = store.rows([cells[5].key])[0]
    assert row.status == "pending"
    assert row.attempts == 1  # the killed attempt still counts


def test_sync_keeps_failed(store, cells):
    store.sync(cells)
    store.mark_running(cells[1].key)
    store.mark_failed(cells[1].key, "RuntimeError: boom")
    store.sync(cells)
    row = store.rows([cells[1].key])[0]
    assert (row.status, row.error) == ("failed", "RuntimeError: boom")


def test_mark_running_increments_attempts(store, cells):
    store.sync(cells)
    key = cells[2].key
    for attempt in (1, 2, 3):
        store.mark_running(key)
        row = store.rows([key])[0]
        assert (row.status, row.attempts) == ("running", attempt)
        assert row.started is not None
    store.mark_failed(key, "boom")
    store.mark_running(key)
    row = store.rows([key])[0]
    assert (row.status, row.attempts, row.error) == ("running", 4, None)  # a new attempt clears the error


def test_mark_done_and_failed(store, cells):
    store.sync(cells)
    a, b = cells[0].key, cells[1].key
    store.mark_running(a)
    store.mark_done(a, {"test": {"accuracy": 0.6}, "train_seconds": 1.0}, [{"step": 1}])
    store.mark_running(b)
    store.mark_failed(b, "Traceback ...\nRuntimeError: no")
    ra, rb = store.rows([a, b])
    assert (ra.status, ra.metrics, ra.curve, ra.error) == ("done", {"test": {"accuracy": 0.6}, "train_seconds": 1.0},
                                                           [{"step": 1}], None)
    assert ra.finished is not None and ra.finished >= ra.started
    assert (rb.status, rb.metrics, rb.error) == ("failed", None, "Traceback ...\nRuntimeError: no")
    assert rb.finished is not None


def test_rows_in_grid_order(store, cells):
    store.sync(cells)
    assert [r.position for r in store.rows()] == list(range(24))
    reordered = cells[12:] + cells[:12]
    store.sync(reordered)
    assert [r.key for r in store.rows()] == [c.key for c in reordered]
    subset = [cells[7].key, cells[2].key]
    assert [r.key for r in store.rows(subset)] == [cells[2].key, cells[7].key]  # grid order, not the asked order


def test_counts(store, cells):
    assert store.counts() == dict.fromkeys(STATES, 0)
    store.sync(cells)
    finish(store, cells[0].key)
    finish(store, cells[1].key)
    store.mark_running(cells[2].key)
    store.mark_failed(cells[2].key, "x")
    store.mark_running(cells[3].key)
    assert store.counts() == {"pending": 20, "running": 1, "done": 2, "failed": 1}
    assert list(store.counts()) == list(STATES)
    assert store.counts([cells[0].key, cells[2].key, cells[4].key]) == {"pending": 1, "running": 0, "done": 1,
                                                                          "failed": 1}


def test_wal_mode(tmp_path, cells):
    path = tmp_path / "study.sqlite"
    store = Store(path)
    store.sync(cells)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # WAL is a property of the file: a fresh connection sees it too
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    store.close()


def test_reader_sees_committed_changes_while_open(tmp_path, cells):
    """Each change is its own transaction: a read-only reader (e.g. `study status`) sees it at once."""
    path = tmp_path / "study.sqlite"
    store = Store(path)
    store.sync(cells)
    finish(store, cells[0].key)
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert reader.execute("SELECT status FROM cells WHERE key=?", (cells[0].key,)).fetchone()[0] == "done"
    store.mark_running(cells[1].key)
    assert reader.execute("SELECT status FROM cells WHERE key=?", (cells[1].key,)).fetchone()[0] == "running"
    reader.close()
    store.close()


def test_reopen_keeps_everything(tmp_path, cells):
    path = tmp_path / "study.sqlite"
    store = Store(path)
    store.sync(cells)
    finish(store, cells[0].key, 0.9)
    store.close()
    again = Store(path)
    assert again.rows([cells[0].key])[0].metrics == {"test": {"accuracy": 0.9}}
    assert again.sync(cells) == {"added": 0, "changed": 0}
    again.close()
