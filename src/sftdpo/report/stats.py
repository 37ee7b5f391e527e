"""Intervals and verdicts: pure functions of numbers, no I/O.

Two kinds of 95% interval are used, and every table says which one it shows:
- over seeds: Student t on the seed values (or on seed-paired differences);
- bootstrap: a paired, two-level bootstrap that resamples seeds and, within them, the test
  examples (every condition is scored on the same examples), so it carries both the
  seed-to-seed spread and the sampling noise of the test set.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% interval; `n` values behind it; `kind` says how it was made."""

    mean: float
    low: float
    high: float
    n: int
    kind: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (normal beyond 30)."""
    return T975[df - 1] if df <= 30 else 1.96


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% Student-t interval of the values; a single value has an infinite interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, "t over seeds")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t over seeds")


def paired_t_interval(a: dict, b: dict) -> Interval:
    """Interval of mean(a - b) over the keys (seeds) present in both."""
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("no common seeds")
    return t_interval([a[k] - b[k] for k in keys])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def paired_bootstrap(a: dict[int, Sequence], b: dict[int, Sequence],
                     metric: Callable[[Sequence, Sequence[int]], float], n_examples: int,
                     resamples: int = 1000, seed: int = 0) -> Interval:
    """Two-level paired bootstrap of mean over seeds of metric(a) - metric(b).

    a, b: per seed, whatever `metric(data, indices)` needs (e.g. per-example correctness);
    both conditions are scored on the same resampled indices. Seeds present in both are
    resampled with replacement, then the n_examples indices.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no common seeds")
    rng = random.Random(seed)
    point = sum(metric(a[s], range(n_examples)) - metric(b[s], range(n_examples)) for s in seeds) / len(seeds)
    stats = []
    for _ in range(resamples):
        picked = [rng.choice(seeds) for _ in seeds]
        idx = [rng.randrange(n_examples) for _ in range(n_examples)]
        stats.append(sum(metric(a[s], idx) - metric(b[s], idx) for s in picked) / len(picked))
    stats.sort()
    return Interval(point, percentile(stats, 0.025), percentile(stats, 0.975), len(seeds),
                    "bootstrap over seeds and test examples")


def mean_at(values: Sequence[float], indices: Sequence[int]) -> float:
    """Mean of the values at the indices (accuracy from per-example correctness)."""
    return sum(values[i] for i in indices) / len(indices)


@dataclass(frozen=True)
class Claim:
    """What the paper says about a difference: 'positive', 'negative' or 'none' (within tolerance)."""

    text: str
    direction: str
    tolerance: float = 0.0


def verdict(interval: Interval, claim: Claim) -> str:
    """reproduced / contradicted / inconclusive, comparing the interval with the claim.

    positive: reproduced if the interval is above 0, contradicted if below, else inconclusive.
    none: reproduced if the interval lies within +-tolerance, contradicted if it lies wholly
    outside it, else inconclusive.
    """
    if not math.isfinite(interval.low) or not math.isfinite(interval.high):
        return "inconclusive"
    if claim.direction == "positive":
        return "reproduced" if interval.low > 0 else "contradicted" if interval.high < 0 else "inconclusive"
    if claim.direction == "negative":
        return "reproduced" if interval.high < 0 else "contradicted" if interval.low > 0 else "inconclusive"
    tol = claim.tolerance
    if -tol <= interval.low and interval.high <= tol:
        return "reproduced"
    if interval.low > tol or interval.high < -tol:
        return "contradicted"
    return "inconclusive"
