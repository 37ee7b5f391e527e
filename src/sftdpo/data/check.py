"""``sftdpo data check``: what is in a data directory, and what is wrong with it."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from sftdpo.data.datadir import LAYOUT, DataDir, load_quora
from sftdpo.data.plays import read_plays
from sftdpo.data.quora import label_balance, split_pairs
from sftdpo.data.sonnets import read_held_out, read_sonnets
from sftdpo.errors import DataError

log = logging.getLogger(__name__)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _check_quora(dd: DataDir, summary: list[str], problems: list[str]) -> None:
    files = dd.quora_files()
    for f in files:
        summary.append(f"quora: file {_rel(f, dd.root)} ({f.stat().st_size:,} bytes)")
    pairs, skips = load_quora(dd)
    rows = len(pairs) + skips.count
    line = f"quora: {rows:,} rows read, {len(pairs):,} usable pairs, {skips.count:,} skipped"
    if skips.count:
        reasons = "; ".join(f"{r}: {n:,}" for r, n in sorted(skips.by_reason().items()))
        first = ", ".join(str(n) for n in skips.first_lines(5))
        line += f" ({reasons}; first at line(s) {first})"
    summary.append(line)
    splits = split_pairs(pairs)
    summary.append(
        "quora: split by id hash: "
        + ", ".join(f"{name} {len(ps):,}" for name, ps in splits.items())
    )
    summary.append(
        f"quora: duplicates (label 1) {_pct(label_balance(pairs))} overall; "
        + ", ".join(f"{name} {_pct(label_balance(ps))}" for name, ps in splits.items())
    )


def _check_sonnets(dd: DataDir, summary: list[str], problems: list[str]) -> None:
    train = read_sonnets(dd.sonnets_train)
    numbers = [s.number for s in train]
    sizes = Counter(len(s.lines) for s in train)
    shape = ", ".join(f"{k} lines x{v}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]))
    summary.append(
        f"sonnets: {_rel(dd.sonnets_train, dd.root)}: {len(train)} training sonnets "
        f"(numbers {min(numbers)}-{max(numbers)}; {shape})"
    )
    train_numbers = set(numbers)
    for name, prompts_path, true_path in dd.held_out_sets():
        try:
            held = read_held_out(prompts_path, true_path)
        except DataError as e:
            problems.append(str(e))
            continue
        nums = [h.number for h in held]
        summary.append(
            f"sonnets: held-out '{name}': {len(held)} prompts matched to references "
            f"({_rel(prompts_path, dd.root)} + {_rel(true_path, dd.root)}; "
            f"numbers {min(nums)}-{max(nums)})"
        )
        leaked = sorted(train_numbers.intersection(nums))
        if leaked:
            problems.append(
                f"held-out '{name}' sonnets {leaked[:10]} also appear in "
                f"{dd.sonnets_train}; remove them from the training file"
            )


def _check_plays(dd: DataDir, summary: list[str], problems: list[str]) -> None:
    plays = read_plays(dd.plays_dir)
    chars = sum(len(t) for _, t in plays)
    words = sum(len(t.split()) for _, t in plays)
    summary.append(
        f"plays: {len(plays)} files in {_rel(dd.plays_dir, dd.root)}/, "
        f"{chars:,} characters, {words:,} whitespace-separated words"
    )


def check_data_dir(root: Path | str) -> tuple[list[str], list[str]]:
    """(summary lines, problem lines) for a data directory; every component is checked."""
    root = Path(root)
    summary: list[str] = [f"data directory: {root}"]
    problems: list[str] = []
    if not root.is_dir():
        problems.append(f"data directory {root} does not exist; {LAYOUT}")
        return summary, problems
    dd = DataDir(root)
    for check in (_check_quora, _check_sonnets, _check_plays):
        try:
            check(dd, summary, problems)
        except DataError as e:
            problems.append(str(e))
    return summary, problems


def format_report(summary: list[str], problems: list[str]) -> str:
    """Plain-text report: the summary, then the problems (or 'no problems found')."""
    lines = list(summary)
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines.extend(f"  PROBLEM: {p}" for p in problems)
    else:
        lines.append("no problems found")
    return "\n".join(lines) + "\n"
