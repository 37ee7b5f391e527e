"""`sftdpo train`, `eval --run` and `generate` in-process through main(): outputs and exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import run_main

from sftdpo.cli import main
from sftdpo.data.sonnets import read_sonnets
from sftdpo.io import read_json

pytestmark = pytest.mark.usefixtures("small_paraphrase_splits")


@pytest.fixture(scope="module")
def paraphrase_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, tiny_backbone: Path):
    """(run_dir, exit code, stdout) of one small `sftdpo train` of paraphrase SFT."""
    run_dir = tmp_path_factory.mktemp("cli-para") / "run"
    rc, out, _ = run_main(["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny",
                           "--train-size", "32", "--dev-size", "16", "--epochs", "1", "--out", str(run_dir),
                           "--data-dir", str(data_root), "--quiet"])
    return run_dir, rc, out


@pytest.fixture(scope="module")
def sonnet_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, tiny_backbone: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("cli-sonnet") / "run"
    rc, _, err = run_main(["train", "--task", "sonnet", "--regime", "sft", "--model", "builtin:tiny",
                           "--train-size", "8", "--epochs", "1", "--eval-samples", "1", "--out", str(run_dir),
                           "--data-dir", str(data_root), "--quiet"])
    assert rc == 0, err
    return run_dir


def test_train_prints_the_test_metrics(paraphrase_run) -> None:
    run_dir, rc, out = paraphrase_run
    assert rc == 0
    metrics = read_json(run_dir / "metrics.json")
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("paraphrase sft fft: accuracy ")
    assert f"accuracy {metrics['test']['accuracy']:.4f}" in lines[0]
    assert f"f1 {metrics['test']['f1']:.4f}" in lines[0]
    assert str(run_dir) in lines[1] and "trainable parameters" in lines[1]
    assert (run_dir / "checkpoint" / "config.json").exists()


def test_train_options_reach_the_config(paraphrase_run) -> None:
    from sftdpo.config import TrainConfig, from_dict, read_yaml

    run_dir, _, _ = paraphrase_run
    cfg = from_dict(TrainConfig, read_yaml(run_dir / "config.yaml"))
    assert (cfg.task, cfg.regime, cfg.params, cfg.model) == ("paraphrase", "sft", "fft", "builtin:tiny")
    assert (cfg.data.train_size, cfg.data.dev_size, cfg.sft.epochs) == (32, 16, 1)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["steps"] == math.ceil(32 / cfg.sft.batch_size)
    assert read_json(run_dir / "stages" / "sft" / "done.json")["examples"] == 32


def test_eval_run_prints_one_json_object(paraphrase_run, data_root: Path) -> None:
    run_dir, _, _ = paraphrase_run
    rc, out, err = run_main(["eval", "--run", str(run_dir), "--split", "dev", "--json",
                             "--data-dir", str(data_root), "--quiet"])
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1"] <= 1
    # the final evaluation of `train` scored the same checkpoint on the same dev pairs
    dev = read_json(run_dir / "metrics.json")["dev"]
    assert result["accuracy"] == pytest.approx(dev["accuracy"]) and result["n"] == dev["n"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra, match", [
    (["--lr", "-1"], "lr must be positive"),
    (["--lora-rank", "0", "--params", "lora"], "rank"),
    (["--lora-rank", "0"], "rank"),
    (["--handoff-epoch", "9", "--epochs", "2", "--regime", "sft-dpo"], "handoff_epoch 9"),
    (["--set", "nosuch.key=1"], "nosuch"),
    (["--beta", "0", "--regime", "dpo"], "beta"),
    (["--train-size", "1.5"], "train_size"),
    (["--loss", "kto"], "kto"),
    (["--set", "sft.epochs=x"], "sft.epochs"),
])
def test_bad_options_exit_2_with_one_line(extra: list[str], match: str, tmp_path: Path, data_root: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny",
            "--out", str(tmp_path / "run"), "--data-dir", str(data_root), "--quiet", *extra]
    # later flags win in argparse, so --regime in `extra` overrides the default above
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sftdpo: error:") and match in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "run").exists()  # nothing was created


def test_config_file_with_an_unknown_key(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture) -> None:
    config = _write(tmp_path / "bad.yaml", "sft:\n  epochs: 1\n  warmup_steps: 10\n")
    assert main(["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny",
                 "--config", str(config), "--out", str(tmp_path / "run"), "--data-dir", str(data_root),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sftdpo: error:") and len(err.strip().splitlines()) == 1
    assert "sft.warmup_steps" in err and "Traceback" not in err


def test_config_file_values_are_used_and_flags_win(tmp_path: Path, data_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--config sets values, flags override it, --set overrides both (checked without training)."""
    import sftdpo.regimes
    from sftdpo.errors import UsageError

    seen = {}

    def fake_train(cfg, out, data_root, **kwargs):
        seen["cfg"] = cfg
        raise UsageError("stop here")

    monkeypatch.setattr(sftdpo.regimes, "train", fake_train)
    config = _write(tmp_path / "run.yaml", "sft:\n  epochs: 4\n  lr: 0.01\n  batch_size: 2\ndpo:\n  beta: 0.2\n")
    rc, _, err = run_main(["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny",
                           "--config", str(config), "--lr", "0.02", "--batch-size", "3", "--set", "sft.batch_size=5",
                           "--out", str(tmp_path / "run"), "--data-dir", str(data_root), "--quiet"])
    assert rc == 2 and "stop here" in err
    cfg = seen["cfg"]
    assert (cfg.sft.epochs, cfg.sft.lr, cfg.sft.batch_size, cfg.dpo.beta) == (4, 0.02, 5, 0.2)


def test_generate_writes_one_sonnet_per_prompt(sonnet_run: Path, data_root: Path, tmp_path: Path) -> None:
    prompts_file = data_root / "sonnets" / "sonnets_held_out_dev.txt"
    out_file = tmp_path / "generated.txt"
    rc, out, err = run_main(["generate", "--run", str(sonnet_run), "--prompts", str(prompts_file),
                             "--out", str(out_file), "--data-dir", str(data_root), "--quiet"])
    assert rc == 0, err
    prompts = read_sonnets(prompts_file)
    generated = read_sonnets(out_file)
    assert len(prompts) == len(generated) == 12
    assert out.strip() == f"12 sonnets -> {out_file}"
    for p, g in zip(prompts, generated):
        assert g.number == p.number
        assert g.lines[:len(p.lines)] == p.lines  # each sonnet starts with its prompt
    assert read_json(sonnet_run / "metrics.json")["test"]["samples"] == 1


def test_generate_without_a_checkpoint(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture) -> None:
    prompts_file = data_root / "sonnets" / "sonnets_held_out_dev.txt"
    assert main(["generate", "--run", str(tmp_path), "--prompts", str(prompts_file),
                 "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sftdpo: error:") and "checkpoint" in err
