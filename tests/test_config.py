"""Run configs: defaults, presets, YAML + overrides precedence, validation, round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sftdpo.config import (LoRAConfig, OptimConfig, TrainConfig, from_dict, load_config, preset_defaults,
                           read_yaml, save_yaml, to_dict)
from sftdpo.errors import UsageError


def test_defaults_load() -> None:
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert (cfg.task, cfg.regime, cfg.params) == ("paraphrase", "sft", "fft")
    assert cfg.lora.targets == ("c_attn", "c_proj", "c_fc")
    assert cfg.dpo.loss_type == "sigmoid" and cfg.dpo.beta == pytest.approx(0.1)
    # the preset of (paraphrase, builtin, fft) is applied on top of the dataclass defaults
    preset = preset_defaults("paraphrase", cfg.model, "fft")
    assert cfg.sft.lr == pytest.approx(preset["sft"]["lr"])
    assert cfg.data.dev_size == preset["data"]["dev_size"]


def test_configs_are_frozen() -> None:
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sft.lr = 1.0  # type: ignore[misc]


def _cfg(**tree) -> TrainConfig:
    return load_config(overrides=tree)


def test_presets_differ_by_params_task_and_backbone() -> None:
    builtin_fft = _cfg(model="builtin:tiny", params="fft")
    builtin_lora = _cfg(model="builtin:tiny", params="lora")
    assert builtin_lora.sft.lr > builtin_fft.sft.lr  # LoRA needs a higher rate
    assert builtin_lora.dpo_optim.lr > builtin_fft.dpo_optim.lr
    # DPO runs with a smaller learning rate than SFT
    assert builtin_fft.dpo_optim.lr < builtin_fft.sft.lr
    # pretrained (hub/folder) models get the CS224N GPT-2 rates, far below the built-in ones
    hub_fft = _cfg(model="gpt2", params="fft")
    assert hub_fft.sft.lr < builtin_fft.sft.lr
    # the task picks its own section
    sonnet = _cfg(task="sonnet", model="builtin:tiny")
    expected = preset_defaults("sonnet", "builtin:tiny", "fft")
    assert sonnet.sft.epochs == expected["sft"]["epochs"] != builtin_fft.sft.epochs
    assert sonnet.sft.batch_size == expected["sft"]["batch_size"] != builtin_fft.sft.batch_size


def test_file_then_overrides_then_dotted(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: builtin:tiny\nsft:\n  lr: 0.01\n  epochs: 5\n  batch_size: 4\n"
                    "dpo:\n  beta: 0.3\n")
    preset = preset_defaults("paraphrase", "builtin:tiny", "fft")
    from_file = load_config(path)
    assert (from_file.sft.lr, from_file.sft.epochs, from_file.sft.batch_size) == (0.01, 5, 4)
    assert from_file.sft.batch_size != preset["sft"]["batch_size"]  # the file beats the preset
    assert from_file.sft.warmup_ratio == pytest.approx(preset["sft"]["warmup_ratio"])  # untouched: preset
    both = load_config(path, {"sft": {"lr": 0.02}, "dpo": {"beta": 0.4}})
    assert (both.sft.lr, both.sft.epochs, both.dpo.beta) == (0.02, 5, 0.4)
    dotted = load_config(path, {"sft": {"lr": 0.02}}, ["sft.lr=0.03", "--sft.batch-size=2"])
    assert (dotted.sft.lr, dotted.sft.epochs, dotted.sft.batch_size, dotted.dpo.beta) == (0.03, 5, 2, 0.3)


def test_file_task_selects_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("task: sonnet\nmodel: builtin:tiny\nparams: lora\n")
    cfg = load_config(path)
    expected = preset_defaults("sonnet", "builtin:tiny", "lora")
    assert cfg.sft.lr == pytest.approx(expected["sft"]["lr"])
    assert cfg.sft.epochs == expected["sft"]["epochs"]


@pytest.mark.parametrize("item, name", [("sft.nosuch=1", "sft.nosuch"), ("nosuch=1", "nosuch"),
                                        ("lora.rank=4", "lora.rank"), ("nosuch.key=1", "nosuch")])
def test_unknown_key_names_it(item: str, name: str) -> None:
    with pytest.raises(UsageError, match=f"unknown config key '{name}'"):
        load_config(dotted=[item])


def test_unknown_key_in_a_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("sft:\n  learning_rate: 0.1\n")
    with pytest.raises(UsageError, match="sft.learning_rate"):
        load_config(path)


@pytest.mark.parametrize("item, match", [
    ("sft.epochs=x", "sft.epochs"),
    ("sft.epochs=1.5", "whole number"),
    ("sft.lr=fast", "sft.lr"),
    ("data.both_orders=maybe", "true or false"),
])
def test_wrong_type_is_a_usage_error(item: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        load_config(dotted=[item])


def test_override_without_equals_sign() -> None:
    with pytest.raises(UsageError, match="section.field=value"):
        load_config(dotted=["sft.lr"])


@pytest.mark.parametrize("items, match", [
    (["sft.lr=0"], "lr must be positive"),
    (["sft.lr=-1e-4"], "lr must be positive"),
    (["dpo_optim.lr=0"], "lr must be positive"),
    (["lora.r=0"], "rank"),
    (["dpo.beta=0"], "beta must be positive"),
    (["dpo.beta=-0.1"], "beta must be positive"),
    (["regime=ppo"], "unknown regime 'ppo'"),
    (["task=summarise"], "unknown task"),
    (["params=qlora"], "unknown params"),
    (["dpo.loss_type=kto"], "unknown loss 'kto'"),
    (["pairs.construction=random"], "unknown pairs 'random'"),
    (["sft.epochs=2", "handoff_epoch=3"], "handoff_epoch 3"),
    (["data.train_size=0"], "train_size"),
    (["data.train_size=1.5"], "whole count"),
    (["data.train_size=-3"], "train_size"),
    (["sft.epochs=0"], "epochs"),
    (["sft.warmup_ratio=1"], "warmup_ratio"),
    (["dpo.label_smoothing=0.5"], "label_smoothing"),
])
def test_invalid_values(items: list[str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        load_config(dotted=items)


def test_valid_edge_values() -> None:
    cfg = load_config(dotted=["sft.epochs=2", "handoff_epoch=2", "data.train_size=1", "data.train_size=64"])
    assert cfg.handoff_epoch == 2 and cfg.sft_epochs_run == 2
    assert cfg.data.train_size == 64
    assert load_config(dotted=["data.train_size=0.25"]).data.train_size == 0.25
    assert load_config(dotted=["regime=sft-dpo", "sft.epochs=4"]).sft_epochs_run == 4  # 0 = all


def test_lora_targets_parse_to_a_tuple(tmp_path: Path) -> None:
    assert load_config(dotted=["lora.targets=c_attn,c_fc"]).lora.targets == ("c_attn", "c_fc")
    assert load_config(dotted=["lora.targets=c_attn, c_fc"]).lora.targets == ("c_attn", "c_fc")
    assert load_config(overrides={"lora": {"targets": ["c_proj"]}}).lora.targets == ("c_proj",)
    path = tmp_path / "run.yaml"
    path.write_text("lora:\n  targets: [c_attn, c_proj]\n")
    assert load_config(path).lora.targets == ("c_attn", "c_proj")


def test_bool_values() -> None:
    assert load_config(dotted=["data.both_orders=true"]).data.both_orders is True
    assert load_config(dotted=["dpo.precompute_ref_log_probs=no"]).dpo.precompute_ref_log_probs is False


def _non_default() -> TrainConfig:
    return load_config(overrides={"task": "sonnet", "regime": "sft-dpo", "params": "lora", "model": "builtin:tiny",
                                  "seed": 7, "handoff_epoch": 1, "sft": {"epochs": 2, "lr": 0.002},
                                  "dpo": {"beta": 0.25, "loss_type": "ipo"}, "lora": {"r": 4, "targets": ["c_fc"]},
                                  "pairs": {"construction": "windows", "k": 3}, "data": {"train_size": 0.5}})


def test_to_dict_from_dict_round_trip() -> None:
    cfg = _non_default()
    tree = to_dict(cfg)
    assert tree["lora"]["targets"] == ["c_fc"]  # tuples become lists (YAML, hashing)
    assert isinstance(tree["sft"], dict)
    back = from_dict(TrainConfig, tree)
    assert back == cfg
    assert back.lora.targets == ("c_fc",)


def test_save_yaml_read_yaml_round_trip(tmp_path: Path) -> None:
    cfg = _non_default()
    path = tmp_path / "sub" / "config.yaml"
    save_yaml(cfg, path)
    assert from_dict(TrainConfig, read_yaml(path)) == cfg
    # and load_config of the saved file reproduces it (the preset does not override the file)
    assert load_config(path) == cfg


def test_read_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: [1, 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        read_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(UsageError, match="mapping"):
        read_yaml(scalar)


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(UsageError, match="sft"):
        load_config(overrides={"sft": 3})


def test_dataclasses_validate_directly() -> None:
    with pytest.raises(UsageError):
        OptimConfig(lr=0)
    with pytest.raises(UsageError):
        LoRAConfig(targets=())
