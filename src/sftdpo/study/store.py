"""The results store: one SQLite file per study (WAL, a transaction per change), a row per cell.

States: pending -> running -> done | failed. A cell left `running` by a killed process is
pending again at the next start (its run directory resumes where it stopped).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import to_dict
from ..errors import UsageError
from .grid import Cell

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    axes TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    metrics TEXT,
    curve TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL
);
"""
STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class Row:
    """A cell as stored."""

    key: str
    position: int
    config_hash: str
    axes: dict
    config: dict
    status: str
    metrics: dict | None
    curve: list | None
    error: str | None
    attempts: int
    started: float | None
    finished: float | None


class Store:
    """The study's SQLite database (`DIR/study.sqlite`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise UsageError(f"cannot open the results store {self.path}: {e}") from None
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def sync(self, cells: list[Cell]) -> dict[str, int]:
        """Add new cells; reset cells whose config changed; keep finished ones. Returns counts."""
        added = changed = 0
        with self.transaction() as db:
            for position, cell in enumerate(cells):
                row = db.execute("SELECT config_hash FROM cells WHERE key = ?", (cell.key,)).fetchone()
                values = (position, cell.config_hash, json.dumps(cell.axes), json.dumps(to_dict(cell.config)))
                if row is None:
                    db.execute("INSERT INTO cells (position, config_hash, axes, config, key) VALUES (?, ?, ?, ?, ?)",
                               (*values, cell.key))
                    added += 1
                elif row[0] != cell.config_hash:
                    db.execute("UPDATE cells SET position=?, config_hash=?, axes=?, config=?, status='pending', "
                               "metrics=NULL, curve=NULL, error=NULL WHERE key=?", (*values, cell.key))
                    changed += 1
                else:
                    db.execute("UPDATE cells SET position=? WHERE key=?", (position, cell.key))
            db.execute("UPDATE cells SET status='pending' WHERE status='running'")
        return {"added": added, "changed": changed}

    def mark_running(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET status='running', attempts=attempts+1, started=?, error=NULL WHERE key=?",
                       (time.time(), key))

    def mark_done(self, key: str, metrics: dict, curve: list) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET status='done', metrics=?, curve=?, finished=? WHERE key=?",
                       (json.dumps(metrics), json.dumps(curve), time.time(), key))

    def mark_failed(self, key: str, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET status='failed', error=?, finished=? WHERE key=?",
                       (error, time.time(), key))

    def rows(self, keys: list[str] | None = None) -> list[Row]:
        """All cells (or the given keys) in grid order."""
        cur = self.db.execute("SELECT key, position, config_hash, axes, config, status, metrics, curve, error, "
                              "attempts, started, finished FROM cells ORDER BY position")
        out = []
        for r in cur.fetchall():
            if keys is not None and r[0] not in keys:
                continue
            out.append(Row(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5],
                           json.loads(r[6]) if r[6] else None, json.loads(r[7]) if r[7] else None,
                           r[8], r[9], r[10], r[11]))
        return out

    def counts(self, keys: list[str] | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.rows(keys):
            counts[row.status] += 1
        return counts
