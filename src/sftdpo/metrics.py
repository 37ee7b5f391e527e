"""Task metrics as pure functions: labels/predictions or strings in, floats out."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Fraction of positions where prediction equals label."""
    _same_length(labels, predictions)
    return sum(int(y == p) for y, p in zip(labels, predictions)) / len(labels)


def f1_of_class(labels: Sequence[int], predictions: Sequence[int], cls: int) -> float:
    """F1 of one class: 2·TP / (2·TP + FP + FN); 0 when the class never occurs in either."""
    tp = sum(1 for y, p in zip(labels, predictions) if y == cls and p == cls)
    fp = sum(1 for y, p in zip(labels, predictions) if y != cls and p == cls)
    fn = sum(1 for y, p in zip(labels, predictions) if y == cls and p != cls)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(labels: Sequence[int], predictions: Sequence[int], classes: Sequence[int] = (0, 1)) -> float:
    """Unweighted mean of per-class F1 (scikit-learn's f1_score(average='macro'))."""
    _same_length(labels, predictions)
    return sum(f1_of_class(labels, predictions, c) for c in classes) / len(classes)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: char 6-grams, beta 2), 0-100."""
    import sacrebleu

    _same_length(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def chrf_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> list[list[int]]:
    """Per-item chrF n-gram statistics; summing any subset's rows and scoring them with
    chrf_from_statistics equals corpus chrF of that subset (for fast bootstraps)."""
    from sacrebleu.metrics import CHRF

    _same_length(hypotheses, references)
    return [list(map(int, row)) for row in CHRF()._extract_corpus_statistics(list(hypotheses), [list(references)])]


def chrf_from_statistics(rows: Sequence[Sequence[int]]) -> float:
    """Corpus chrF (0-100) from per-item statistics rows."""
    from sacrebleu.metrics import CHRF

    totals = [sum(col) for col in zip(*rows)]
    return float(CHRF()._compute_score_from_stats(totals).score)


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a word sequence."""
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams, over all texts."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(texts: Sequence[str], n: int = 4) -> float:
    """Mean seq-rep-n (Welleck et al. 2019): per text, 1 - unique n-grams / n-grams.

    0 means no n-gram repeats inside a text; values near 1 mean a loop (collapse).
    Texts shorter than n words count as 0.
    """
    if not texts:
        return 0.0
    scores = []
    for t in texts:
        grams = ngrams(t.split(), n)
        scores.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return sum(scores) / len(scores)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no examples to score")
