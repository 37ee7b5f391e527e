"""The paraphrase and sonnet tasks: prompts, examples, pairs, prediction, metrics, baselines."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sftdpo.data.quora import QuoraPair
from sftdpo.errors import UsageError
from sftdpo.evaluate import make_task
from sftdpo.tasks import TASKS, get_task
from sftdpo.tasks.paraphrase import ParaphraseTask, cloze_prompt
from sftdpo.tasks.sonnet import GenerationSettings, SonnetTask

HAND_PAIRS = [QuoraPair("a1", "How do I cook rice?", "What is the way to cook rice?", 1),
              QuoraPair("a2", "Is the moon made of cheese?", "Why is the sky blue?", 0)]


def test_registry() -> None:
    assert TASKS == {"paraphrase": ParaphraseTask, "sonnet": SonnetTask}
    assert get_task("sonnet") is SonnetTask
    with pytest.raises(UsageError, match="paraphrase"):
        get_task("summarise")


# ------------------------------------------------------------------ paraphrase


def test_cloze_prompt_text() -> None:
    assert cloze_prompt("a", "b") == 'Is "a" a paraphrase of "b"? Answer "yes" or "no":'
    long = cloze_prompt("x" * 1000, "y")
    assert long.count("x") == 400 and long.endswith('"y"? Answer "yes" or "no":')


@pytest.fixture
def hand_task(tiny_model, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> ParaphraseTask:
    """A paraphrase task whose every split is the two hand-made pairs."""
    monkeypatch.setattr(ParaphraseTask, "pairs", lambda self, split: HAND_PAIRS)
    return ParaphraseTask(data_root, tiny_model[1])


def test_sft_example_completion_is_the_label_word(hand_task: ParaphraseTask, tiny_model) -> None:
    tok = tiny_model[1]
    yes, no = (tok(w, add_special_tokens=False)["input_ids"] for w in (" yes", " no"))
    assert len(yes) == len(no) == 1
    examples = hand_task.sft_examples("train")
    assert [e.completion_ids for e in examples] == [tuple(yes), tuple(no)]
    prompt = tok(cloze_prompt(HAND_PAIRS[0].question1, HAND_PAIRS[0].question2),
                 add_special_tokens=False)["input_ids"]
    assert examples[0].prompt_ids == tuple(prompt)
    assert tok.eos_token_id not in examples[0].prompt_ids  # no BOS/EOS added


def test_preference_pairs_chosen_is_the_correct_answer(hand_task: ParaphraseTask) -> None:
    yes, no = hand_task.label_ids[1], hand_task.label_ids[0]
    pairs = hand_task.preference_pairs("train")
    examples = hand_task.sft_examples("train")
    assert [(p.chosen_ids, p.rejected_ids) for p in pairs] == [((yes,), (no,)), ((no,), (yes,))]
    assert [p.prompt_ids for p in pairs] == [e.prompt_ids for e in examples]


class ParityModel(torch.nn.Module):
    """Fake LM: at each position, logit[yes] = 1 if that position's token id is even, else logit[no] = 1."""

    def __init__(self, vocab: int, yes_id: int, no_id: int):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.yes_id, self.no_id = vocab, yes_id, no_id

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        even = (input_ids % 2 == 0).float()  # (B, T)
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.yes_id] = even
        logits[..., self.no_id] = 1 - even
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_prediction_reads_the_last_real_token(hand_task: ParaphraseTask, tiny_model) -> None:
    tok = tiny_model[1]
    assert tok.pad_token_id % 2 == 0  # so reading a padding position would predict "yes"
    model = ParityModel(len(tok), hand_task.label_ids[1], hand_task.label_ids[0])
    prompts = [(5, 7, 9, 3),  # longest, last token odd -> no
               (2, 9),        # padded; first token even, last odd -> no
               (3, 4),        # padded; last even -> yes
               (11,)]         # padded; odd -> no
    for batch_size in (64, 1):
        logps = hand_task.answer_logps(model, prompts, batch_size=batch_size)  # (N, 2): no, yes
        assert logps.shape == (4, 2)
        assert logps.argmax(dim=1).tolist() == [0, 0, 1, 0]
    winner = 1 - math.log(math.e + len(tok) - 1)  # log-softmax of a one-hot 1 over V logits
    assert logps[2, 1].item() == pytest.approx(winner, abs=1e-5)
    assert logps[0, 0].item() == pytest.approx(winner, abs=1e-5)


def test_evaluate_on_the_tiny_model(tiny_model, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = tiny_model
    full = ParaphraseTask.pairs
    monkeypatch.setattr(ParaphraseTask, "pairs", lambda self, split: full(self, split)[:64])
    result = ParaphraseTask(data_root, tok).evaluate(model, split="dev", batch_size=16)
    assert result["n"] == 64
    for key in ("accuracy", "f1", "predicted_yes"):
        assert 0 <= result[key] <= 1, key
    assert 0 < result["label_mass"] <= 1


def test_majority_baseline_on_dev(tiny_model, data_root: Path) -> None:
    task = ParaphraseTask(data_root, tiny_model[1])
    base = task.baselines(split="dev")
    assert len(task.pairs("dev")) == 1762
    assert base["majority_accuracy"] == pytest.approx(0.62, abs=0.01)
    # always predicting "not a paraphrase": F1 of that class, 0 for the other, halved
    acc = base["majority_accuracy"]
    assert base["majority_f1"] == pytest.approx(acc / (1 + acc), abs=1e-9)


def test_unknown_split(tiny_model, data_root: Path) -> None:
    with pytest.raises(UsageError, match="split"):
        ParaphraseTask(data_root, tiny_model[1]).pairs("validation")


def test_eval_file_replaces_the_test_split(tiny_model, data_root: Path, tmp_path: Path) -> None:
    model, tok = tiny_model
    rows = [("q1", "How do I learn Python?", "What is the best way to learn Python?", "1.0"),
            ("q2", "Why is the sky blue?", "How tall is Everest?", "0.0"),
            ("q3", "What is love?", "What is love?", "1.0"),
            ("q4", "Where is Paris?", "Who wrote Hamlet?", "0.0"),
            ("q5", "How old is the moon?", "What is the age of the moon?", "1.0")]
    path = tmp_path / "pairs.tsv"
    path.write_text("\tid\tsentence1\tsentence2\tis_duplicate\n"
                    + "".join(f"{i}\t{pid}\t{a}\t{b}\t{y}\n" for i, (pid, a, b, y) in enumerate(rows)))
    task = make_task("paraphrase", data_root, tok, eval_file=str(path))
    result = task.evaluate(model, split="test")
    assert result["n"] == 5
    labels = [p.label for p in task.pairs("test")]
    assert labels == [1, 0, 1, 0, 1]
    # the majority class comes from the train split (label 0) and is scored on the file
    assert task.baselines(split="test")["majority_accuracy"] == pytest.approx(2 / 5)
    assert len(task.pairs("dev")) == 1762  # other splits are untouched


# ---------------------------------------------------------------------- sonnet


@pytest.fixture
def sonnet_task(tiny_model, data_root: Path) -> SonnetTask:
    return SonnetTask(data_root, tiny_model[1], generation=GenerationSettings(max_new_tokens=40))


def test_sonnet_sft_examples(sonnet_task: SonnetTask, tiny_model) -> None:
    eos = tiny_model[1].eos_token_id
    examples = sonnet_task.sft_examples("train")
    assert len(examples) == 131
    for ex, sonnet in zip(examples, sonnet_task.train_sonnets):
        assert ex.prompt_ids == (eos,)  # BOS (GPT-2 style: the EOS id)
        assert ex.completion_ids[-1] == eos and ex.completion_ids[-2] != eos  # one EOS, not two
        assert ex.completion_ids[:-1] == sonnet_task.encode(sonnet.text)
    with pytest.raises(UsageError):
        sonnet_task.sft_examples("dev")


def test_held_out_test_falls_back_to_dev(sonnet_task: SonnetTask) -> None:
    test, dev = sonnet_task.held_out("test"), sonnet_task.held_out("dev")
    assert len(test) == len(dev) == 12
    assert test == dev
    assert all(len(h.prompt_lines) == 3 and len(h.true_lines) == 14 for h in dev)
    with pytest.raises(UsageError, match="dev"):
        sonnet_task.held_out("holdout2")


def test_generate_is_seeded(sonnet_task: SonnetTask, tiny_model) -> None:
    model = tiny_model[0]
    prompts = [h.prompt for h in sonnet_task.held_out("dev")[:2]]
    first = sonnet_task.generate(model, prompts, seed=3)
    again = sonnet_task.generate(model, prompts, seed=3)
    other = sonnet_task.generate(model, prompts, seed=4)
    assert first == again
    assert first != other
    for prompt, out in zip(prompts, first):
        assert out.startswith(prompt + "\n")
        assert len(out) > len(prompt) + 1


def test_continuation_nll(sonnet_task: SonnetTask, tiny_model) -> None:
    nll = sonnet_task.continuation_nll(tiny_model[0], sonnet_task.held_out("dev")[:4], batch_size=3)
    assert math.isfinite(nll) and 0 < nll < 20


def test_sonnet_calibration_baselines(sonnet_task: SonnetTask) -> None:
    base = sonnet_task.baselines(split="dev", seed=0)
    assert 20 < base["prompt_only_chrf"] < 30
    assert 36 < base["random_sonnet_chrf"] < 46


def test_custom_prompts_need_references(tiny_model, data_root: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("1\na\nb\nc\n")
    with pytest.raises(UsageError, match="--references"):
        SonnetTask(data_root, tiny_model[1], prompts_file=prompts)
    with pytest.raises(UsageError, match="--prompts"):
        make_task("sonnet", data_root, tiny_model[1], references=str(prompts))


def test_custom_prompts_and_references(tiny_model, data_root: Path, tmp_path: Path) -> None:
    prompts, refs = tmp_path / "p.txt", tmp_path / "r.txt"
    prompts.write_text("7\nline one\nline two\nline three\n")
    refs.write_text("7\nline one\nline two\nline three\nline four\nline five\n")
    task = make_task("sonnet", data_root, tiny_model[1], prompts=str(prompts), references=str(refs))
    items = task.held_out("test")
    assert [h.number for h in items] == [7]
    assert items[0].continuation_lines == ("line four", "line five")
