"""Model references: builtin:SIZE, local folders, hub names offline; label-word checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from sftdpo.errors import DataError, UsageError
from sftdpo.models import load_model_and_tokenizer, resolve_model, single_token_id
from sftdpo.tasks.paraphrase import ParaphraseTask


def _random_gpt2(tokenizer):
    """A random 1-layer, 16-wide GPT-2 over the given tokenizer's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer), n_positions=512,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config)


def test_unknown_builtin_is_a_usage_error(data_root: Path) -> None:
    with pytest.raises(UsageError, match="builtin:tiny"):
        resolve_model("builtin:unknown", data_root)


def test_builtin_needs_a_data_dir() -> None:
    with pytest.raises(UsageError, match="--data-dir"):
        resolve_model("builtin:tiny", None)


def test_builtin_resolves_to_the_cached_build(tiny_backbone: Path, data_root: Path) -> None:
    assert resolve_model("builtin:tiny", data_root, progress=False) == str(tiny_backbone)


def test_missing_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))
    with pytest.raises(DataError, match="does not exist"):
        resolve_model("./no-such-model-here")


def test_folder_without_config_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(DataError, match="config.json"):
        resolve_model(str(tmp_path))


def test_hub_name_passes_through() -> None:
    assert resolve_model("gpt2") == "gpt2"
    assert resolve_model("openai-community/gpt2") == "openai-community/gpt2"


def test_hub_offline_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # an empty hub cache, so a user's cached gpt2 cannot make this load
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_model_and_tokenizer("gpt2")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "--model" in message and "builtin" in message and "gpt2" in message
    assert "\n" not in message


def test_single_token_id(tiny_model) -> None:
    _, tokenizer = tiny_model
    yes = single_token_id(tokenizer, " yes")
    assert isinstance(yes, int)
    assert tokenizer(" yes", add_special_tokens=False)["input_ids"] == [yes]
    assert single_token_id(tokenizer, " no") != yes
    with pytest.raises(DataError, match="single-token"):
        single_token_id(tokenizer, " antidisestablishmentarianism")


def test_pickle_only_folder_is_refused(tiny_model, tmp_path: Path) -> None:
    _, tokenizer = tiny_model
    model = _random_gpt2(tokenizer)
    # what save_pretrained(safe_serialization=False) wrote before transformers 5
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(DataError, match="safetensors"):
        load_model_and_tokenizer(resolve_model(str(tmp_path)))


def test_local_folder_loads_and_evaluates(tiny_model, data_root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, tiny_tokenizer = tiny_model
    folder = tmp_path / "my-model"
    _random_gpt2(tiny_tokenizer).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)

    model, tokenizer = load_model_and_tokenizer(resolve_model(str(folder)))
    assert model.config.n_layer == 1 and model.config.n_embd == 16
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "right"

    full = ParaphraseTask.pairs
    monkeypatch.setattr(ParaphraseTask, "pairs", lambda self, split: full(self, split)[:50])
    result = ParaphraseTask(data_root, tokenizer).evaluate(model, split="dev")
    assert set(result) == {"accuracy", "f1", "predicted_yes", "label_mass", "n"}
    assert result["n"] == 50
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1"] <= 1
    assert 0 < result["label_mass"] <= 1
