"""Crash-safe file writes (temp file + fsync + rename) and tolerant JSONL reads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (OSError, or a library's wrapped one) says the disk or quota is full."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL
    text = str(error)
    return any(s in text for s in ("No space left", "StorageFull", "os error 28", "Disk quota exceeded"))


def write_error(path: Path, error: BaseException) -> DataError:
    """The one-line error for a failed write: the disk is full, or the path is not writable."""
    if is_disk_full(error):
        return DataError(f"the disk is full: no space left to write {path}; free some space and run the "
                         "command again (a stopped `sftdpo train` continues with --resume)")
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
    return DataError(f"could not write {path}: {reason}; check that the folder is writable and has space")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so that a reader (or a crash) sees the old file or the new one, never half."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from e


PARTIAL_WRITE = re.compile(r"^\..+\.[a-z0-9_]{8}$")
"""The name of atomic_write_bytes's temporary file (mkstemp: '.NAME.' + 8 random characters)."""


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes cut short by a kill (only one process writes a run)."""
    stale = [p for p in Path(folder).rglob(".*") if p.is_file() and PARTIAL_WRITE.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows, one JSON object per line, flushed to disk."""
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """All complete rows of a JSONL file; a torn last line (from a kill) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace a JSONL file's rows atomically (used to drop rows past a resume point)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def tree_hash(tree) -> str:
    """A short, stable name for a JSON-able tree: 16 hex digits of the SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]
