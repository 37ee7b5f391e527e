"""A real model by path: a Hugging Face folder made outside sftdpo (a random 2-layer GPT-2 and its own
byte-level BPE tokenizer, saved with save_pretrained) goes through `sftdpo train --model FOLDER`
and `sftdpo eval --run RUN_DIR`, with the pretrained-model defaults of presets/train.yaml.
(Hub names offline: tests/test_models.py. Sonnets are left out here: sampling 12 sonnets of 128
tokens from a random model twice costs a minute on a busy 2-core CPU, for no new code path.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_main

from sftdpo.config import TrainConfig, from_dict, read_yaml
from sftdpo.io import read_json

pytestmark = pytest.mark.usefixtures("small_paraphrase_splits")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, data_root: Path) -> Path:
    """A random GPT2LMHeadModel (2 layers x 32, 2 heads) and a 600-token BPE, both save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from sftdpo.backbone import train_tokenizer
    from sftdpo.data.sonnets import read_sonnets
    from sftdpo.models import single_token_id

    docs = [s.text for s in read_sonnets(data_root / "sonnets" / "sonnets.txt")[:40]]
    docs.append("Is this question a paraphrase of that one? Answer yes or no.\n" * 20)
    tokenizer = train_tokenizer(docs, vocab_size=600)
    assert single_token_id(tokenizer, " yes") != single_token_id(tokenizer, " no")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=512,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("hf") / "random-gpt2"
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("task, regime, params, extra, keys", [
    ("paraphrase", "sft-dpo", "lora", ["--train-size", "32", "--dev-size", "16", "--set", "data.test_size=24"],
     {"accuracy", "f1", "predicted_yes", "label_mass"}),
])
def test_train_then_eval_a_model_folder(model_folder: Path, data_root: Path, tmp_path: Path,
                                        task, regime, params, extra, keys) -> None:
    run = tmp_path / "run"
    rc, out, err = run_main(["train", "--task", task, "--regime", regime, "--params", params,
                             "--model", str(model_folder), "--epochs", "1", "--dpo-epochs", "1", *extra,
                             "--out", str(run), "--data-dir", str(data_root), "--quiet"])
    assert rc == 0, err
    assert out.startswith(f"{task} {regime} {params}: ")
    cfg = from_dict(TrainConfig, read_yaml(run / "config.yaml"))
    assert cfg.model == str(model_folder)
    assert cfg.sft.batch_size == 8  # the pretrained-model defaults, not the built-in backbones'
    metrics = read_json(run / "metrics.json")
    assert keys <= set(metrics["test"]) and all(isinstance(metrics["test"][k], float) for k in keys)
    saved = json.loads((run / "checkpoint" / "config.json").read_text())
    assert (saved["n_layer"], saved["n_embd"], saved["vocab_size"]) == (2, 32, 600)
    rc, out, err = run_main(["eval", "--run", str(run), "--json", "--data-dir", str(data_root), "--quiet"])
    assert rc == 0, err
    result = json.loads(out)
    assert keys <= set(result)
    # deterministic: the same checkpoint on the same test pairs
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert result["n"] == metrics["test"]["n"] == 24
