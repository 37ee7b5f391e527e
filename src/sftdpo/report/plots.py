"""The report's figures (PNG): metric by condition, dev curves, DPO rewards, data scale."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import PRIMARY, Record, by_condition, label  # noqa: E402
from .stats import t_interval  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_by_condition(records: list[Record], task: str, path: Path, baselines: dict[str, float]) -> Path | None:
    """Bars: the task's primary test metric per condition, mean and 95% t-interval over seeds."""
    groups = by_condition(records, task)
    if not groups:
        return None
    metric = PRIMARY[task]
    names, means, errs = [], [], []
    for cond, group in groups.items():
        iv = t_interval([r.test(metric) for r in group])
        names.append(label(cond))
        means.append(iv.mean)
        errs.append(iv.half_width if math.isfinite(iv.half_width) else 0)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4.2))
    ax.bar(range(len(names)), means, yerr=errs, capsize=4, color="#4c72b0", label="model (mean over seeds)")
    for (name, value), style in zip(baselines.items(), ("--", ":", "-.")):
        ax.axhline(value, linestyle=style, color="dimgray", linewidth=1.2, label=f"{name} baseline {value:.3g}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{task}: test {metric} by condition (95% t-interval over seeds)", fontsize=10)
    low = min([m - e for m, e in zip(means, errs)] + list(baselines.values()))
    high = max([m + e for m, e in zip(means, errs)] + list(baselines.values()))
    pad = 0.15 * (high - low) + 1e-9
    ax.set_ylim(low - pad, high + pad)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def dev_curves(records: list[Record], task: str, path: Path) -> Path | None:
    """Dev metric after each SFT epoch, FFT vs each LoRA rank (mean over seeds)."""
    groups = {c: g for c, g in by_condition(records, task).items() if c[1] == "sft"}
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    metric = None
    for cond, group in groups.items():
        per_epoch: dict[int, list[float]] = {}
        for r in group:
            for point in r.curve:
                metric = metric or next(k for k in ("accuracy", "nll") if k in point)
                per_epoch.setdefault(point["epoch"], []).append(point[metric])
        if per_epoch:
            epochs = sorted(per_epoch)
            ax.plot(epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs], marker="o", label=label(cond))
    if metric is None:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"{task}: SFT dev curves, FFT vs LoRA (mean over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def dpo_dynamics(records: list[Record], task: str, path: Path) -> Path | None:
    """Reward margins and chosen/rejected log-probs over DPO steps, one line per condition."""
    groups = {c: g for c, g in by_condition(records, task).items() if c[1] in ("dpo", "sft-dpo")}
    if not groups:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (cond, group) in enumerate(groups.items()):
        rows = [row for row in group[0].log() if row.get("stage") == "dpo"]
        if not rows:
            continue
        steps = [row["step"] for row in rows]
        color = f"C{i % 10}"
        ax1.plot(steps, [row["rewards/margins"] for row in rows], color=color, label=label(cond))
        ax2.plot(steps, [row.get("logratios/chosen", math.nan) for row in rows], color=color,
                 label=f"{label(cond)} chosen")
        ax2.plot(steps, [row.get("logratios/rejected", math.nan) for row in rows], color=color, linestyle="--",
                 label=f"{label(cond)} rejected")
    ax1.set_title(f"{task}: DPO reward margin (first seed)")
    ax1.set_xlabel("DPO step")
    ax1.set_ylabel("beta * (chosen - rejected log-ratio)")
    ax2.set_title("policy - reference log-prob: chosen (solid), rejected (dashed)")
    ax2.set_xlabel("DPO step")
    ax2.set_ylabel("sequence log-ratio (nats)")
    ax2.axhline(0, color="grey", linewidth=0.8)
    ax1.legend(fontsize=7)
    return _save(fig, path)


def data_scale(records: list[Record], task: str, path: Path) -> Path | None:
    """Test metric against the training-data fraction, one line per regime x params."""
    lines: dict[str, dict[float, list[float]]] = {}
    metric = PRIMARY[task]
    for cond, group in by_condition(records, task).items():
        if cond[5] is None:
            continue
        key = f"{cond[1]} {cond[2]}" + (f" r{cond[3]}" if cond[3] else "")
        lines.setdefault(key, {}).setdefault(cond[5], []).extend(r.test(metric) for r in group)
    lines = {k: v for k, v in lines.items() if len(v) >= 2}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, by_size in lines.items():
        sizes = sorted(by_size)
        ax.plot(sizes, [sum(by_size[s]) / len(by_size[s]) for s in sizes], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("training data (fraction or count)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{task}: data scale")
    ax.legend(fontsize=8)
    return _save(fig, path)
