"""Shakespeare plays corpus: plain-text files, Project Gutenberg boilerplate removed."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sftdpo.data.quora import read_text_utf8
from sftdpo.errors import DataError

log = logging.getLogger(__name__)

_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE |THIS )?PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)
_END = re.compile(
    r"^\s*(?:\*{3}\s*END OF (?:THE |THIS )?PROJECT GUTENBERG.*"
    r"|End of (?:the )?Project Gutenberg(?:'s)?\b.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header (to the ``*** START OF ...`` line) and footer.

    Footers start at ``*** END OF ...`` or the older ``End of the Project
    Gutenberg EBook ...`` / ``End of Project Gutenberg's ...`` lines. Text
    without markers comes back unchanged apart from CRLF/CR -> LF.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(text)
    if start:
        text = text[start.end():].lstrip("\n")
    end = _END.search(text)
    if end:
        text = text[: end.start()].rstrip() + "\n"
    return text


def read_plays(directory: Path | str) -> list[tuple[str, str]]:
    """``(file stem, text)`` for every ``*.txt`` in ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"plays directory {directory} not found; expected shakespeare-plays/*.txt "
            f"(one plain-text play per file)"
        )
    files = sorted(p for p in directory.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"plays directory {directory} has no .txt files; expected *.txt plays")
    plays: list[tuple[str, str]] = []
    for path in files:
        text = strip_gutenberg(read_text_utf8(path, "play file"))
        if not text.strip():
            log.warning("%s is empty; skipped", path)
            continue
        plays.append((path.stem, text))
    if not plays:
        raise DataError(f"plays directory {directory}: every .txt file is empty")
    return sorted(plays)
