"""Intervals and verdicts against hand-computed values."""

import math

import pytest

from sftdpo.report.stats import (Claim, Interval, mean_at, paired_bootstrap, paired_t_interval, percentile,
                                 t_interval, verdict)


def test_t_interval_hand_worked():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, df=2) = 4.303 -> half-width 4.303 / sqrt(3) = 2.48434
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0
    assert iv.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert (iv.low, iv.high) == pytest.approx((2 - 2.48434, 2 + 2.48434), abs=1e-4)


def test_two_seeds_give_a_wide_interval_and_one_seed_an_infinite_one():
    # 0.70, 0.72: mean 0.71, sd 0.014142, t(df=1) = 12.706 -> half 12.706 * 0.014142 / sqrt(2) = 0.12706
    iv = t_interval([0.70, 0.72])
    assert iv.half_width == pytest.approx(0.12706, abs=1e-5)
    assert math.isinf(t_interval([0.7]).half_width)


def test_paired_t_uses_common_seeds_only():
    # differences on seeds 1, 2: 0.1 and 0.3 -> mean 0.2; seed 3 has no partner
    iv = paired_t_interval({1: 0.6, 2: 0.8, 3: 0.5}, {1: 0.5, 2: 0.5})
    assert iv.mean == pytest.approx(0.2) and iv.n == 2


def test_percentile_linear_interpolation():
    assert percentile([0, 10, 20, 30], 0.5) == 15
    assert percentile([0, 10, 20, 30], 0.0) == 0 and percentile([0, 10, 20, 30], 1.0) == 30


def test_paired_bootstrap_identical_conditions_is_zero():
    correct = {1: [1, 0, 1, 1, 0], 2: [0, 0, 1, 1, 1]}
    iv = paired_bootstrap(correct, correct, mean_at, 5, resamples=200)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_constant_shift():
    # condition a is right on every example, b on none: the difference is 1 whatever is resampled
    a = {1: [1] * 20, 2: [1] * 20}
    b = {1: [0] * 20, 2: [0] * 20}
    iv = paired_bootstrap(a, b, mean_at, 20, resamples=200)
    assert (iv.mean, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_is_wider_than_zero_for_noisy_data_and_deterministic():
    a = {s: [(i * 7 + s) % 3 == 0 for i in range(50)] for s in (1, 2, 3)}
    b = {s: [(i * 5 + s) % 2 == 0 for i in range(50)] for s in (1, 2, 3)}
    one = paired_bootstrap(a, b, mean_at, 50, resamples=300, seed=4)
    assert one.low < one.mean < one.high
    assert one == paired_bootstrap(a, b, mean_at, 50, resamples=300, seed=4)


@pytest.mark.parametrize("low,high,direction,expected", [
    (0.01, 0.03, "positive", "reproduced"),
    (-0.03, -0.01, "positive", "contradicted"),
    (-0.01, 0.02, "positive", "inconclusive"),
    (-0.03, -0.01, "negative", "reproduced"),
])
def test_directional_verdicts(low, high, direction, expected):
    assert verdict(Interval(0, low, high, 3, "t"), Claim("c", direction)) == expected


@pytest.mark.parametrize("low,high,expected", [
    (-0.004, 0.006, "reproduced"),     # inside +-0.01: a match
    (0.02, 0.05, "contradicted"),      # wholly above the tolerance
    (-0.005, 0.03, "inconclusive"),    # straddles the tolerance
])
def test_match_verdicts(low, high, expected):
    assert verdict(Interval(0, low, high, 3, "t"), Claim("match", "none", 0.01)) == expected


def test_single_seed_is_inconclusive():
    assert verdict(t_interval([0.8]), Claim("c", "positive")) == "inconclusive"


def test_one_class_runs_get_a_degenerate_verdict(tmp_path):
    """Two conditions at the majority class 'match' exactly; the report must not call that reproduced."""
    from sftdpo.report.questions import compare
    from sftdpo.report.results import Record

    def rec(regime, seed, acc, yes):
        axes = {"task": "paraphrase", "regime": regime, "params": "fft", "seed": seed}
        return Record(f"{regime}-{seed}", axes, {"test": {"accuracy": acc, "predicted_yes": yes}}, tmp_path)

    claim = Claim("DPO alone matches SFT", "none", 0.01)
    flat = compare("Q2", [rec("dpo", s, 0.63, 0.0) for s in (1, 2)], [rec("sft", s, 0.63, 0.0) for s in (1, 2)],
                   "dpo - sft", claim)
    assert flat.one_class and flat.verdict == "degenerate"
    mixed = compare("Q2", [rec("dpo", s, 0.63, 0.0) for s in (1, 2)], [rec("sft", 1, 0.63, 0.2),
                                                                       rec("sft", 2, 0.64, 0.0)],
                    "dpo - sft", claim)
    assert mixed.one_class  # dpo always says "no"
    real = compare("Q2", [rec("dpo", 1, 0.70, 0.3), rec("dpo", 2, 0.71, 0.0)],
                   [rec("sft", 1, 0.70, 0.2), rec("sft", 2, 0.705, 0.25)], "dpo - sft", claim)
    assert not real.one_class and real.verdict != "degenerate"
