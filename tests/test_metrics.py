import pytest

from sftdpo import metrics


def test_accuracy_hand_worked():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


def test_macro_f1_hand_worked():
    # labels 1,0,1,1 preds 1,1,1,0 -> class 1: tp=2 fp=1 fn=1 -> F1=4/6; class 0: tp=0 fp=1 fn=1 -> 0
    assert metrics.macro_f1([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx((4 / 6 + 0) / 2)


def test_macro_f1_matches_sklearn():
    import sklearn.metrics as sklearn  # in the dev extra: a missing install must fail, not skip
    y = [0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0]
    p = [0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0]
    assert metrics.macro_f1(y, p) == pytest.approx(sklearn.f1_score(y, p, average="macro"))


def test_macro_f1_majority_class_predictor():
    # always 0 on 3 zeros, 2 ones: class0 F1 = 2*3/(6+2)=0.75, class1 F1 = 0
    assert metrics.macro_f1([0, 0, 0, 1, 1], [0] * 5) == pytest.approx(0.375)


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError):
        metrics.accuracy([1], [1, 0])
    with pytest.raises(ValueError):
        metrics.accuracy([], [])


def test_chrf_identical_is_100_and_lower_otherwise():
    assert metrics.chrf(["shall I compare thee"], ["shall I compare thee"]) == pytest.approx(100.0)
    assert metrics.chrf(["a summer's day"], ["shall I compare thee"]) < 30


def test_distinct_2_hand_worked():
    # "a b a b" -> bigrams ab, ba, ab : 2 unique of 3
    assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert metrics.distinct_n(["x"], 2) == 0.0


def test_repetition_hand_worked():
    # "a b c d a b c d" -> 5 4-grams: abcd bcda cdab dabc abcd -> 4 unique -> rep = 1 - 4/5
    assert metrics.repetition(["a b c d a b c d"], 4) == pytest.approx(0.2)
    assert metrics.repetition(["one two three four five"], 4) == 0.0
