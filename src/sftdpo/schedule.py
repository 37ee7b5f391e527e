"""Learning-rate schedule as a pure function of the step (plot it, test it)."""

from __future__ import annotations

import math


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warmup to peak over `warmup` steps, then cosine decay to floor*peak at step `total`.

    step counts from 0; during warmup lr = peak * (step + 1) / warmup.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
