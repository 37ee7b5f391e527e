"""The study's seven questions (STUDY.md): each a difference, its interval, and a verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import metrics as task_metrics
from .results import PRIMARY, Record, by_condition, label, with_axes
from .stats import Claim, Interval, mean_at, paired_bootstrap, paired_t_interval, verdict

CLAIMS = {
    ("Q1", "paraphrase"): Claim("DPO after SFT adds a small gain (89.87% -> 90.05% accuracy)", "positive"),
    ("Q1", "sonnet"): Claim("DPO hardly helps on sonnets (within 1 chrF)", "none", 1.0),
    ("Q2", "paraphrase"): Claim("DPO alone matches SFT (within 1 accuracy point)", "none", 0.01),
    ("Q3", "paraphrase"): Claim("FFT beats LoRA at matched depth", "positive"),
    ("Q3", "sonnet"): Claim("FFT beats LoRA at matched depth", "positive"),
    ("Q4", "time"): Claim("LoRA does not reduce wall-clock per step (ratio within 1 +- 0.1)", "none", 0.1),
    ("Q6", "paraphrase"): Claim("more data beats fewer examples (largest - smallest fraction > 0)", "positive"),
    ("Q6", "sonnet"): Claim("more data beats fewer examples (largest - smallest fraction > 0)", "positive"),
    ("Q7", "sonnet"): Claim("few unique prompts per pair (many-per-prompt) collapse: worse than sampled",
                            "negative"),
}


@dataclass(frozen=True)
class Answer:
    """One compared pair of conditions for one question."""

    question: str
    task: str
    comparison: str
    metric: str
    interval: Interval
    seed_interval: Interval | None
    claim: Claim | None
    one_class: bool = False
    """A side predicts one class for every test example in every seed (the majority-class baseline)."""

    @property
    def verdict(self) -> str:
        if self.one_class and self.claim:
            return "degenerate"
        return verdict(self.interval, self.claim) if self.claim else "no stated claim"


def predicts_one_class(group: list[Record]) -> bool:
    """Paraphrase runs that answer `yes` always or `no` always, in every seed: no comparison says
    anything about them (two such conditions 'match' exactly)."""
    return all(r.task == "paraphrase" and r.metrics.get("test", {}).get("predicted_yes") in (0.0, 1.0)
               for r in group)


def _seed_values(group: list[Record], metric: str) -> dict[int, float]:
    return {r.seed: r.test(metric) for r in group}


def compare(question: str, a: list[Record], b: list[Record], comparison: str, claim: Claim | None,
            metric: str | None = None) -> Answer | None:
    """Difference a - b of the task's metric, paired by seed: bootstrap where per-example outputs exist."""
    task = a[0].task
    metric = metric or PRIMARY[task]
    va, vb = _seed_values(a, metric), _seed_values(b, metric)
    if not set(va) & set(vb):
        return None
    seed_interval = paired_t_interval(va, vb)
    interval = _bootstrap(a, b, metric) or seed_interval
    return Answer(question, task, comparison, metric, interval, seed_interval, claim,
                  one_class=predicts_one_class(a) or predicts_one_class(b))


def _bootstrap(a: list[Record], b: list[Record], metric: str) -> Interval | None:
    oa = {r.seed: r.outputs() for r in a}
    ob = {r.seed: r.outputs() for r in b}
    seeds = [s for s in set(oa) & set(ob) if oa[s] and ob[s]]
    if not seeds:
        return None
    oa, ob = {s: oa[s] for s in seeds}, {s: ob[s] for s in seeds}
    if metric == "accuracy":
        n = len(oa[seeds[0]]["correct"])
        return paired_bootstrap({s: o["correct"] for s, o in oa.items()}, {s: o["correct"] for s, o in ob.items()},
                                mean_at, n)
    if metric == "chrf":
        n = len(oa[seeds[0]]["generations"])
        sa = {s: task_metrics.chrf_statistics(o["generations"], o["references"]) for s, o in oa.items()}
        sb = {s: task_metrics.chrf_statistics(o["generations"], o["references"]) for s, o in ob.items()}
        return paired_bootstrap(sa, sb, lambda rows, idx: task_metrics.chrf_from_statistics([rows[i] for i in idx]),
                                n, resamples=1000)
    return None


def answer_all(records: list[Record]) -> list[Answer]:
    """Every answer the grid allows; questions whose conditions are absent give none."""
    answers: list[Answer] = []
    for task in ("paraphrase", "sonnet"):
        groups = by_condition(records, task)
        for cond, group in groups.items():
            axes = dict(zip(("task", "regime", "params"), cond[:3]))
            if axes["regime"] == "sft-dpo":
                sft = groups.get(with_axes(cond, regime="sft", handoff_epoch=None, pairs=None, loss=None))
                if sft:
                    answers.append(compare("Q1", group, sft, f"{label(cond)} - {label(sft[0].condition)}",
                                           CLAIMS.get(("Q1", task))))
            if axes["regime"] == "dpo":
                sft = groups.get(with_axes(cond, regime="sft", pairs=None, loss=None))
                if sft:
                    answers.append(compare("Q2", group, sft, f"{label(cond)} - {label(sft[0].condition)}",
                                           CLAIMS.get(("Q2", task))))
            if axes["params"] == "lora":
                fft = groups.get(with_axes(cond, params="fft", lora_rank=None))
                if fft:
                    answers.append(compare("Q3", fft, group, f"{label(fft[0].condition)} - {label(cond)}",
                                           CLAIMS.get(("Q3", task))))
        answers += _handoff_answers(groups) + _data_answers(groups, task) + _pairs_answers(groups, task)
    return [a for a in answers if a is not None]


def _handoff_answers(groups: dict) -> list[Answer | None]:
    out = []
    handoffs: dict[tuple, dict] = {}
    for cond, group in groups.items():
        if cond[1] == "sft-dpo" and cond[4]:
            handoffs.setdefault(with_axes(cond, handoff_epoch=None), {})[cond[4]] = group
    for base, by_epoch in handoffs.items():
        if len(by_epoch) >= 2:
            early, late = min(by_epoch), max(by_epoch)
            out.append(compare("Q5", by_epoch[late], by_epoch[early],
                               f"handoff at epoch {late} - at epoch {early} ({label(base)})", None))
    return out


def _data_answers(groups: dict, task: str) -> list[Answer | None]:
    out = []
    sizes: dict[tuple, dict] = {}
    for cond, group in groups.items():
        if cond[5] is not None:
            sizes.setdefault(with_axes(cond, train_size=None), {})[cond[5]] = group
    for base, by_size in sizes.items():
        if len(by_size) >= 2:
            small, large = min(by_size), max(by_size)
            out.append(compare("Q6", by_size[large], by_size[small],
                               f"data {large:g} - data {small:g} ({label(base)})", CLAIMS.get(("Q6", task))))
    return out


def _pairs_answers(groups: dict, task: str) -> list[Answer | None]:
    out = []
    for cond, group in groups.items():
        if cond[6] == "many-per-prompt":
            sampled = groups.get(with_axes(cond, pairs="sampled"))
            if sampled:
                out.append(compare("Q7", group, sampled, f"{label(cond)} - {label(sampled[0].condition)}",
                                   CLAIMS.get(("Q7", task))))
    return out


def cost_ratios(records: list[Record]) -> list[dict]:
    """Q4: LoRA / FFT ratios of cost per matched condition, mean and t-interval over seeds."""
    from .stats import t_interval

    rows = []
    for task in ("paraphrase", "sonnet"):
        groups = by_condition(records, task)
        for cond, group in groups.items():
            if cond[2] != "lora":
                continue
            fft = {r.seed: r for r in groups.get(with_axes(cond, params="fft", lora_rank=None), [])}
            pairs = [(r, fft[r.seed]) for r in group if r.seed in fft]
            if not pairs:
                continue
            row = {"task": task, "comparison": f"{label(cond)} / {label(pairs[0][1].condition)}"}
            for key in ("seconds_per_step", "train_seconds", "peak_memory_mb", "trainable_params", "flops"):
                ratios = [lo.metrics[key] / hi.metrics[key] for lo, hi in pairs if hi.metrics.get(key)]
                if ratios:
                    row[key] = t_interval(ratios)
            rows.append(row)
    return rows


def time_answer(row: dict) -> Answer | None:
    """Q4's verdict from one cost-ratio row: seconds per step, LoRA / FFT (shifted by 1)."""
    iv = row.get("seconds_per_step")
    if iv is None:
        return None
    shifted = Interval(iv.mean - 1, iv.low - 1, iv.high - 1, iv.n, iv.kind)
    return Answer("Q4", row["task"], row["comparison"] + " seconds per step, minus 1", "time ratio - 1",
                  shifted, None, CLAIMS[("Q4", "time")])


def is_finite(iv: Interval) -> bool:
    return math.isfinite(iv.low) and math.isfinite(iv.high)
