"""`sftdpo report DIR`: report.md, results.csv and plots/*.png from a study's store, any time."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..io import atomic_write_text
from . import plots
from .questions import answer_all, cost_ratios, time_answer
from .results import PRIMARY, TASK_METRICS, Record, by_condition, label, load_records
from .stats import Interval, t_interval

QUESTIONS = {
    "Q1": "Does DPO after SFT improve on SFT? (SFT->DPO - SFT)",
    "Q2": "Can DPO alone match SFT? (DPO - SFT)",
    "Q3": "FFT or LoRA at matched depth? (FFT - LoRA, per rank)",
    "Q4": "Is LoRA faster or lighter? (LoRA / FFT)",
    "Q5": "When to hand off from SFT to DPO? (late - early handoff)",
    "Q6": "Data scale vs epochs (largest - smallest data fraction)",
    "Q7": "Sonnet preference sets: which collapse? (many-per-prompt - sampled, and the signature)",
}
MISSING = {"Q5": "add two or more `handoff_epochs`", "Q6": "add two or more `train_sizes`",
           "Q7": "add `pairs: [sampled, many-per-prompt]` for sonnets"}
ANCHORS = {"paraphrase": "majority class (train split) {majority_accuracy:.3f} accuracy / {majority_f1:.3f} F1; "
                         "TF-IDF + logistic regression 0.75 / 0.73 (STUDY.md anchor on this data); paper, GPT-2 "
                         "124M: SFT 0.8987, SFT->DPO 0.9005",
           "sonnet": "prompt alone {prompt_only_chrf:.1f} chrF; prompt + lines 4-14 of a random training "
                     "sonnet {random_sonnet_chrf:.1f} chrF (a model below this learned the form, not the poem)"}


def fmt(iv: Interval, scale: float = 1.0, digits: int = 3) -> str:
    if not math.isfinite(iv.half_width):
        return f"{iv.mean * scale:.{digits}f} (1 seed)"
    return f"{iv.mean * scale:.{digits}f} ± {iv.half_width * scale:.{digits}f}"


def fmt_range(iv: Interval, digits: int = 4) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "— (1 seed)"
    return f"[{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def answers_section(records: list[Record]) -> str:
    answers = answer_all(records)
    costs = cost_ratios(records)
    answers += [a for a in (time_answer(row) for row in costs) if a]
    out = ["## Answers\n",
           "Differences are paired by seed. The interval is a two-level bootstrap over seeds and test "
           "examples (prompts for sonnets) where per-example outputs exist, otherwise Student t over the "
           "seed-paired differences; both are shown. A verdict is *inconclusive* when the interval allows "
           "both readings, and *degenerate* when a side answers one class for every test pair in every "
           "seed (it sits at the majority-class baseline, so the comparison says nothing).\n"]
    for q, title in QUESTIONS.items():
        out.append(f"### {q}. {title}\n")
        rows = [[a.task, a.comparison, a.metric, f"{a.interval.mean:+.4f}",
                 f"{fmt_range(a.interval)} ({a.interval.kind})",
                 fmt_range(a.seed_interval) if a.seed_interval else "—", a.claim.text if a.claim else "—",
                 f"**{a.verdict}**"] for a in answers if a.question == q]
        if rows:
            out.append(_table(["task", "comparison", "metric", "Δ", "95% interval", "t over seeds",
                               "paper's claim", "verdict"], rows))
        elif q not in ("Q4",):
            out.append(f"Not in this study's grid ({MISSING.get(q, 'the compared conditions are missing')}).\n")
        if q == "Q4" and costs:
            out.append(cost_ratio_table(costs))
        if q == "Q7":
            out.append(collapse_table(records))
    return "\n".join(out)


def cost_ratio_table(costs: list[dict]) -> str:
    keys = ["seconds_per_step", "train_seconds", "peak_memory_mb", "trainable_params", "flops"]
    rows = [[c["task"], c["comparison"]] + [fmt(c[k]) if k in c else "—" for k in keys] for c in costs]
    return ("LoRA / FFT ratios (mean ± 95% t-interval over seeds; below 1 = LoRA cheaper):\n\n"
            + _table(["task", "comparison", "s/step", "train s", "peak memory", "trainable params",
                      "FLOPs"], rows))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def collapse_table(records: list[Record]) -> str:
    """The collapse signature per sonnet DPO condition."""
    rows = []
    for cond, group in by_condition(records, "sonnet").items():
        if cond[1] not in ("dpo", "sft-dpo"):
            continue
        pairs = group[0].metrics.get("stages", {}).get("dpo", {}).get("pairs", {})
        dpo_rows = [r for r in group[0].log() if r.get("stage") == "dpo"]
        tail = dpo_rows[-max(1, len(dpo_rows) // 4):]  # the last quarter of the steps: less batch noise
        drift = _mean([r.get("logratios/chosen", float("nan")) for r in tail])
        margin = _mean([r["rewards/margins"] for r in tail])
        rows.append([label(cond), f"{pairs.get('unique_prompts_per_pair', float('nan')):.3f}",
                     f"{margin:+.3f}", f"{drift:+.2f}",
                     fmt(t_interval([r.test("chrf") for r in group]), digits=2),
                     fmt(t_interval([r.test("distinct_2") for r in group])),
                     fmt(t_interval([r.test("repetition") for r in group]))])
    if not rows:
        return ""
    return ("Collapse signature of the sonnet DPO runs (first seed for the log columns, averaged over the "
            "last quarter of its DPO steps): few unique prompts per pair, growing margins while the chosen "
            "answers' log-prob falls below the reference's, and repetition in samples.\n\n"
            + _table(["condition", "unique prompts / pair", "final margin", "chosen log-ratio to reference",
                      "chrF", "distinct-2", "repetition"], rows))


def task_section(records: list[Record], task: str, plot_names: list[str]) -> str:
    groups = by_condition(records, task)
    if not groups:
        return ""
    names = TASK_METRICS[task]
    rows = []
    for cond, group in groups.items():
        scale = 100 if task == "paraphrase" else 1
        rows.append([label(cond), len(group)] +
                    [fmt(t_interval([r.test(m) for r in group]), scale if m in ("accuracy", "f1") else 1,
                         2 if task == "paraphrase" or m == "chrf" else 3) for m in names])
    header = ["condition", "seeds"] + [f"{m} (%)" if task == "paraphrase" else m for m in names]
    baselines = records_baselines(records, task)
    anchors = ANCHORS[task].format(**baselines) if baselines else ""
    out = [f"## {task}: test metrics\n", "Mean ± 95% t-interval over seeds.\n", _table(header, rows),
           f"Anchors: {anchors}.\n" if anchors else ""]
    out += [f"![{name}](plots/{name})\n" for name in plot_names]
    return "\n".join(out)


def records_baselines(records: list[Record], task: str) -> dict:
    for r in records:
        if r.task == task and r.metrics.get("baselines"):
            return r.metrics["baselines"]
    return {}


def cost_section(records: list[Record]) -> str:
    rows = []
    for task in ("paraphrase", "sonnet"):
        for cond, group in by_condition(records, task).items():
            m = lambda k: t_interval([float(r.metrics[k]) for r in group])  # noqa: E731
            rows.append([task, label(cond), fmt(m("train_seconds"), digits=1), fmt(m("seconds_per_step")),
                         fmt(m("tokens_per_s"), digits=0), fmt(m("peak_memory_mb"), digits=0),
                         f"{group[0].metrics['trainable_params']:,} ({group[0].metrics['trainable_fraction']:.1%})",
                         f"{group[0].metrics['flops']:.2e}"])
    return "## Cost per run\n\n" + _table(["task", "condition", "train s", "s/step", "tokens/s", "peak MiB",
                                           "trainable params", "FLOPs"], rows)


def health_section(records: list[Record]) -> str:
    """Runs whose training diverged (loss far above its start) or skipped NaN/inf steps; '' if none."""
    diverged = [r.key for r in records if r.metrics.get("diverged")]
    skipped = [f"{r.key} ({r.metrics['skipped_steps']})" for r in records if r.metrics.get("skipped_steps")]
    lines = []
    if diverged:
        lines.append(f"**Diverged runs** (smoothed training loss over 3x its start; their metrics are in the "
                     f"tables, read them with care): {', '.join(diverged)}.")
    if skipped:
        lines.append(f"Runs that skipped steps with a NaN/inf loss or gradient (steps skipped): {', '.join(skipped)}.")
    return "\n\n".join(lines) + "\n" if lines else ""


def results_csv(records: list[Record]) -> str:
    out = io.StringIO()
    axes = ["task", "regime", "params", "lora_rank", "handoff_epoch", "train_size", "pairs", "loss", "seed"]
    values = ["accuracy", "f1", "chrf", "nll", "distinct_2", "repetition"]
    costs = ["train_seconds", "seconds_per_step", "tokens_per_s", "peak_memory_mb", "trainable_params", "flops",
             "diverged", "skipped_steps"]
    writer = csv.writer(out)
    writer.writerow(["key"] + axes + [f"test_{v}" for v in values] + costs)
    for r in records:
        test = r.metrics.get("test", {})
        writer.writerow([r.key] + [r.axes.get(a) for a in axes] + [test.get(v, "") for v in values]
                        + [r.metrics.get(c, "") for c in costs])
    return out.getvalue()


def build_report(study_dir: Path) -> Path:
    """Write report.md, results.csv and plots/ into study_dir; returns report.md's path."""
    study_dir = Path(study_dir)
    records, counts = load_records(study_dir)
    total = sum(counts.values())
    partial = counts["done"] < total
    plot_dir = study_dir / "plots"
    made: dict[str, list[str]] = {"paraphrase": [], "sonnet": []}
    for task in made:
        base = records_baselines(records, task)
        lines = ({"majority": base["majority_accuracy"]} if task == "paraphrase" and base else
                 {"random sonnet": base["random_sonnet_chrf"], "prompt only": base["prompt_only_chrf"]} if base else {})
        for name, fn in ((f"{task}_by_condition.png", lambda p: plots.metric_by_condition(records, task, p, lines)),
                         (f"{task}_dev_curves.png", lambda p: plots.dev_curves(records, task, p)),
                         (f"{task}_dpo_rewards.png", lambda p: plots.dpo_dynamics(records, task, p)),
                         (f"{task}_data_scale.png", lambda p: plots.data_scale(records, task, p))):
            if fn(plot_dir / name):
                made[task].append(name)
    status = (f"**Partial results: {counts['done']} of {total} cells done** "
              f"({counts['running']} running, {counts['pending']} pending, {counts['failed']} failed).\n"
              if partial else f"All {total} cells done.\n")
    text = "\n".join([f"# sftdpo study report: {study_dir.name}\n", status, *filter(None, [health_section(records)]),
                      answers_section(records),
                      task_section(records, "paraphrase", made["paraphrase"]),
                      task_section(records, "sonnet", made["sonnet"]),
                      cost_section(records) if records else ""])
    atomic_write_text(study_dir / "report.md", text)
    atomic_write_text(study_dir / "results.csv", results_csv(records))
    return study_dir / "report.md"


__all__ = ["build_report", "PRIMARY"]
