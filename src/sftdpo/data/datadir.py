"""Where the data lives: resolve the data directory and name the files in it."""

from __future__ import annotations

import functools

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sftdpo.data.quora import QuoraPair, SkipLog, read_pairs, read_pairs_with_lines
from sftdpo.errors import DataError

log = logging.getLogger(__name__)

ENV_VAR = "SFTDPO_DATA_DIR"
LAYOUT = (
    "expected layout: quora/*.tsv|csv, sonnets/sonnets.txt, "
    "sonnets/sonnets_held_out_<name>.txt + sonnets/TRUE_sonnets_held_out_<name>.txt, "
    "shakespeare-plays/*.txt"
)
_HELD_OUT_PREFIX = "sonnets_held_out"


def default_data_dir() -> Path:
    """The per-user default: ``platformdirs.user_data_dir("sftdpo")/data``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("sftdpo")) / "data"


def resolve_data_dir(arg: str | os.PathLike[str] | None) -> Path:
    """``arg``, else ``$SFTDPO_DATA_DIR``, else the per-user default; must exist."""
    if arg:
        path, source = Path(arg), "--data-dir"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, source = default_data_dir(), "the default location"
    path = path.expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory {path} (from {source}) does not exist; pass --data-dir DIR, "
            f"set ${ENV_VAR}, or run `sftdpo data fetch` ({LAYOUT})"
        )
    return path


@dataclass(frozen=True)
class DataDir:
    """A data directory in the project layout (see ``LAYOUT``)."""

    root: Path

    def _missing(self, what: str) -> DataError:
        return DataError(f"data directory {self.root}: {what}; {LAYOUT}")

    def quora_files(self) -> list[Path]:
        """``quora/*.tsv`` and ``quora/*.csv``, sorted by name."""
        folder = self.root / "quora"
        if not folder.is_dir():
            raise self._missing("no quora/ folder")
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".tsv", ".csv")
        )
        if not files:
            raise self._missing("no .tsv or .csv file in quora/")
        return files

    @property
    def sonnets_train(self) -> Path:
        """``sonnets/sonnets.txt``."""
        path = self.root / "sonnets" / "sonnets.txt"
        if not path.is_file():
            raise self._missing("sonnets/sonnets.txt not found")
        return path

    def held_out_sets(self) -> list[tuple[str, Path, Path]]:
        """``(name, prompts file, TRUE file)`` per held-out set, sorted by name."""
        folder = self.root / "sonnets"
        if not folder.is_dir():
            raise self._missing("no sonnets/ folder")
        sets: list[tuple[str, Path, Path]] = []
        for prompts in sorted(folder.glob(f"{_HELD_OUT_PREFIX}*.txt")):
            suffix = prompts.stem[len(_HELD_OUT_PREFIX):]
            name = suffix.lstrip("_-") or "default"
            true = folder / f"TRUE_{_HELD_OUT_PREFIX}{suffix}.txt"
            if not true.is_file():
                raise self._missing(f"{prompts.name} has no matching {true.name}")
            sets.append((name, prompts, true))
        if not sets:
            raise self._missing("no sonnets/sonnets_held_out_<name>.txt prompt file")
        return sets

    @property
    def plays_dir(self) -> Path:
        """``shakespeare-plays/``."""
        path = self.root / "shakespeare-plays"
        if not path.is_dir():
            raise self._missing("no shakespeare-plays/ folder")
        return path


def load_quora(data_dir: DataDir) -> tuple[list[QuoraPair], SkipLog]:
    """All Quora files in name order, concatenated; later duplicate ids are skipped.

    With several files, skip reasons carry a ``[file name]`` suffix because the
    line numbers are per file. Parsed once per process while the files are unchanged.
    """
    files = data_dir.quora_files()
    stamp = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    return _load_quora_files(stamp)


@functools.lru_cache(maxsize=4)
def _load_quora_files(stamp: tuple[tuple[str, int, int], ...]) -> tuple[list[QuoraPair], SkipLog]:
    files = [Path(name) for name, _, _ in stamp]
    if len(files) == 1:
        return read_pairs(files[0])
    pairs: list[QuoraPair] = []
    skips = SkipLog()
    seen: set[str] = set()
    for path in files:
        file_pairs, lines, file_skips = read_pairs_with_lines(path)
        skips.extend(file_skips, f" [{path.name}]")
        for p, line in zip(file_pairs, lines):
            if p.id in seen:
                skips.add(line, f"duplicate id {p.id[:30]!r} [{path.name}]")
                continue
            seen.add(p.id)
            pairs.append(p)
    return pairs, skips
