"""The regimes as short recipes: sft, dpo, sft-dpo. Each stage: data -> model -> step -> loop.

Run directory: config.yaml, log.jsonl, curve.jsonl, metrics.json, checkpoint/ (merged HF model),
generations.jsonl (sonnets), stages/<stage>/ (resumable state, pairs, reference log-probs, the
stage's final model). A stage whose done.json exists is never rerun.

LoRA in sft-dpo: the SFT adapter is merged into the weights at the handoff, and DPO trains a
fresh adapter on the merged model; the reference is that merged model (the adapter disabled),
i.e. exactly the SFT policy, as DPO requires.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import TrainConfig, from_dict, read_yaml, save_yaml, to_dict
from .errors import UsageError
from .evaluate import make_task
from .io import atomic_write_json, read_json, read_jsonl, remove_partial_writes, rewrite_jsonl, tree_hash
from .loop import Loop, Selection
from .models import load_model_and_tokenizer, resolve_model
from .params import add_lora, flops_per_token, is_lora, merge_lora, parameter_counts, reference_context
from .preferences import pair_stats
from .resources import PeakMemory
from .steps import (collate_pairs, collate_sft, compute_reference_logps, live_reference, make_dpo_step,
                    pair_length, pair_logps, precomputed_reference, sft_step)

log = logging.getLogger(__name__)


def stages_of(cfg: TrainConfig) -> list[str]:
    return {"sft": ["sft"], "dpo": ["dpo"], "sft-dpo": ["sft", "dpo"]}[cfg.regime]


def subsample(items: list, size: float, seed: int) -> list:
    """A seeded subset: a fraction in (0, 1] or a count (> 1) of the items, in a fixed order."""
    n = len(items) if size == 1 else (max(1, round(size * len(items))) if size < 1 else min(len(items), int(size)))
    if n == len(items):
        return items
    g = torch.Generator().manual_seed(seed)
    return [items[i] for i in sorted(torch.randperm(len(items), generator=g)[:n].tolist())]


def saved_config(run_dir: Path) -> TrainConfig | None:
    """The config a run directory was started with, or None if it holds no run."""
    saved = Path(run_dir) / "config.yaml"
    return from_dict(TrainConfig, read_yaml(saved)) if saved.exists() else None


def prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Create the run dir, or check that a resumed one holds the same config."""
    old = saved_config(run_dir)
    if old is not None and not _started(run_dir):
        old = None  # an earlier attempt stopped before doing anything (bad data, missing model): start afresh
    if old is not None:
        if not resume:
            raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if to_dict(old) != to_dict(cfg):
            raise UsageError(f"{run_dir} holds a run with a different config; resume it with the same options "
                             "(see its config.yaml) or choose another --out")
        remove_partial_writes(run_dir)
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create run directory {run_dir}: {e.strerror}; choose another --out") from None
    save_yaml(cfg, run_dir / "config.yaml")


def _started(run_dir: Path) -> bool:
    """Whether a run directory holds anything besides its config.yaml (and empty folders)."""
    return any(p.is_file() and p.name != "config.yaml" for p in Path(run_dir).rglob("*"))


TRACKERS = ("tensorboard", "wandb", "mlflow")
MIXED_PRECISION = ("auto", "no", "bf16")


def resolve_mixed_precision(choice: str | None = None) -> str:
    """`no` or `bf16` for a --mixed-precision choice; None reads $ACCELERATE_MIXED_PRECISION (set by
    `accelerate launch --mixed_precision`), else auto: bf16 on a CUDA GPU that has it natively, else no.
    """
    import os

    value = (choice or os.environ.get("ACCELERATE_MIXED_PRECISION") or "auto").lower()
    if value == "fp16":
        raise UsageError("mixed precision fp16 is not supported (its loss scaling clashes with skipping "
                         "non-finite steps); use bf16, no or auto")
    if value not in MIXED_PRECISION:
        raise UsageError(f"unknown mixed precision '{value}'; choose {', '.join(MIXED_PRECISION)}")
    if value == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16" if cuda_bf16 else "no"
    return value


def make_accelerator(cfg: TrainConfig, run_dir: Path, report_to: str | None, mixed_precision: str | None = None):
    """An Accelerator (CPU unless CUDA is there; mixed precision per `resolve_mixed_precision`), with
    an experiment tracker if asked for (its trackers start in `start_tracking`, once the run dir exists).

    Under `accelerate launch` / torchrun it joins the process group the launcher set up.
    """
    from accelerate import Accelerator
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    kwargs = {"cpu": not torch.cuda.is_available(), "mixed_precision": resolve_mixed_precision(mixed_precision)}
    if not report_to or report_to == "none":
        return Accelerator(**kwargs)
    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                 "mlflow": is_mlflow_available}
    if report_to not in available:
        raise UsageError(f"unknown --report-to '{report_to}'; choose none, {', '.join(TRACKERS)}")
    if not available[report_to]():
        raise UsageError(f"--report-to {report_to} needs the {report_to} package: pip install {report_to}")
    return Accelerator(**kwargs, log_with=report_to, project_dir=str(run_dir / "tracking"))


def start_tracking(accelerator, cfg: TrainConfig, run_dir: Path) -> None:
    """Start the experiment trackers (main process only; accelerate skips the others)."""
    if accelerator.log_with:
        flat = {k: str(v) if isinstance(v, (list, tuple)) else v for k, v in _flatten(to_dict(cfg)).items()}
        accelerator.init_trackers(run_dir.name, config=flat)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def train(cfg: TrainConfig, run_dir: Path, data_root: Path, resume: bool = False, progress: bool = True,
          save_every: int = 0, report_to: str | None = None, mixed_precision: str | None = None,
          stage_cache: Path | None = None) -> dict:
    """Run a whole regime and its final evaluation; returns metrics.json's content.

    stage_cache: a folder where finished SFT stages are announced (see `sft_stage_key`): an sft-dpo
    run whose SFT stage equals one already trained (the study's sft cell, same seed) copies it
    instead of training it again. The result is identical; its cost is that of the original.

    report_to: 'tensorboard', 'wandb' or 'mlflow' sends every logged step there too
    (accelerate's trackers; TensorBoard files land in RUN_DIR/tracking).
    mixed_precision: auto | no | bf16 (default: $ACCELERATE_MIXED_PRECISION, else auto).

    Under `accelerate launch` (several processes) every process trains its share of each batch;
    only the main process writes the run directory and evaluates, and the others return {}.
    """
    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg, run_dir, report_to, mixed_precision)
    if accelerator.is_main_process:
        prepare_run_dir(cfg, run_dir, resume)
    accelerator.wait_for_everyone()
    if (run_dir / "metrics.json").exists():
        log.info("%s is already complete", run_dir)
        return read_json(run_dir / "metrics.json") if accelerator.is_main_process else {}
    start_tracking(accelerator, cfg, run_dir)
    memory = PeakMemory()
    with accelerator.main_process_first():  # a built-in backbone is built once, by the main process
        base = resolve_model(cfg.model, data_root, progress and accelerator.is_main_process)
    infos = []
    for index, stage in enumerate(stages_of(cfg)):
        stage_dir = run_dir / "stages" / stage
        shared = (Path(stage_cache) / f"{sft_stage_key(cfg, data_root)}.json"
                  if stage_cache and stage == "sft" and accelerator.num_processes == 1 else None)
        if not (stage_dir / "done.json").exists() and not (shared and reuse_stage(shared, stage_dir, run_dir)):
            run_stage(stage, index, base, cfg, stage_dir, run_dir, data_root, accelerator, progress, save_every)
        if shared and not shared.exists():
            atomic_write_json(shared, {"stage_dir": str(stage_dir.absolute())})
        infos.append(read_json(stage_dir / "done.json"))
        base = str(stage_dir / "model")
    if not accelerator.is_main_process:
        return {}
    rewrite_jsonl(run_dir / "curve.jsonl", [p for info in infos for p in info["curve"]])
    metrics = finish(cfg, run_dir, data_root, Path(base), infos, memory.peak_mb(), accelerator)
    if accelerator.trackers:
        accelerator.log({f"test/{k}": v for k, v in metrics["test"].items() if isinstance(v, float)})
        accelerator.end_training()
    return metrics


def sft_stage_key(cfg: TrainConfig, data_root: Path) -> str:
    """What a run's SFT stage depends on, hashed: everything but the regime and the DPO settings,
    with the epochs it really trains. The sft and sft-dpo runs of a seed share it when the handoff
    is the end of SFT (each stage seeds itself, so the DPO that follows is the same either way)."""
    tree = {k: v for k, v in to_dict(cfg).items() if k not in ("regime", "handoff_epoch", "dpo", "dpo_optim", "pairs")}
    tree.update(sft_epochs=cfg.sft_epochs_run, data_root=str(Path(data_root).absolute()))
    return tree_hash(tree)


def reuse_stage(announcement: Path, stage_dir: Path, run_dir: Path) -> bool:
    """Copy a finished stage announced in `announcement` into stage_dir (model files hard-linked
    where possible) with its log lines; False if there is none or it has gone."""
    if not announcement.exists():
        return False
    source = Path(read_json(announcement)["stage_dir"])
    if not (source / "done.json").exists() or not (source / "model").is_dir():
        return False
    tmp = stage_dir.with_name(stage_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(source / "model", tmp / "model", copy_function=_link_or_copy)
    info = read_json(source / "done.json")
    atomic_write_json(tmp / "done.json", {**info, "reused_from": source.parent.parent.name})
    source_log, own_log = source.parent.parent / "log.jsonl", run_dir / "log.jsonl"
    if source_log.exists():  # rewritten whole, so a copy interrupted and redone never doubles a line
        rows = read_jsonl(own_log) if own_log.exists() else []
        rewrite_jsonl(own_log, [r for r in rows if r.get("stage") != stage_dir.name]
                      + [r for r in read_jsonl(source_log) if r.get("stage") == stage_dir.name])
    shutil.rmtree(stage_dir, ignore_errors=True)
    tmp.rename(stage_dir)
    log.info("%s: reused the %s stage of %s", run_dir.name, stage_dir.name, source.parent.parent.name)
    return True


def _link_or_copy(src: str, dst: str) -> None:
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_stage(stage: str, index: int, base: str, cfg: TrainConfig, stage_dir: Path, run_dir: Path,
              data_root: Path, accelerator, progress: bool, save_every: int) -> None:
    """One SFT or DPO stage from the model in `base`; writes stage_dir/model and done.json."""
    torch.manual_seed(cfg.seed + index)
    model, tokenizer = load_model_and_tokenizer(base, trust_remote_code=cfg.trust_remote_code)
    model.to(accelerator.device)
    task = make_task(cfg.task, data_root, tokenizer)
    if cfg.params == "lora":
        model = add_lora(model, cfg.lora, cfg.seed + index)
    counts = parameter_counts(model)
    stage_dir.mkdir(parents=True, exist_ok=True)
    optim = cfg.sft if stage == "sft" else cfg.dpo_optim
    extra: dict = {}
    if stage == "sft":
        examples = subsample(task.sft_examples("train", **_task_options(cfg)), cfg.data.train_size, cfg.seed)
        step, n = sft_step, len(examples)
        lengths = [len(e.prompt_ids) + len(e.completion_ids) for e in examples]
        collate = lambda idx: collate_sft([examples[i] for i in idx], tokenizer.pad_token_id, cfg.data.max_length)  # noqa: E731
    else:
        with accelerator.main_process_first():  # built (and cached) once, by the main process
            pairs = stage_pairs(task, cfg, stage_dir, model, progress and accelerator.is_main_process)
        step, extra = dpo_reference_step(cfg, model, pairs, tokenizer.pad_token_id, stage_dir, accelerator)
        extra["pairs"] = pair_stats(pairs)
        n = len(pairs)
        lengths = [pair_length(p) for p in pairs]
        collate = lambda idx: collate_pairs([pairs[i] for i in idx], tokenizer.pad_token_id,  # noqa: E731
                                            cfg.data.max_length, idx)
    loop = Loop(model=model, step_fn=step, collate=collate, n_examples=n, cfg=optim, seed=cfg.seed + index,
                stage_dir=stage_dir, log_path=run_dir / "log.jsonl", stage=stage, accelerator=accelerator,
                epochs=cfg.sft_epochs_run if stage == "sft" else None, evaluate=dev_evaluator(task, cfg),
                selection=Selection(task.metric, task.higher_is_better) if cfg.task == "paraphrase" else None,
                save_every=save_every, progress=progress, lengths=lengths)
    state = loop.run()
    if accelerator.is_main_process:
        final = merge_lora(loop.unwrapped)
        save_model_atomic(final, tokenizer, stage_dir / "model")
        atomic_write_json(stage_dir / "done.json", {
            "stage": stage, "examples": n, "steps": state.global_step, "epochs": state.epoch,
            "train_seconds": round(state.train_seconds, 2), "tokens": state.tokens,
            "skipped_steps": state.skipped_steps, "diverged": bool(state.diverged_step),
            "diverged_step": state.diverged_step, "best_epoch": state.best_epoch, "curve": state.curve,
            "flops": flops_per_token(final, cfg.params == "lora") * state.tokens, **counts, **extra})
    accelerator.wait_for_everyone()


def _task_options(cfg: TrainConfig) -> dict:
    return {"both_orders": cfg.data.both_orders} if cfg.task == "paraphrase" else {}


def stage_pairs(task, cfg: TrainConfig, stage_dir: Path, policy, progress: bool) -> list:
    """The stage's preference pairs, built once and cached in stage_dir/pairs.json."""
    from .tasks.base import PreferencePair

    cache = stage_dir / "pairs.json"
    if cache.exists():
        return [PreferencePair(*map(tuple, row)) for row in read_json(cache)]
    if cfg.task == "sonnet":
        pairs = task.preference_pairs("train", construction=cfg.pairs.construction, k=cfg.pairs.k,
                                      seed=cfg.seed, policy=policy, progress=progress)
    else:
        pairs = task.preference_pairs("train", **_task_options(cfg))
    pairs = subsample(pairs, cfg.data.train_size, cfg.seed)
    atomic_write_json(cache, [[list(p.prompt_ids), list(p.chosen_ids), list(p.rejected_ids)] for p in pairs])
    return pairs


def dpo_reference_step(cfg: TrainConfig, model, pairs, pad_id: int, stage_dir: Path, accelerator):
    """The DPO step and its reference: precomputed log-probs (cached) or a live reference model.

    Also the step-0 check: the policy equals the reference, so every margin is 0 (loss ln 2).
    Both run in the training precision (accelerator.autocast), so a bf16 policy meets a bf16 reference.
    Several processes: the main one computes and caches the log-probs of all pairs, the others read
    the cache (each looks up its own shard's pairs by index); the step-0 check runs on the main one.
    """
    ref_ctx = reference_context(model) if is_lora(model) or not cfg.dpo.precompute_ref_log_probs else None
    cache = stage_dir / "ref_logps.safetensors"
    if cfg.dpo.precompute_ref_log_probs:
        with accelerator.main_process_first():
            if cache.exists():
                saved = load_file(str(cache))
                chosen, rejected = saved["chosen"], saved["rejected"]
            else:
                with (ref_ctx() if ref_ctx else contextlib.nullcontext(model)) as ref, accelerator.autocast():
                    chosen, rejected = compute_reference_logps(ref, pairs, pad_id, cfg.data.max_length,
                                                               accelerator.device)
                tmp = cache.with_suffix(".tmp")
                save_file({"chosen": chosen, "rejected": rejected}, str(tmp))
                tmp.replace(cache)
        reference = precomputed_reference(chosen, rejected)
    else:
        reference = live_reference(ref_ctx)
    check = {}
    if accelerator.is_main_process:
        with accelerator.autocast():
            check = step0_check(model, pairs[:32], reference, cfg, pad_id, accelerator.device)
    return make_dpo_step(cfg.dpo, reference), {"step0_check": check}


@torch.no_grad()
def step0_check(model, pairs, reference, cfg: TrainConfig, pad_id: int, device) -> dict:
    """Policy vs reference before training: margins should be 0 and the sigmoid loss ln 2."""
    from .losses import dpo_loss

    was_training = model.training
    model.eval()
    batch = {k: v.to(device) for k, v in collate_pairs(pairs, pad_id, cfg.data.max_length).items()}
    pc, pr, _ = pair_logps(model, batch)
    rc, rr = reference(batch)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, cfg.dpo.beta, "sigmoid")
    model.train(was_training)
    result = {"loss": float(losses.mean()), "max_abs_reward": float(torch.cat([chosen_rewards, rejected_rewards]).abs().max())}
    if abs(result["loss"] - math.log(2)) > 1e-3 or result["max_abs_reward"] > 1e-3:
        log.warning("STEP-0 CHECK FAILED: policy differs from the reference before training (loss %.5f, "
                    "not ln 2 = 0.69315; max |reward| %.5f); the reference is not the starting policy",
                    result["loss"], result["max_abs_reward"])
    return result


def dev_evaluator(task, cfg: TrainConfig):
    """The per-epoch dev metric: paraphrase accuracy/F1 (on dev_size pairs), sonnet continuation NLL."""
    if cfg.task == "sonnet":
        items = task.held_out("dev")
        return lambda model: {"nll": task.continuation_nll(model, items)}
    return lambda model: {k: v for k, v in task.evaluate(model, "dev", limit=cfg.data.dev_size or None).items()
                          if k in ("accuracy", "f1")}


def save_model_atomic(model, tokenizer, target: Path) -> None:
    """save_pretrained (safetensors) into a temp folder, then rename it into place."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def finish(cfg: TrainConfig, run_dir: Path, data_root: Path, final_dir: Path, infos: list[dict],
           peak_mb: float, accelerator=None) -> dict:
    """Final evaluation on dev and test, checkpoint/, metrics.json (written last: it marks the run done)."""
    from .evaluate import evaluate_checkpoint

    start = time.perf_counter()
    results = evaluate_checkpoint(final_dir, cfg, data_root, run_dir,
                                  device=accelerator.device if accelerator is not None else None)
    eval_seconds = time.perf_counter() - start
    checkpoint = run_dir / "checkpoint"
    if not checkpoint.exists():
        shutil.copytree(final_dir, run_dir / "checkpoint.tmp", dirs_exist_ok=True)
        (run_dir / "checkpoint.tmp").rename(checkpoint)
    train_seconds = sum(i["train_seconds"] for i in infos)
    steps = sum(i["steps"] for i in infos)
    metrics = {"task": cfg.task, "regime": cfg.regime, "params": cfg.params, "seed": cfg.seed, **results,
               "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
               "steps": steps, "seconds_per_step": round(train_seconds / max(1, steps), 4),
               "tokens_per_s": round(sum(i["tokens"] for i in infos) / max(1e-9, train_seconds), 1),
               "peak_memory_mb": round(peak_mb, 1), "flops": sum(i["flops"] for i in infos),
               "trainable_params": infos[-1]["trainable_params"], "total_params": infos[-1]["total_params"],
               "trainable_fraction": infos[-1]["trainable_fraction"],
               "diverged": any(i.get("diverged", False) for i in infos),
               "skipped_steps": sum(i.get("skipped_steps", 0) for i in infos),
               **({"device": accelerator.device.type, "mixed_precision": str(accelerator.mixed_precision),
                   "num_processes": accelerator.num_processes} if accelerator is not None else {}),
               "stages": {i["stage"]: {k: v for k, v in i.items() if k != "curve"} for i in infos}}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics
