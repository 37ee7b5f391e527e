"""User mistakes, through `sftdpo.cli.main` in-process: each ends in one line on stderr that names the
file, line, field or option and says what to do; exit 2 for options and config, 1 for data and the
environment; never a traceback (that needs --debug).

Data cases use a small valid data directory written into tmp_path and break one thing in it; model
cases use the session's tiny backbone folder (or a tokenizer built here); option and config cases
stop before any model is loaded.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import sftdpo.io
from sftdpo.cli import main

CS224N_HEADER = "\tid\tsentence1\tsentence2\tis_duplicate\n"
QUORA_ROWS = 200


def quora_rows(n: int = QUORA_ROWS, start: int = 0) -> str:
    return "".join(f"{i}\tp{i}\tWhat is thing {i}?\tWhat's thing {i}?\t{i % 2}\n" for i in range(start, start + n))


def sonnet_block(number: int, lines: int) -> str:
    return f"{number}\n" + "".join(f"  Line {k} of sonnet {number}, in measured verse,\n" for k in range(1, lines + 1))


def make_data_dir(root: Path) -> Path:
    """A small data directory in the project layout that `sftdpo data check` passes."""
    (root / "quora").mkdir(parents=True)
    (root / "quora" / "pairs.tsv").write_text(CS224N_HEADER + quora_rows(), encoding="utf-8")
    (root / "sonnets").mkdir()
    (root / "sonnets" / "sonnets.txt").write_text(
        "THE SONNETS\n\n" + "\n".join(sonnet_block(n, 14) for n in (1, 2, 3)), encoding="utf-8")
    (root / "sonnets" / "sonnets_held_out_dev.txt").write_text(
        "\n".join(sonnet_block(n, 3) for n in (10, 11)), encoding="utf-8")
    (root / "sonnets" / "TRUE_sonnets_held_out_dev.txt").write_text(
        "\n".join(sonnet_block(n, 14) for n in (10, 11)), encoding="utf-8")
    (root / "shakespeare-plays").mkdir()
    (root / "shakespeare-plays" / "play.txt").write_text("ACT I\nSCENE I. A room.\n" * 50, encoding="utf-8")
    return root


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def label_split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer GPT-2 folder whose byte-level tokenizer splits ' yes' into 2 tokens ('Ġy', 'es')."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in ("Ġy", "es", "Ġn", "<|endoftext|>"):
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "y"), ("e", "s"), ("Ġ", "n")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    assert tokenizer.convert_ids_to_tokens(tokenizer(" yes", add_special_tokens=False)["input_ids"]) == ["Ġy", "es"]
    folder = tmp_path_factory.mktemp("label-split-model")
    torch.manual_seed(0)
    eos = vocab["<|endoftext|>"]
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(vocab), n_positions=256,
                               bos_token_id=eos, eos_token_id=eos)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- the cases --------------------------------------------------------------------------------

Setup = Callable[[Path, Path, pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Case:
    """argv with {data} (a valid data dir), {tmp}, {tiny} (the tiny backbone) and {split} (a model
    whose ' yes' is 2 tokens); `setup(data, tmp, monkeypatch)` breaks something first."""

    argv: str
    code: int
    needles: tuple[str, ...]
    """Substrings of the error line (exit != 0) or of the output (exit 0)."""
    setup: Setup | None = None
    env: dict = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    """Paths under tmp that must not exist afterwards (besides: a usage error creates no run dir)."""


def put(relative: str, text: str | bytes) -> Setup:
    """Setup: write `text` to data/relative."""
    return lambda data, tmp, mp: (_write(data / relative, text), None)[1]


def put_tmp(relative: str, text: str | bytes) -> Setup:
    """Setup: write `text` to tmp/relative."""
    return lambda data, tmp, mp: (_write(tmp / relative, text), None)[1]


def remove(*relatives: str) -> Setup:
    def setup(data: Path, tmp: Path, mp) -> None:
        import shutil

        for rel in relatives:
            target = data / rel
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return setup


def both(*setups: Setup) -> Setup:
    def setup(data: Path, tmp: Path, mp) -> None:
        for s in setups:
            s(data, tmp, mp)
    return setup


def flat_layout(data: Path, tmp: Path, mp) -> None:
    """Everything in the top folder, no quora/ sonnets/ shakespeare-plays/ subfolders."""
    for sub in ("quora", "sonnets", "shakespeare-plays"):
        for f in (data / sub).iterdir():
            f.rename(data / f.name)
        (data / sub).rmdir()


def disk_full_on(name: str) -> Setup:
    """Setup: writing a file called `name` through sftdpo.io fails as on a full disk."""
    def setup(data: Path, tmp: Path, mp: pytest.MonkeyPatch) -> None:
        real = sftdpo.io.os.fsync

        def fsync(fd: int) -> None:
            if Path(sftdpo.io.os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd)
        mp.setattr(sftdpo.io.os, "fsync", fsync)
    return setup


def hub_offline(data: Path, tmp: Path, mp: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp / "empty-hub-cache"))


NON_UTF8 = "caf\xe9".encode("latin-1")
TRAIN = "train --task paraphrase --regime sft --model builtin:tiny --out {tmp}/run --data-dir {data}"
EVAL = "eval --model {tiny} --data-dir {data}"
STUDY_DRY = "study --dry-run --data-dir {data}"

CASES: dict[str, Case] = {
    # ---- the data directory (exit 1)
    "missing data dir": Case("data check --data-dir {tmp}/nowhere", 1, ("nowhere", "--data-dir", "data fetch")),
    "missing data dir from env": Case("data check", 1, ("nowhere", "$SFTDPO_DATA_DIR"),
                                      env={"SFTDPO_DATA_DIR": "{tmp}/nowhere"}),
    "missing data dir (train)": Case(TRAIN.replace("{data}", "{tmp}/nowhere"), 1, ("nowhere", "--data-dir")),
    "empty data dir": Case("data check --data-dir {tmp}/empty", 1, ("no quora/ folder", "expected layout"),
                           setup=lambda data, tmp, mp: (tmp / "empty").mkdir()),
    "empty data dir (backbone build)": Case("backbone build --size tiny --data-dir {tmp}/empty", 1,
                                            ("no quora/ folder", "expected layout"),
                                            setup=lambda data, tmp, mp: (tmp / "empty").mkdir()),
    "files not in subfolders": Case("data check --data-dir {data}", 1, ("no quora/ folder", "expected layout"),
                                    setup=flat_layout),
    "sonnets in the quora file": Case("data check --data-dir {data}", 1, ("pairs.tsv", "lacks column"),
                                      setup=put("quora/pairs.tsv", sonnet_block(1, 14))),
    "quora rows in sonnets.txt": Case("data check --data-dir {data}", 1, ("sonnets.txt", "no sonnets found"),
                                      setup=put("sonnets/sonnets.txt", CS224N_HEADER + quora_rows(5))),
    "empty quora file": Case("data check --data-dir {data}", 1, ("pairs.tsv", "is empty", "header row"),
                             setup=put("quora/pairs.tsv", "")),
    "quora header only": Case("data check --data-dir {data}", 1, ("pairs.tsv", "header but no rows"),
                              setup=put("quora/pairs.tsv", CS224N_HEADER)),
    "empty sonnets file": Case("data check --data-dir {data}", 1, ("sonnets.txt", "is empty"),
                               setup=put("sonnets/sonnets.txt", "\n\n")),
    "empty play files": Case("data check --data-dir {data}", 1, ("shakespeare-plays", "every .txt file is empty"),
                             setup=put("shakespeare-plays/play.txt", "")),
    "non-UTF-8 quora file": Case("data check --data-dir {data}", 1, ("pairs.tsv", "not UTF-8", "0xe9", "line 4",
                                                                     "re-save it as UTF-8"),
                                 setup=put("quora/pairs.tsv", CS224N_HEADER.encode() + quora_rows(2).encode()
                                           + b"9\tp9\t" + NON_UTF8 + b"?\tQ?\t1\n")),
    "non-UTF-8 sonnets file": Case("data check --data-dir {data}", 1, ("sonnets.txt", "not UTF-8", "line 2"),
                                   setup=put("sonnets/sonnets.txt", b"1\n" + NON_UTF8 + b"\n")),
    "non-UTF-8 eval file": Case(EVAL + " --task paraphrase --eval-file {tmp}/mine.tsv", 1,
                                ("mine.tsv", "not UTF-8"),
                                setup=put_tmp("mine.tsv", CS224N_HEADER.encode() + NON_UTF8)),
    "truncated quora file (row cut short)": Case("data check --data-dir {data}", 0,
                                                 ("1 skipped (malformed row: 1; first at line(s) 202)",),
                                                 setup=put("quora/pairs.tsv", CS224N_HEADER + quora_rows()
                                                           + "200\tp200\tWhat is th")),
    "unclosed quote swallows the rest": Case("data check --data-dir {data}", 1,
                                             ("pairs.tsv", "line 52", "quoted field", "runs to line 202", "quote"),
                                             setup=put("quora/pairs.tsv", CS224N_HEADER + quora_rows(50)
                                                       + '50\tp50\t"What is\tQ?\t1\n' + quora_rows(150, 51))),
    "garbage rows": Case("data check --data-dir {data}", 1, ("pairs.tsv", "malformed", "right file"),
                         setup=put("quora/pairs.tsv", CS224N_HEADER + quora_rows(100)
                                   + "".join(f"garbage line {i} \x01\x02\n" for i in range(30)))),
    "garbage eval file": Case(EVAL + " --task paraphrase --eval-file {tmp}/mine.csv", 1,
                              ("mine.csv", "lacks column", "is_duplicate"),
                              setup=put_tmp("mine.csv", "%PDF-1.4 \x00\x7f junk, more junk\nx,y\n")),
    "header lacks the label column": Case("data check --data-dir {data}", 1,
                                          ("pairs.tsv", "lacks column(s) is_duplicate/label", "CS224N"),
                                          setup=put("quora/pairs.tsv", "\tid\tsentence1\tsentence2\n0\ta\tQ?\tR?\n")),
    "a few labels not 0/1 are skipped": Case("data check --data-dir {data}", 0,
                                             ("200 usable pairs, 3 skipped (invalid label: 3; first at line(s) "
                                              "202, 203, 204)",),
                                             setup=put("quora/pairs.tsv", CS224N_HEADER + quora_rows()
                                                       + "".join(f"{i}\tx{i}\tQ?\tR?\t{lab}\n" for i, lab in
                                                                 enumerate(["2", "yes", "-1"])))),
    "over 5% labels not 0/1": Case("data check --data-dir {data}", 1,
                                   ("pairs.tsv", "20 of 220 rows", "invalid label", "right file"),
                                   setup=put("quora/pairs.tsv", CS224N_HEADER + quora_rows()
                                             + "".join(f"{i}\tx{i}\tQ?\tR?\t2\n" for i in range(20)))),
    "held-out sonnets out of order": Case("data check --data-dir {data}", 1,
                                          ("sonnets_held_out_dev.txt", "TRUE_sonnets_held_out_dev.txt",
                                           "number 11", "same order"),
                                          setup=put("sonnets/TRUE_sonnets_held_out_dev.txt",
                                                    sonnet_block(11, 14) + "\n" + sonnet_block(10, 14))),
    "held-out prompt line differs": Case("data check --data-dir {data}", 1,
                                         ("sonnets_held_out_dev.txt", "line 2 does not match"),
                                         setup=put("sonnets/sonnets_held_out_dev.txt",
                                                   sonnet_block(10, 3).replace("Line 2", "A changed line") + "\n"
                                                   + sonnet_block(11, 3))),
    "held-out prompt has no TRUE file": Case("data check --data-dir {data}", 1,
                                             ("sonnets_held_out_dev.txt has no matching "
                                              "TRUE_sonnets_held_out_dev.txt",),
                                             setup=remove("sonnets/TRUE_sonnets_held_out_dev.txt")),
    "--prompts and --references do not match": Case(
        EVAL + " --task sonnet --prompts {tmp}/p.txt --references {tmp}/r.txt", 1,
        ("p.txt", "r.txt", "has 1 sonnets", "has 2"),
        setup=both(put_tmp("p.txt", sonnet_block(10, 3)),
                   put_tmp("r.txt", sonnet_block(10, 14) + "\n" + sonnet_block(11, 14)))),
    "--prompts without --references": Case(EVAL + " --task sonnet --prompts {tmp}/p.txt", 2,
                                           ("--prompts and --references go together",),
                                           setup=put_tmp("p.txt", sonnet_block(10, 3))),
    "missing --eval-file": Case(EVAL + " --task paraphrase --eval-file {tmp}/nope.tsv", 1,
                                ("nope.tsv", "not found", "check the path")),
    # ---- models (exit 1; 2 for an unknown built-in)
    "unknown hub model offline": Case(EVAL.replace("{tiny}", "some-org/does-not-exist") + " --task paraphrase", 1,
                                      ("some-org/does-not-exist", "unreachable", "--model DIR", "builtin:mini"),
                                      setup=hub_offline),
    "unknown hub model offline (train)": Case(TRAIN.replace("builtin:tiny", "some-org/does-not-exist"), 1,
                                              ("some-org/does-not-exist", "unreachable", "--model DIR"),
                                              setup=hub_offline),
    "missing model folder": Case(EVAL.replace("{tiny}", "{tmp}/no-model") + " --task paraphrase", 1,
                                 ("no-model", "does not exist", "builtin:tiny|mini|small")),
    "model folder without config.json": Case(EVAL.replace("{tiny}", "{tmp}/weights") + " --task paraphrase", 1,
                                             ("weights", "config.json", "save_pretrained"),
                                             setup=put_tmp("weights/model.bin", b"\x00")),
    "label words are not single tokens": Case(EVAL.replace("{tiny}", "{split}") + " --task paraphrase", 1,
                                              ("' yes'", "2 tokens", "'Ġy', 'es'", "single-token")),
    "unknown built-in backbone": Case(EVAL.replace("{tiny}", "builtin:huge") + " --task paraphrase", 2,
                                      ("builtin:huge", "builtin:tiny")),
    # ---- options (exit 2)
    "--lr 0": Case(TRAIN + " --lr 0", 2, ("lr must be positive", "0")),
    "--lr negative": Case(TRAIN + " --lr -0.001", 2, ("lr must be positive", "-0.001")),
    "--lr inf": Case(TRAIN + " --lr inf", 2, ("sft.lr", "finite")),
    "--dpo-lr nan": Case(TRAIN + " --regime dpo --dpo-lr nan", 2, ("dpo_optim.lr", "finite")),
    "--lr not a number": Case(TRAIN + " --lr fast", 2, ("--lr", "invalid float value: 'fast'")),
    "--lora-rank 0": Case(TRAIN + " --params lora --lora-rank 0", 2, ("lora rank must be at least 1",)),
    "--beta 0": Case(TRAIN + " --regime dpo --beta 0", 2, ("beta must be positive",)),
    "--beta negative": Case(TRAIN + " --regime dpo --beta -0.5", 2, ("beta must be positive", "-0.5")),
    "unknown --regime": Case(TRAIN + " --regime rlhf", 2, ("--regime", "invalid choice: 'rlhf'")),
    "unknown regime via --set": Case(TRAIN + " --set regime=rlhf", 2, ("unknown regime 'rlhf'", "sft-dpo")),
    "unknown --loss": Case(TRAIN + " --regime dpo --loss kto", 2, ("unknown loss 'kto'", "sigmoid, ipo, hinge")),
    "unknown --pairs": Case(TRAIN + " --pairs best", 2, ("unknown pairs 'best'", "shuffled")),
    "unknown --preset": Case(STUDY_DRY + " --preset huge", 2, ("--preset", "invalid choice: 'huge'")),
    "--handoff-epoch beyond --epochs": Case(TRAIN + " --regime sft-dpo --epochs 2 --handoff-epoch 3", 2,
                                            ("handoff_epoch 3 is beyond sft.epochs 2", "--epochs")),
    "--handoff-epoch negative": Case(TRAIN + " --regime sft-dpo --handoff-epoch -1", 2,
                                     ("handoff_epoch must be >= 0", "-1")),
    "--train-size 0": Case(TRAIN + " --train-size 0", 2, ("train_size must be > 0", "(0, 1]")),
    "--train-size negative": Case(TRAIN + " --train-size -0.5", 2, ("train_size must be > 0", "-0.5")),
    "--train-size 1.5": Case(TRAIN + " --train-size 1.5", 2, ("train_size above 1 must be a whole count", "1.5")),
    "study train_sizes outside (0, 1]": Case(STUDY_DRY + " --preset smoke --set train_sizes=0.5,0", 2,
                                             ("study cell", "-n0-", "train_size must be > 0")),
    "--epochs 0": Case(TRAIN + " --epochs 0", 2, ("sft", "epochs must be at least 1")),
    "--warmup-ratio 1": Case(TRAIN + " --warmup-ratio 1", 2, ("warmup_ratio must be in [0, 1)",)),
    "--save-every negative": Case(TRAIN + " --save-every -5", 2, ("--save-every must be >= 0", "-5")),
    "eval --samples 0": Case(EVAL.replace("{tiny}", "builtin:tiny") + " --samples 0", 2,
                             ("--samples must be at least 1",)),
    "--set without =": Case(TRAIN + " --set sft.lr", 2, ("override 'sft.lr'", "section.field=value")),
    "--set a bad number": Case(TRAIN + " --set sft.lr=fast", 2, ("config key 'sft.lr' must be a number", "'fast'")),
    "--set an unknown key": Case(TRAIN + " --set sft.warmup_steps=10", 2, ("unknown config key 'sft.warmup_steps'",
                                                                          "warmup_ratio")),
    # ---- YAML config files (exit 2)
    "config with an unknown key": Case(TRAIN + " --config {tmp}/c.yaml", 2,
                                       ("c.yaml", "unknown config key 'dpo.betta'", "beta"),
                                       setup=put_tmp("c.yaml", "dpo:\n  betta: 0.2\n")),
    "config with a wrong type": Case(TRAIN + " --config {tmp}/c.yaml", 2,
                                     ("c.yaml", "config key 'sft.epochs' must be a number", "'three'"),
                                     setup=put_tmp("c.yaml", "sft:\n  epochs: three\n")),
    "config section not a mapping": Case(TRAIN + " --config {tmp}/c.yaml", 2, ("c.yaml", "sft must be a mapping"),
                                         setup=put_tmp("c.yaml", "sft: 3\n")),
    "config with a bad value": Case(TRAIN + " --config {tmp}/c.yaml", 2, ("c.yaml", "lora rank must be at least 1"),
                                    setup=put_tmp("c.yaml", "lora:\n  r: 0\n")),
    "config YAML syntax error": Case(TRAIN + " --config {tmp}/c.yaml", 2,
                                     ("c.yaml", "not valid YAML at line 3, column 6", "fix the YAML"),
                                     setup=put_tmp("c.yaml", "sft:\n  epochs: 2\n   lr: 0.1\n")),
    "config is a list": Case(TRAIN + " --config {tmp}/c.yaml", 2, ("c.yaml", "must hold a mapping"),
                             setup=put_tmp("c.yaml", "- sft\n- dpo\n")),
    "config is a folder": Case(TRAIN + " --config {tmp}", 2, ("cannot read config file", "directory")),
    "config does not exist": Case(TRAIN + " --config {tmp}/nope.yaml", 2, ("nope.yaml", "does not exist")),
    "study config with an unknown key": Case(STUDY_DRY + " --config {tmp}/s.yaml", 2,
                                             ("s.yaml", "unknown config key 'study.sead'", "seeds"),
                                             setup=put_tmp("s.yaml", "name: mine\nsead: [1]\n")),
    "study config YAML syntax error": Case(STUDY_DRY + " --config {tmp}/s.yaml", 2,
                                           ("s.yaml", "not valid YAML",
                                            "flow sequence that starts at line 2, column 8"),
                                           setup=put_tmp("s.yaml", "name: mine\nseeds: [1, 2\n")),
    # ---- where the output goes (exit 2 for --out, 1 for the disk)
    "--out under a regular file": Case(TRAIN.replace("{tmp}/run", "{tmp}/file.txt/run"), 2,
                                       ("cannot create run directory", "file.txt/run", "Not a directory",
                                        "choose another --out"),
                                       setup=put_tmp("file.txt", "I am a file")),
    "disk full while writing config.yaml": Case(TRAIN, 1, ("the disk is full", "config.yaml", "free some space"),
                                                setup=disk_full_on("config.yaml"), absent=("run/config.yaml",)),
}


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture) -> None:
    case = CASES[name]
    data = make_data_dir(tmp_path / "data")
    values = {"data": str(data), "tmp": str(tmp_path)}
    if "{tiny}" in case.argv:
        values["tiny"] = str(request.getfixturevalue("tiny_backbone"))
    if "{split}" in case.argv:
        values["split"] = str(request.getfixturevalue("label_split_model"))
    monkeypatch.delenv("SFTDPO_DATA_DIR", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, fill(value, values))
    argv = fill(case.argv, values).split()
    if case.setup:
        case.setup(data, tmp_path, monkeypatch)
    code, out, err = run_main(argv + ["--quiet"] * ("--quiet" not in argv), capsys)

    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    if case.code == 0:
        for needle in case.needles:
            assert needle in out + err, (needle, out, err)
        return
    lines = err.strip().splitlines()
    assert lines, f"nothing on stderr; stdout: {out}"
    last = lines[-1]
    if last.startswith("sftdpo: error:"):  # ours: exactly one line
        assert len(lines) == 1, err
    else:  # argparse: its usage line(s), then one error line naming the option
        assert last.startswith(f"sftdpo {argv[0]}") and ": error: " in last, err
    for needle in case.needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    if case.code == 2 and "--out {tmp}/run " in case.argv:
        assert not (tmp_path / "run").exists()  # options are checked before anything is written
    for path in case.absent:
        assert not (tmp_path / path).exists(), path
    if (tmp_path / "run").exists():
        assert _leftovers(tmp_path / "run") == []


def test_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """The same mistake with --debug raises (a traceback) instead of printing one line."""
    from sftdpo.errors import UsageError

    with pytest.raises(UsageError, match="lr must be positive"):
        main(fill(TRAIN, {"tmp": str(tmp_path), "data": str(make_data_dir(tmp_path / "data"))}).split()
             + ["--lr", "0", "--debug"])


def test_a_failed_start_does_not_block_the_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """A run that stopped before its first step (here: a model that cannot load) leaves only its
    config.yaml; the corrected command, with another config, then starts afresh instead of refusing."""
    data = make_data_dir(tmp_path / "data")
    hub_offline(data, tmp_path, monkeypatch)
    argv = fill(TRAIN, {"tmp": str(tmp_path), "data": str(data)}).split() + ["--quiet"]
    argv[argv.index("--model") + 1] = "some-org/does-not-exist"
    code, _, err = run_main(argv, capsys)
    assert code == 1 and "some-org/does-not-exist" in err
    assert sorted(p.name for p in (tmp_path / "run").rglob("*") if p.is_file()) == ["config.yaml"]
    argv[argv.index("--model") + 1] = "other-org/does-not-exist-either"
    code, _, err = run_main(argv, capsys)
    assert code == 1 and "other-org/does-not-exist-either" in err, err  # not "already holds a run"


# ---- a full disk while saving -------------------------------------------------------------------

def _leftovers(run_dir: Path) -> list[str]:
    """Temporary files and folders of interrupted writes."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(".tmp"))


@pytest.mark.usefixtures("small_paraphrase_splits")
def test_disk_full_while_saving_the_metrics(tmp_path: Path, data_root: Path, tiny_backbone: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """metrics.json (written last, it marks a run done) meets a full disk: one line, exit 1, no partial
    metrics.json or temp file; after space is freed, --resume finishes without retraining."""
    run_dir = tmp_path / "run"
    argv = ["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny", "--train-size", "16",
            "--dev-size", "8", "--epochs", "1", "--out", str(run_dir), "--data-dir", str(data_root), "--quiet"]
    with monkeypatch.context() as mp:
        disk_full_on("metrics.json")(data_root, tmp_path, mp)
        code, out, err = run_main(argv, capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sftdpo: error: the disk is full"), err
    assert "metrics.json" in lines[0] and "--resume" in lines[0] and "Traceback" not in out + err
    assert not (run_dir / "metrics.json").exists()
    assert _leftovers(run_dir) == []
    done = json.loads((run_dir / "stages" / "sft" / "done.json").read_text())

    code, out, err = run_main(argv + ["--resume"], capsys)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == done["steps"] == 1
    assert json.loads((run_dir / "stages" / "sft" / "done.json").read_text()) == done  # not retrained
    assert _leftovers(run_dir) == []


@pytest.mark.usefixtures("small_paraphrase_splits")
def test_disk_full_while_saving_the_training_state(tmp_path: Path, data_root: Path, tiny_backbone: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The resumable state's weights meet a full disk at step 3: one line, exit 1; the half-written
    state folder is gone and the state of step 2 is kept, intact."""
    import sftdpo.loop

    run_dir = tmp_path / "run"
    real_save = sftdpo.loop.save_file
    calls = []

    def save_file(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"half a safetensors file")
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(sftdpo.loop, "save_file", save_file)
    code, out, err = run_main(["train", "--task", "paraphrase", "--regime", "sft", "--model", "builtin:tiny",
                               "--train-size", "32", "--batch-size", "4", "--epochs", "1", "--save-every", "1",
                               "--out", str(run_dir), "--data-dir", str(data_root), "--quiet"], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sftdpo: error: the disk is full"), err
    assert "state.tmp" in lines[0] and "Traceback" not in out + err
    stage = run_dir / "stages" / "sft"
    assert not (stage / "state.tmp").exists() and not (stage / "state.old").exists()
    assert json.loads((stage / "state" / "loop.json").read_text())["global_step"] == 2
    from safetensors.torch import load_file

    assert load_file(str(stage / "state" / "trainable.safetensors"))


def test_an_oserror_anywhere_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    """An environment error outside the paths that check for it still ends in one line, exit 1."""
    import sftdpo.data.check

    def broken(root):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / "quora"))

    monkeypatch.setattr(sftdpo.data.check, "check_data_dir", broken)
    data = make_data_dir(tmp_path / "data")
    code, out, err = run_main(["data", "check", "--data-dir", str(data)], capsys)
    assert code == 1 and "Traceback" not in out + err
    assert err.strip() == f"sftdpo: error: Permission denied: {data / 'quora'}; check that the path exists and is " \
                          "writable (--debug: traceback)"
    with pytest.raises(PermissionError):
        main(["data", "check", "--data-dir", str(data), "--debug"])
