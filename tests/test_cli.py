"""The `sftdpo` command, in-process through main() and as a subprocess: help, exit codes, output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sftdpo.cli import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser, as argv prefixes (the top level is ())."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, prefix + (name,))
    return paths


COMMANDS = _command_paths(build_parser())


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftdpo.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def test_known_commands_are_listed() -> None:
    assert {("data", "check"), ("data", "fetch"), ("backbone", "build"), ("eval",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "sftdpo")
def test_help_exits_zero(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sftdpo" + "".join(f" {p}" for p in path))


def test_help_and_version_as_a_subprocess() -> None:
    res = _run("--help")
    assert res.returncode == 0 and "usage: sftdpo" in res.stdout
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.startswith("sftdpo ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_data_check_real(data_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "18,213" in out and "131 training sonnets" in out


def test_data_check_missing_dir_subprocess(tmp_path: Path) -> None:
    res = _run("data", "check", "--data-dir", str(tmp_path / "missing"))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sftdpo: error:"), res.stderr
    assert "missing" in lines[0]
    assert "Traceback" not in res.stderr + res.stdout


def test_eval_unknown_builtin_exits_2(data_root: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["eval", "--model", "builtin:nosuch", "--task", "paraphrase", "--data-dir", str(data_root)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sftdpo: error:") and "builtin:nosuch" in err[0]


def test_eval_unknown_builtin_exits_2_subprocess(data_root: Path) -> None:
    res = _run("eval", "--model", "builtin:nosuch", "--data-dir", str(data_root))
    assert res.returncode == 2
    assert res.stderr.strip().startswith("sftdpo: error:") and "Traceback" not in res.stderr


def test_eval_json_on_the_tiny_backbone(tiny_backbone: Path, data_root: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    code = main(["eval", "--model", "builtin:tiny", "--task", "paraphrase", "--json", "--split", "dev",
                 "--data-dir", str(data_root), "--quiet"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1"] <= 1
    assert result["n"] == 1762
    assert result["majority_accuracy"] == pytest.approx(0.62, abs=0.01)


def test_backbone_build_prints_the_folder(tiny_backbone: Path, data_root: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["backbone", "build", "--size", "tiny", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tiny_backbone)
    assert out[0].startswith("backbone tiny:") and "parameters" in out[0]
