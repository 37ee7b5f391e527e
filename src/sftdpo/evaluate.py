"""Task metrics of a model: the evaluation every command and the study reuse."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .models import load_model_and_tokenizer, resolve_model
from .tasks import Task, get_task

log = logging.getLogger(__name__)


def make_task(name: str, data_root: Path, tokenizer, eval_file: str | None = None,
              prompts: str | None = None, references: str | None = None) -> Task:
    """A task instance, with the per-task evaluation-data overrides that apply to it."""
    if name == "paraphrase":
        return get_task(name)(data_root, tokenizer, eval_file=eval_file)
    if name == "sonnet":
        return get_task(name)(data_root, tokenizer, prompts_file=prompts, references_file=references)
    return get_task(name)(data_root, tokenizer)


def evaluate_task(task: Task, model, split: str = "test", seed: int = 0, samples: int = 1) -> dict:
    """The task's metrics on a split, its baselines beside them, and the evaluation wall-clock."""
    start = time.perf_counter()
    result = task.evaluate(model, split=split, seed=seed, samples=samples)
    result["eval_seconds"] = round(time.perf_counter() - start, 2)
    result.update(task.baselines(split=split, seed=seed))
    return result


def evaluate_model(model_ref: str, data_root: Path, tasks: list[str], split: str = "test", seed: int = 0,
                   samples: int = 1, eval_file: str | None = None, prompts: str | None = None,
                   references: str | None = None, trust_remote_code: bool = False,
                   progress: bool = True) -> dict[str, dict]:
    """Metrics of a model reference (builtin:SIZE, folder or hub name) on each named task."""
    model, tokenizer = load_model_and_tokenizer(resolve_model(model_ref, data_root, progress),
                                                trust_remote_code=trust_remote_code)
    results = {}
    for name in tasks:
        task = make_task(name, data_root, tokenizer, eval_file, prompts, references)
        results[name] = evaluate_task(task, model, split, seed, samples)
        log.info("%s %s: %s", name, split, results[name])
    return results
