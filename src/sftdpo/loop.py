"""The one training loop: AdamW, warmup + cosine, clipping, accumulation, per-epoch evaluation,
best-checkpoint selection, and exact resume (the loop state, optimizer and RNG are saved at
optimizer-step boundaries; the data order is a pure function of seed and epoch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import OptimConfig
from .errors import SftdpoError
from .io import append_jsonl, read_jsonl, rewrite_jsonl, write_error
from .params import load_trainable_state, trainable_state
from .schedule import cosine_lr
from .steps import Batch, StepFn, count_tokens

log = logging.getLogger(__name__)
MAX_BAD_STEPS = 10
DIVERGENCE_FACTOR = 3.0
"""A stage has diverged once its smoothed training loss exceeds this many times its first loss."""
DIVERGENCE_FLOOR = 0.1
"""...or this many times DIVERGENCE_FLOOR, whichever is larger (a near-zero first loss is no yardstick)."""
LOSS_SMOOTHING = 0.9
"""Weight of the old value in the loss's exponential moving average."""


class Interrupted(SftdpoError):
    """The user asked the run to stop (Ctrl-C); its state was saved and it can be resumed."""

    exit_code = 130


class NumericalFault(SftdpoError):
    """Too many consecutive steps with a NaN/inf loss or gradient."""


@dataclass
class LoopState:
    """Where a stage stands; saved with every resumable checkpoint."""

    epoch: int = 0
    """Epochs completed."""
    step_in_epoch: int = 0
    """Optimizer steps completed in the current epoch."""
    global_step: int = 0
    """Optimizer steps completed in the stage."""
    train_seconds: float = 0.0
    """Training wall-clock so far, across resumes (evaluation excluded)."""
    tokens: int = 0
    """Real tokens processed so far."""
    skipped_steps: int = 0
    """Steps skipped for a non-finite loss or gradient."""
    bad_streak: int = 0
    """Consecutive skipped steps up to now (MAX_BAD_STEPS of them stop the run)."""
    start_loss: float | None = None
    """The first finite training loss of the stage: the yardstick of divergence."""
    smoothed_loss: float | None = None
    """Exponential moving average of the finite training losses."""
    diverged_step: int = 0
    """First step whose smoothed loss passed DIVERGENCE_FACTOR x the start loss (0 = never)."""
    best_metric: float | None = None
    """Best dev metric so far (when selecting a checkpoint)."""
    best_epoch: int = 0
    """Epoch of the best dev metric (0 = none yet)."""
    curve: list[dict] = field(default_factory=list)
    """Dev metrics after each epoch."""


@dataclass(frozen=True)
class Selection:
    """Keep the checkpoint with the best dev value of `metric`."""

    metric: str
    higher_is_better: bool = True

    def better(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.higher_is_better else value < best)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of an epoch: a permutation fixed by (seed, epoch) alone."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def length_grouped_order(n: int, seed: int, epoch: int, lengths: Sequence[int], batch_size: int,
                         megabatch: int = 50) -> list[int]:
    """An epoch order whose micro-batches hold examples of similar length (HF's LengthGroupedSampler).

    The epoch's permutation is cut into megabatches of `megabatch * batch_size` examples, each sorted
    by length (longest first) and cut into micro-batches; the full micro-batches are then shuffled
    (the short last one stays last, so `plan_steps` cuts the same batches). A pure function of
    (seed, epoch, lengths), like `epoch_order`.
    """
    order = epoch_order(n, seed, epoch)
    size = megabatch * batch_size
    ranked = [i for start in range(0, n, size)
              for i in sorted(order[start:start + size], key=lambda i: -lengths[i])]
    batches = [ranked[i:i + batch_size] for i in range(0, n, batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7)
    return [i for b in [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()] + tail for i in b]


def plan_steps(order: list[int], batch_size: int, grad_accum: int) -> list[list[list[int]]]:
    """Optimizer steps, each a list of micro-batches of example indices; the last step may be short."""
    micro = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))


@contextlib.contextmanager
def stop_on_sigint():
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts at once."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        log.warning("stopping after this step (Ctrl-C again to abort without saving)")
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Loop:
    """Runs one stage: `epochs` epochs of `step_fn` over `n_examples` examples."""

    model: torch.nn.Module
    step_fn: StepFn
    collate: Callable[[list[int]], Batch]
    n_examples: int
    cfg: OptimConfig
    seed: int
    stage_dir: Path
    log_path: Path
    stage: str
    accelerator: object
    epochs: int | None = None
    """Epochs to run (default cfg.epochs); the LR schedule always spans cfg.epochs (handoff)."""
    evaluate: Callable[[torch.nn.Module], dict] | None = None
    selection: Selection | None = None
    save_every: int = 0
    """Also save a resumable state every this many optimizer steps (0 = at epoch ends only)."""
    progress: bool = True
    lengths: Sequence[int] | None = None
    """Token length of each example (pair: prompt + longer answer), for cfg.group_by_length."""

    def __post_init__(self):
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.steps_per_epoch = len(plan_steps(list(range(self.n_examples)), self.cfg.batch_size, self.cfg.grad_accum))
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        self.warmup = int(self.cfg.warmup_ratio * self.total_steps)
        self.state_dir = self.stage_dir / "state"
        self.best_path = self.stage_dir / "best.safetensors"

    def epoch_order(self, epoch: int) -> list[int]:
        if self.cfg.group_by_length and self.lengths is not None:
            return length_grouped_order(self.n_examples, self.seed, epoch, self.lengths, self.cfg.batch_size)
        return epoch_order(self.n_examples, self.seed, epoch)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # ---- resumable state ------------------------------------------------------------------
    def save_state(self, state: LoopState) -> None:
        """Trainable weights, optimizer, RNG and loop state, swapped in atomically."""
        if not self.accelerator.is_main_process:
            return
        tmp = self.stage_dir / "state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_file(trainable_state(self.unwrapped), str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp / "optim.pt")
            (tmp / "loop.json").write_text(json.dumps(asdict(state)))
        except (OSError, RuntimeError, SafetensorError) as e:  # full disk: keep the last complete state only
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(tmp, e) from e
        old = self.stage_dir / "state.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.state_dir.exists():
            self.state_dir.rename(old)
        tmp.rename(self.state_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load_state(self) -> LoopState | None:
        """The saved state (or the previous one if a swap was cut short), else None.

        Log rows this stage wrote after that state (or at all, when there is none) are dropped:
        those steps will be run again.
        """
        for folder in (self.state_dir, self.stage_dir / "state.old"):
            if (folder / "loop.json").exists():
                load_trainable_state(self.unwrapped, load_file(str(folder / "trainable.safetensors")))
                saved = torch.load(folder / "optim.pt", weights_only=True)
                self.optimizer.load_state_dict(saved["optimizer"])
                torch.set_rng_state(saved["rng"])
                state = LoopState(**json.loads((folder / "loop.json").read_text()))
                if self.accelerator.is_main_process:
                    # drop log rows written after this state was saved: they will be redone
                    rows = [r for r in read_jsonl(self.log_path)
                            if r.get("stage") != self.stage or r["step"] <= state.global_step]
                    rewrite_jsonl(self.log_path, rows)
                log.info("%s: resuming at epoch %d, step %d", self.stage, state.epoch + 1, state.global_step)
                return state
        if self.accelerator.is_main_process and self.log_path.exists():
            rewrite_jsonl(self.log_path, [r for r in read_jsonl(self.log_path) if r.get("stage") != self.stage])
        return None

    # ---- training -------------------------------------------------------------------------
    def run(self) -> LoopState:
        state = self.load_state() or LoopState()
        epochs = self.epochs or self.cfg.epochs
        with stop_on_sigint() as stop:
            while state.epoch < epochs:
                self._run_epoch(state, stop)
                state.epoch += 1
                state.step_in_epoch = 0
                self._end_epoch(state)
                self.save_state(state)
                self.accelerator.wait_for_everyone()  # the main process evaluated and saved meanwhile
        if self.selection and self.best_path.exists():
            load_trainable_state(self.unwrapped, load_file(str(self.best_path)))
        return state

    def _run_epoch(self, state: LoopState, stop: threading.Event) -> None:
        from tqdm.auto import tqdm

        steps = plan_steps(self.epoch_order(state.epoch), self.cfg.batch_size, self.cfg.grad_accum)
        self.model.train()
        bar = tqdm(total=len(steps), initial=state.step_in_epoch, dynamic_ncols=True, leave=False,
                   desc=f"{self.stage} epoch {state.epoch + 1}/{self.epochs or self.cfg.epochs}",
                   disable=not self.progress or not self.accelerator.is_main_process)
        for micro_batches in steps[state.step_in_epoch:]:
            row = self._optimizer_step(micro_batches, state)
            state.step_in_epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if self.save_every and state.global_step % self.save_every == 0:
                self.save_state(state)
            if stop.is_set():
                self.save_state(state)
                bar.close()
                raise Interrupted(f"stopped at {self.stage} step {state.global_step}; "
                                  "run the same command with --resume to continue")
        bar.close()

    def _optimizer_step(self, micro_batches: list[list[int]], state: LoopState) -> dict:
        """One optimizer step over `micro_batches` (each `batch_size` examples, all processes together).

        With N processes each takes every N-th example of a micro-batch; its loss is weighted so
        that the gradient DDP averages is the mean over all the step's examples, as with one
        process, and the logged metrics and token counts are summed over the processes.
        """
        acc = self.accelerator
        start = time.perf_counter()
        lr = cosine_lr(state.global_step, self.total_steps, self.cfg.lr, self.warmup, self.cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        tokens = 0
        n_total = sum(len(m) for m in micro_batches)
        procs = acc.num_processes
        for i, indices in enumerate(micro_batches):
            shard = indices[acc.process_index::procs]
            n_shard = len(shard)  # 0 when the micro-batch has fewer examples than processes
            batch = {k: v.to(acc.device) for k, v in self.collate(shard or indices[:1]).items()}
            # gradients are all-reduced once per optimizer step, on its last micro-batch
            sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    loss, metrics = self.step_fn(self.model, batch)
                acc.backward(loss * (n_shard * procs) / n_total)
            tokens += count_tokens(batch) if n_shard else 0
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n_shard / n_total
        if procs > 1:
            keys = sorted(sums)
            summed = acc.reduce(torch.tensor([sums[k] for k in keys] + [tokens], dtype=torch.float64,
                                             device=acc.device), reduction="sum").tolist()
            sums, tokens = dict(zip(keys, summed[:-1])), int(summed[-1])
        norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm or float("inf"))
        grad_norm = float(norm)
        if math.isfinite(sums["loss"]) and math.isfinite(grad_norm):
            self.optimizer.step()
            state.bad_streak = 0
            self._track_divergence(sums["loss"], state)
        else:
            state.skipped_steps += 1
            state.bad_streak += 1
            log.warning("%s step %d: non-finite loss or gradient; step skipped", self.stage, state.global_step + 1)
            if state.bad_streak >= MAX_BAD_STEPS:
                raise NumericalFault(f"{self.stage}: {state.bad_streak} consecutive steps had a NaN/inf loss or "
                                     "gradient; lower the learning rate or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        state.global_step += 1
        state.train_seconds += seconds
        state.tokens += tokens
        row = {"stage": self.stage, "step": state.global_step,
               "epoch": round(state.epoch + (state.step_in_epoch + 1) / self.steps_per_epoch, 4),
               **sums, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens / seconds,
               "elapsed": round(state.train_seconds, 3)}
        if acc.is_main_process:
            append_jsonl(self.log_path, [row])
            if acc.trackers:
                acc.log({f"{self.stage}/{k}": v for k, v in row.items() if isinstance(v, (int, float))},
                        step=state.global_step)
        return row

    def _track_divergence(self, loss: float, state: LoopState) -> None:
        """Smooth the loss; the first time it is far above its start, record the step and warn."""
        if state.start_loss is None:
            state.start_loss = loss
        previous = state.smoothed_loss
        state.smoothed_loss = loss if previous is None else LOSS_SMOOTHING * previous + (1 - LOSS_SMOOTHING) * loss
        limit = DIVERGENCE_FACTOR * max(state.start_loss, DIVERGENCE_FLOOR)
        if not state.diverged_step and state.smoothed_loss > limit:
            state.diverged_step = state.global_step + 1
            log.warning("%s step %d: training diverged: the smoothed loss %.4g is over %g x its start %.4g; "
                        "the run goes on and is marked diverged (lower the learning rate?)", self.stage,
                        state.diverged_step, state.smoothed_loss, DIVERGENCE_FACTOR, state.start_loss)

    def _end_epoch(self, state: LoopState) -> None:
        if self.evaluate is None or not self.accelerator.is_main_process:
            return
        metrics = self.evaluate(self.unwrapped)
        point = {"stage": self.stage, "epoch": state.epoch, "step": state.global_step, **metrics}
        state.curve.append(point)
        if self.accelerator.trackers:
            self.accelerator.log({f"{self.stage}/dev_{k}": v for k, v in metrics.items() if isinstance(v, float)},
                                 step=state.global_step)
        curve_path = self.log_path.with_name("curve.jsonl")  # visible while training; rebuilt on resume
        rewrite_jsonl(curve_path, [r for r in read_jsonl(curve_path) if r.get("stage") != self.stage] + state.curve)
        log.info("%s epoch %d: %s", self.stage, state.epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if self.selection and self.selection.better(metrics[self.selection.metric], state.best_metric):
            state.best_metric, state.best_epoch = metrics[self.selection.metric], state.epoch
            tmp = self.best_path.with_suffix(".tmp")
            save_file(trainable_state(self.unwrapped), str(tmp))
            tmp.replace(self.best_path)
