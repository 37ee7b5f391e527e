"""Quora Question Pairs: read the CS224N and GLUE QQP layouts, split by id hash.

Two header layouts are accepted (tab-separated for ``.tsv``, comma for ``.csv``;
fields may be quoted CSV-style, including embedded tabs and newlines):

- CS224N: ``<empty>\\tid\\tsentence1\\tsentence2\\tis_duplicate``
- GLUE QQP: ``id\\tqid1\\tqid2\\tquestion1\\tquestion2\\tis_duplicate``

Bad rows (missing/invalid label, empty question, wrong field count, duplicate
id) are skipped and recorded in a :class:`SkipLog` with their line numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from sftdpo.errors import DataError

log = logging.getLogger(__name__)

LAYOUTS = (
    "CS224N '<empty> id sentence1 sentence2 is_duplicate' or "
    "GLUE QQP 'id qid1 qid2 question1 question2 is_duplicate'"
)
# Accepted names of each needed column (lower-cased, stripped).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "question1": ("sentence1", "question1"),
    "question2": ("sentence2", "question2"),
    "label": ("is_duplicate", "label"),
}
_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
MAX_SKIP_FRACTION = 0.05
MAX_SKIP_ROWS = 10
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class QuoraPair:
    """One labelled question pair; ``label`` is 1 for a paraphrase, 0 otherwise."""

    id: str
    question1: str
    question2: str
    label: int


@dataclass
class SkipLog:
    """Rows skipped while reading: ``(line number where the row starts, reason)``."""

    skipped: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.skipped.append((line, reason))

    @property
    def count(self) -> int:
        return len(self.skipped)

    def by_reason(self) -> dict[str, int]:
        """Counts per kind of reason (quoted values and ``[file]`` suffixes dropped)."""
        return dict(Counter(reason_kind(r) for _, r in self.skipped))

    def first_lines(self, n: int = 5) -> list[int]:
        """Line numbers of the first ``n`` skipped rows."""
        return [line for line, _ in self.skipped[:n]]

    def extend(self, other: "SkipLog", suffix: str = "") -> None:
        self.skipped.extend((line, reason + suffix) for line, reason in other.skipped)


def reason_kind(reason: str) -> str:
    """``"invalid label '2'"`` -> ``"invalid label"``; ``"x [a.tsv]"`` -> ``"x"``."""
    return re.sub(r"\s*['(\[].*$", "", reason)


def read_text_utf8(path: Path, what: str = "file") -> str:
    """Read ``path`` as UTF-8 text (BOM dropped); DataError with the offset/line if not."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} not found; check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{what} {path} is not UTF-8: bad byte 0x{data[e.start]:02x} at offset "
            f"{e.start} (line {line}); re-save it as UTF-8"
        ) from None


def _delimiter(path: Path, header_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    return "\t" if "\t" in header_line else ","


def _column_index(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    index: dict[str, int] = {}
    missing = []
    for key, aliases in _COLUMNS.items():
        found = next((names.index(a) for a in aliases if a in names), None)
        if found is None:
            missing.append("/".join(aliases))
        else:
            index[key] = found
    if missing:
        raise DataError(
            f"{path}: header {_short(header)} lacks column(s) {', '.join(missing)}; "
            f"expected the {LAYOUTS} layout"
        )
    return index


def _short(header: list[str]) -> str:
    shown = repr(header)
    return shown if len(shown) <= 120 else shown[:117] + "..."


def read_pairs(path: Path | str) -> tuple[list[QuoraPair], SkipLog]:
    """Read labelled pairs from a CS224N or GLUE QQP file; bad rows go to the SkipLog."""
    pairs, _, skips = read_pairs_with_lines(path)
    return pairs, skips


def read_pairs_with_lines(path: Path | str) -> tuple[list[QuoraPair], list[int], SkipLog]:
    """Like :func:`read_pairs`, also giving the line where each pair's row starts."""
    path = Path(path)
    text = read_text_utf8(path, "Quora file")
    if not text.strip():
        raise DataError(f"Quora file {path} is empty; expected a header row ({LAYOUTS})")
    delimiter = _delimiter(path, text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    cols = _column_index(header, path)
    n_fields = len(header)
    pairs: list[QuoraPair] = []
    lines: list[int] = []
    skips = SkipLog()
    try:
        _read_rows(reader, n_fields, cols, pairs, lines, skips)
    except csv.Error as e:
        raise DataError(
            f"{path} line {reader.line_num}: cannot parse ({e}); check its quoting "
            f"({LAYOUTS})"
        ) from None
    except DataError as e:
        raise DataError(f"Quora file {path} {e}") from None
    rows = len(pairs) + skips.count
    if rows == 0:
        raise DataError(f"Quora file {path} has a header but no rows")
    _check_skips(path, rows, skips)
    if skips.count:
        log.warning("%s: skipped %d of %d rows %s", path, skips.count, rows, skips.by_reason())
    return pairs, lines, skips


def _read_rows(
    reader: Iterator[list[str]], n_fields: int, cols: dict[str, int],
    pairs: list[QuoraPair], lines: list[int], skips: SkipLog,
) -> None:
    """Append good rows to ``pairs``/``lines``, bad ones to ``skips`` (line = record start)."""
    seen: set[str] = set()
    prev_end = reader.line_num  # type: ignore[attr-defined]
    for row in reader:
        start, prev_end = prev_end + 1, reader.line_num  # type: ignore[attr-defined]
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != n_fields:
            if prev_end - start + 1 > MAX_SKIP_ROWS:  # one "row" swallowing many lines: a stray quote
                raise DataError(
                    f"line {start}: a quoted field opened here runs to line {prev_end}, swallowing "
                    f"{prev_end - start + 1} lines ({len(row)} fields, expected {n_fields}); a stray or "
                    f"unclosed '\"' (or a file cut off inside a quote): close or remove that quote"
                )
            skips.add(start, f"malformed row ({len(row)} fields, expected {n_fields})")
            continue
        raw_label = row[cols["label"]].strip()
        if not raw_label:
            skips.add(start, "missing label")
            continue
        if raw_label not in _LABELS:
            skips.add(start, f"invalid label {raw_label[:20]!r}")
            continue
        q1, q2 = row[cols["question1"]].strip(), row[cols["question2"]].strip()
        if not q1 or not q2:
            skips.add(start, "empty question")
            continue
        pair_id = row[cols["id"]].strip()
        if not pair_id:
            skips.add(start, "missing id")
            continue
        if pair_id in seen:
            skips.add(start, f"duplicate id {pair_id[:30]!r}")
            continue
        seen.add(pair_id)
        pairs.append(QuoraPair(pair_id, q1, q2, _LABELS[raw_label]))
        lines.append(start)


def _check_skips(path: Path, rows: int, skips: SkipLog) -> None:
    if skips.count > MAX_SKIP_ROWS and skips.count > MAX_SKIP_FRACTION * rows:
        first = ", ".join(str(n) for n in skips.first_lines(5))
        raise DataError(
            f"{skips.count} of {rows} rows malformed in {path} (first at lines {first}; "
            f"{skips.by_reason()}); is this the right file? Expected {LAYOUTS}"
        )


def split_of(pair_id: str) -> str:
    """'train', 'dev' or 'test' (80/10/10), from the SHA-256 of the id: stable everywhere."""
    bucket = int.from_bytes(hashlib.sha256(pair_id.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < 80:
        return "train"
    return "dev" if bucket < 90 else "test"


def split_pairs(pairs: Iterable[QuoraPair]) -> dict[str, list[QuoraPair]]:
    """Pairs grouped by :func:`split_of`, file order kept within each split."""
    out: dict[str, list[QuoraPair]] = {s: [] for s in SPLITS}
    for p in pairs:
        out[split_of(p.id)].append(p)
    return out


def label_balance(pairs: Iterable[QuoraPair]) -> float:
    """Fraction of pairs labelled 1 (duplicate); 0.0 for no pairs."""
    labels = [p.label for p in pairs]
    return sum(labels) / len(labels) if labels else 0.0
