"""The study's results as flat records: one per finished cell, with its run directory's extras."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json, read_jsonl
from ..study.store import Store

CONDITION_AXES = ("task", "regime", "params", "lora_rank", "handoff_epoch", "train_size", "pairs", "loss")
PRIMARY = {"paraphrase": "accuracy", "sonnet": "chrf"}
TASK_METRICS = {"paraphrase": ("accuracy", "f1"), "sonnet": ("chrf", "nll", "distinct_2", "repetition")}
LOWER_IS_BETTER = {"nll", "repetition"}


@dataclass
class Record:
    """A finished cell: its axes, test metrics, cost, and paths to its logs."""

    key: str
    axes: dict
    metrics: dict
    run_dir: Path
    curve: list = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.axes["task"]

    @property
    def seed(self) -> int:
        return self.axes["seed"]

    @property
    def condition(self) -> tuple:
        return tuple(self.axes.get(a) for a in CONDITION_AXES)

    def test(self, name: str) -> float:
        return float(self.metrics["test"][name])

    def outputs(self) -> dict | None:
        """Per-example test outputs: {"correct": [0/1...]} or {"generations": [...], "references": [...]}."""
        if self.task == "paraphrase":
            path = self.run_dir / "predictions.json"
            if not path.exists():
                return None
            test = read_json(path)["test"]
            return {"correct": [int(p == y) for p, y in zip(test["predictions"], test["labels"])],
                    "predictions": test["predictions"], "labels": test["labels"]}
        rows = [r for r in read_jsonl(self.run_dir / "generations.jsonl") if r.get("sample", 0) == 0]
        if not rows or "reference" not in rows[0]:
            return None
        return {"generations": [r["text"] for r in rows], "references": [r["reference"] for r in rows]}

    def log(self) -> list[dict]:
        return read_jsonl(self.run_dir / "log.jsonl")


def load_records(study_dir: Path) -> tuple[list[Record], dict[str, int]]:
    """Finished cells of a study, and the store's counts per state (to mark partial reports)."""
    store = Store(Path(study_dir) / "study.sqlite")
    records = [Record(r.key, r.axes, r.metrics, Path(study_dir) / "runs" / r.key, r.curve or [])
               for r in store.rows() if r.status == "done" and r.metrics]
    counts = store.counts()
    store.close()
    return records, counts


def label(condition: tuple) -> str:
    """A short readable name of a condition: 'sft-dpo lora r8 h3 n0.1 shuffled ipo'."""
    axes = dict(zip(CONDITION_AXES, condition))
    parts = [axes["regime"], axes["params"]]
    if axes["lora_rank"] is not None:
        parts.append(f"r{axes['lora_rank']}")
    if axes["handoff_epoch"]:
        parts.append(f"handoff {axes['handoff_epoch']}")
    if axes["train_size"] is not None:
        parts.append(f"data {axes['train_size']:g}")
    if axes["pairs"] is not None:
        parts.append(str(axes["pairs"]))
    if axes["loss"] not in (None, "sigmoid"):
        parts.append(str(axes["loss"]))
    return " ".join(parts)


def by_condition(records: list[Record], task: str) -> dict[tuple, list[Record]]:
    """The task's records grouped by condition, in first-seen (grid) order."""
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        if r.task == task:
            groups.setdefault(r.condition, []).append(r)
    return groups


def with_axes(condition: tuple, **changes) -> tuple:
    """The same condition with some axes changed."""
    axes = dict(zip(CONDITION_AXES, condition))
    axes.update(changes)
    return tuple(axes[a] for a in CONDITION_AXES)
