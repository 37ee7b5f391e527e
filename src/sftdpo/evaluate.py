"""Task metrics of a model: the evaluation every command and the study reuse."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .models import load_model_and_tokenizer, resolve_model
from .tasks import Task, get_task

log = logging.getLogger(__name__)


def default_device() -> str:
    """Where evaluation runs: the (current) CUDA GPU if there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    model.to(default_device())
    results = {}
    for name in tasks:
        task = make_task(name, data_root, tokenizer, eval_file, prompts, references)
        results[name] = evaluate_task(task, model, split, seed, samples)
        log.info("%s %s: %s", name, split, results[name])
    return results


def evaluate_checkpoint(model_dir: Path, cfg, data_root: Path, run_dir: Path | None = None,
                        split: str | None = None, eval_file: str | None = None, prompts: str | None = None,
                        references: str | None = None, samples: int | None = None, device=None) -> dict:
    """A trained model's metrics: {"dev": ..., "test": ..., "baselines": ...} (only `split` if given).

    Per-example outputs (predictions.json, generations.jsonl) are written when run_dir is given.
    The model runs on `device` (default: the CUDA GPU if there is one, else the CPU).
    """
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    model.to(device or default_device())
    task = make_task(cfg.task, data_root, tokenizer, eval_file, prompts, references)
    samples = samples or cfg.data.eval_samples
    splits = [split] if split else (["dev", "test"] if cfg.task == "paraphrase" else ["test"])
    out: dict = {}
    for name in splits:
        start = time.perf_counter()
        limit = cfg.data.dev_size if name == "dev" else cfg.data.test_size
        out[name] = task.evaluate(model, split=name, seed=cfg.seed, samples=samples, limit=limit or None)
        out[name]["eval_seconds"] = round(time.perf_counter() - start, 2)
        if run_dir is not None:
            save_outputs(Path(run_dir), name, task.last_outputs)
    out["baselines"] = task.baselines(split=splits[-1], seed=cfg.seed)
    return out


def save_outputs(run_dir: Path, split: str, outputs: dict) -> None:
    """Per-example outputs for paired bootstraps and inspection: predictions.json (paraphrase:
    predictions and labels per split) or generations.jsonl (sonnet: one row per generated poem)."""
    from .io import atomic_write_json, atomic_write_text, read_json

    if "generations" in outputs:
        rows = [{"sample": s, "text": g, "reference": r}
                for s, g, r in zip(outputs["sample"], outputs["generations"], outputs["references"])]
        atomic_write_text(run_dir / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = run_dir / "predictions.json"
        saved = read_json(path) if path.exists() else {}
        atomic_write_json(path, {**saved, split: outputs})


def evaluate_run(run_dir: Path, data_root: Path, split: str = "test", **overrides) -> dict:
    """Metrics of a finished run's checkpoint on a split (or on --eval-file / --prompts data)."""
    from .config import TrainConfig, from_dict, read_yaml
    from .errors import UsageError

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UsageError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of a `sftdpo train`")
    if not (run_dir / "checkpoint" / "config.json").exists():
        raise UsageError(f"{run_dir} has no checkpoint yet; finish it with `sftdpo train ... --resume`")
    cfg = from_dict(TrainConfig, read_yaml(run_dir / "config.yaml"))
    return evaluate_checkpoint(run_dir / "checkpoint", cfg, data_root, None, split, **overrides)
