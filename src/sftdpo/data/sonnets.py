"""Shakespeare's sonnets in the CS224N layout: a header, then numbered blocks.

Each sonnet is headed by a line holding only its number; lines keep their
indentation (trailing whitespace and blank lines are dropped). Held-out sets
are a prompts file (first lines of each sonnet) and a TRUE file (full text).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sftdpo.data.quora import read_text_utf8
from sftdpo.errors import DataError

log = logging.getLogger(__name__)

_NUMBER_LINE = re.compile(r"^\s*(\d+)\s*$")


@dataclass(frozen=True)
class Sonnet:
    """One sonnet: its number and its lines (indentation kept, no blank lines)."""

    number: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class HeldOut:
    """A held-out sonnet: the prompt lines and the true full sonnet."""

    number: int
    prompt_lines: tuple[str, ...]
    true_lines: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return "\n".join(self.prompt_lines)

    @property
    def reference(self) -> str:
        return "\n".join(self.true_lines)

    @property
    def continuation_lines(self) -> tuple[str, ...]:
        return self.true_lines[len(self.prompt_lines):]


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_sonnets(text: str, source: str = "<text>") -> list[Sonnet]:
    """Split text into numbered sonnets; text before the first number line is ignored."""
    sonnets: list[Sonnet] = []
    number: int | None = None
    block: list[str] = []
    start = 0

    def flush() -> None:
        if number is None:
            return
        lines = tuple(line for line in block if line.strip())
        if lines:
            sonnets.append(Sonnet(number, lines))
        else:
            log.warning("%s: sonnet %d (line %d) has no lines; skipped", source, number, start)

    for i, raw in enumerate(normalise_newlines(text).split("\n"), start=1):
        m = _NUMBER_LINE.match(raw)
        if m:
            flush()
            number, block, start = int(m.group(1)), [], i
        elif number is not None:
            block.append(raw.rstrip())
    flush()
    return sonnets


def read_sonnets(path: Path | str) -> list[Sonnet]:
    """Read a sonnets file; DataError if missing, empty, not UTF-8 or without sonnets."""
    path = Path(path)
    text = read_text_utf8(path, "sonnets file")
    if not text.strip():
        raise DataError(f"sonnets file {path} is empty; expected numbered sonnets")
    sonnets = parse_sonnets(text, str(path))
    if not sonnets:
        raise DataError(
            f"no sonnets found in {path}: expected each sonnet to start with a line "
            f"holding only its number (e.g. '1'), followed by its lines"
        )
    seen: set[int] = set()
    for s in sonnets:
        if s.number in seen:
            log.warning("%s: sonnet number %d appears more than once", path, s.number)
        seen.add(s.number)
    return sonnets


def read_held_out(prompts_path: Path | str, true_path: Path | str) -> list[HeldOut]:
    """Pair a prompts file with its TRUE file, in order; DataError on any mismatch."""
    prompts_path, true_path = Path(prompts_path), Path(true_path)
    prompts = read_sonnets(prompts_path)
    trues = read_sonnets(true_path)
    if len(prompts) != len(trues):
        raise DataError(
            f"prompts {prompts_path} has {len(prompts)} sonnets but TRUE {true_path} has "
            f"{len(trues)}; they must hold the same sonnets in the same order"
        )
    out: list[HeldOut] = []
    for k, (p, t) in enumerate(zip(prompts, trues), start=1):
        if p.number != t.number:
            raise DataError(
                f"prompts {prompts_path} sonnet #{k} is number {p.number} but TRUE "
                f"{true_path} sonnet #{k} is number {t.number}; put them in the same order"
            )
        if len(p.lines) >= len(t.lines):
            raise DataError(
                f"prompts {prompts_path} sonnet #{k} (number {p.number}) has {len(p.lines)} "
                f"lines, not fewer than its TRUE text in {true_path} ({len(t.lines)})"
            )
        for j, (pl, tl) in enumerate(zip(p.lines, t.lines), start=1):
            if pl.strip() != tl.strip():
                raise DataError(
                    f"prompts {prompts_path} sonnet #{k} (number {p.number}) line {j} does "
                    f"not match TRUE {true_path}: {pl.strip()!r} vs {tl.strip()!r}"
                )
        out.append(HeldOut(p.number, p.lines, t.lines))
    return out
