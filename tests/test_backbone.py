"""Built-in backbones: the tiny build, its card and files, the LR schedule, the tokenizer, the corpus."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from sftdpo.backbone import SPECS, build_backbone, build_key, pretraining_corpus, train_tokenizer
from sftdpo.data.datadir import DataDir, load_quora
from sftdpo.data.quora import split_pairs
from sftdpo.data.sonnets import read_held_out, read_sonnets
from sftdpo.schedule import cosine_lr  # the backbone's pretraining schedule

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def test_card_fields(tiny_backbone: Path) -> None:
    card = json.loads((tiny_backbone / "card.json").read_text())
    spec = SPECS["tiny"]
    assert card["size"] == "tiny"
    assert card["steps"] == spec.tokens // (spec.batch_size * spec.block_size)
    assert card["tokens_seen"] == card["steps"] * spec.batch_size * spec.block_size
    assert 0 < card["tokens_seen"] <= spec.tokens
    assert math.isfinite(card["val_loss"]) and 0 < card["val_loss"] < math.log(spec.vocab_size) + 1
    assert "Quora train split" in card["corpus"]
    assert "sonnet" not in card["corpus"].lower()
    assert (tiny_backbone / "README.md").read_text().startswith("# sftdpo built-in backbone `tiny`")


def test_folder_loads_with_transformers(tiny_backbone: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    card = json.loads((tiny_backbone / "card.json").read_text())
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.n_layer == SPECS["tiny"].n_layer and model.config.n_embd == SPECS["tiny"].n_embd
    assert len(tokenizer) == model.config.vocab_size == SPECS["tiny"].vocab_size

    ids = tokenizer("Shall I compare thee", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_weights_are_safetensors_only(tiny_backbone: Path) -> None:
    names = [p.name for p in tiny_backbone.iterdir()]
    assert any(n.endswith(".safetensors") for n in names), names
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)], names
    assert {"config.json", "tokenizer.json", "card.json"} <= set(names)


def test_label_words_are_single_tokens(tiny_model) -> None:
    _, tokenizer = tiny_model
    for word in (" yes", " no"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_second_build_is_a_cache_hit(tiny_backbone: Path, data_root: Path) -> None:
    mtimes = {p.name: p.stat().st_mtime_ns for p in tiny_backbone.iterdir()}
    start = time.perf_counter()
    again = build_backbone("tiny", data_root, progress=False)
    elapsed = time.perf_counter() - start
    assert again == tiny_backbone
    assert elapsed < 2.0, f"cache hit took {elapsed:.1f}s"
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == mtimes


def test_cosine_lr_hand_worked() -> None:
    peak, warmup, total = 1.0, 4, 14
    # warmup: linear, (step + 1) / warmup of the peak
    assert cosine_lr(0, total, peak, warmup) == pytest.approx(0.25)
    assert cosine_lr(1, total, peak, warmup) == pytest.approx(0.5)
    assert cosine_lr(3, total, peak, warmup) == pytest.approx(1.0)
    # decay: progress 0 -> peak; halfway -> floor + (1 - floor) / 2; end -> floor
    assert cosine_lr(4, total, peak, warmup) == pytest.approx(1.0)
    assert cosine_lr(9, total, peak, warmup) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_lr(total, total, peak, warmup) == pytest.approx(0.1)
    assert cosine_lr(total + 5, total, peak, warmup) == pytest.approx(0.1)
    assert cosine_lr(total, total, 3e-3, warmup, floor=0.2) == pytest.approx(0.2 * 3e-3)
    decay = [cosine_lr(s, total, peak, warmup) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_build_key_depends_on_seed_and_size(data_root: Path) -> None:
    data = DataDir(data_root)
    key = build_key("tiny", data, 0)
    assert key == build_key("tiny", data, 0)
    assert key != build_key("tiny", data, 1)
    assert key != build_key("mini", data, 0)


def test_build_rejects_unknown_size(data_root: Path) -> None:
    from sftdpo.errors import UsageError

    with pytest.raises(UsageError, match="huge"):
        build_backbone("huge", data_root, progress=False)


def test_tokenizer_round_trips_text_exactly() -> None:
    docs = ["To be, or not to be: that is the question.\n", "What is the best way to learn Python?\n" * 3,
            "  indented\n\tand tabbed\n"]
    tokenizer = train_tokenizer(docs, vocab_size=320)
    samples = ["hello world", " leading space", "  two leading spaces\nand a newline\n",
               "\n\nblank lines\n\n", "tab\tand unicode: café, naïve, \u2014 \U0001F600", "yes no yes"]
    for text in samples:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    for word in (" yes", " no"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus(data_root: Path):
    return pretraining_corpus(DataDir(data_root), SPECS["tiny"].val_fraction)


def test_corpus_has_no_dev_or_test_questions(corpus, data_root: Path) -> None:
    pairs, _ = load_quora(DataDir(data_root))
    splits = split_pairs(pairs)
    train_questions = {q for p in splits["train"] for q in (p.question1, p.question2)}
    *plays, questions_doc = corpus.train_docs
    questions_lines = "\n" + questions_doc + "\n"
    assert "Quora train split" in corpus.description
    checked = 0
    for split in ("dev", "test"):
        held = [q for p in splits[split] for q in (p.question1, p.question2) if q not in train_questions]
        for q in held[:150]:
            assert f"\n{q}\n" not in questions_lines, (split, q)
            assert not any(q in doc for doc in plays), (split, q)
            checked += 1
    assert checked == 300
    # and the train questions are there, so the check above could have failed
    some_train = splits["train"][0].question1
    assert f"\n{some_train}\n" in questions_lines


def test_corpus_has_no_sonnet_text(corpus, data_root: Path) -> None:
    data = DataDir(data_root)
    text = "\n".join(corpus.train_docs) + "\n" + corpus.val_text
    assert "From fairest creatures we desire increase" not in text
    assert "Shall I compare thee to a summer's day" not in text
    lines = [line.strip() for s in read_sonnets(data.sonnets_train) for line in s.lines]
    for _, prompts, true in data.held_out_sets():
        lines += [line.strip() for h in read_held_out(prompts, true) for line in h.true_lines]
    distinctive = [line for line in lines if len(line) > 30]
    assert len(distinctive) > 1000
    assert [line for line in distinctive if line in text] == []
    # plays text is there: a well-known line of Hamlet
    assert "To be, or not to be" in text
