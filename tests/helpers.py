"""Small helpers several test files share (importable because tests/ is on sys.path under pytest)."""

from __future__ import annotations

import contextlib
import io

from sftdpo.cli import main

TIMING_KEYS = {"train_seconds", "eval_seconds", "seconds_per_step", "tokens_per_s", "peak_memory_mb", "elapsed"}


def without_timing(value):
    """A copy of nested metrics without wall-clock fields (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """`sftdpo ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
