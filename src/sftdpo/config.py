"""Typed, frozen configs of a training run; YAML files and `section.field=value` overrides.

Each dataclass owns one concern and documents its fields. `load_config` merges, in order:
the dataclass defaults, the task/backbone defaults preset, a YAML file, and overrides.
Unknown keys and wrong types are errors naming the key. Nothing is ever eval'd.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .errors import UsageError

TASKS = ("paraphrase", "sonnet")
REGIMES = ("sft", "dpo", "sft-dpo")
PARAMS = ("fft", "lora")
LOSS_TYPES = ("sigmoid", "ipo", "hinge")
PAIR_CONSTRUCTIONS = ("sampled", "shuffled", "many-per-prompt", "windows")


@dataclass(frozen=True)
class OptimConfig:
    """One training stage's optimisation (AdamW, linear warmup, cosine decay)."""

    epochs: int = 3
    """Passes over the training data (TRL: num_train_epochs)."""
    lr: float = 5e-4
    """Peak learning rate (TRL: learning_rate)."""
    batch_size: int = 16
    """Examples (or pairs) per optimizer step, before accumulation (TRL: per_device_train_batch_size x devices)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (TRL: gradient_accumulation_steps)."""
    warmup_ratio: float = 0.05
    """Fraction of the stage's steps spent warming up linearly (TRL: warmup_ratio)."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on biases and norms)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 turns clipping off."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of lr."""
    group_by_length: bool = True
    """Batch examples of similar length together (seeded, micro-batch order still shuffled), so little
    compute goes to padding (TRL: group_by_length)."""

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs must be at least 1")
        _check(self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(self.batch_size >= 1, "batch_size must be at least 1")
        _check(self.grad_accum >= 1, "grad_accum must be at least 1")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.max_grad_norm >= 0, "max_grad_norm must be >= 0")


@dataclass(frozen=True)
class DPOConfig:
    """The DPO objective (Rafailov et al. 2023) and its variants."""

    beta: float = 0.1
    """Strength of the KL anchor to the reference."""
    loss_type: str = "sigmoid"
    """sigmoid (DPO), ipo (Azar et al.) or hinge (SLiC)."""
    label_smoothing: float = 0.0
    """Conservative DPO: assumed probability that a preference label is flipped (sigmoid only)."""
    rpo_alpha: float = 0.0
    """Weight of an SFT (NLL) term on the chosen answer (RPO, Pang et al. 2024); 0 = off."""
    precompute_ref_log_probs: bool = True
    """Compute the frozen reference's log-probs once, before training, and keep no reference model."""

    def __post_init__(self):
        _check(self.beta > 0, f"beta must be positive, got {self.beta}")
        _check(self.loss_type in LOSS_TYPES, f"unknown loss '{self.loss_type}'; choose {', '.join(LOSS_TYPES)}")
        _check(0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)")
        _check(self.label_smoothing == 0 or self.loss_type == "sigmoid",
               f"label_smoothing (conservative DPO) applies to the sigmoid loss only, not '{self.loss_type}'")
        _check(self.rpo_alpha >= 0, "rpo_alpha must be >= 0")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (peft) on the attention and MLP projections of every block."""

    r: int = 8
    """Adapter rank (TRL/peft: lora_r / r)."""
    alpha: float = 16.0
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    """Module names to adapt (GPT-2: attention c_attn/c_proj, MLP c_fc/c_proj)."""

    def __post_init__(self):
        _check(self.r >= 1, f"lora rank must be at least 1, got {self.r}")
        _check(self.alpha > 0, "lora alpha must be positive")
        _check(0 <= self.dropout < 1, "lora dropout must be in [0, 1)")
        _check(len(self.targets) > 0, "lora targets must name at least one module")


@dataclass(frozen=True)
class PairsConfig:
    """How sonnet preference pairs are built (paraphrase pairs are always the label flip)."""

    construction: str = "shuffled"
    """sampled | shuffled | many-per-prompt | windows (see docs)."""
    k: int = 4
    """Rejections per prompt for many-per-prompt."""

    def __post_init__(self):
        _check(self.construction in PAIR_CONSTRUCTIONS,
               f"unknown pairs '{self.construction}'; choose {', '.join(PAIR_CONSTRUCTIONS)}")
        _check(self.k >= 1, "pairs k must be at least 1")


@dataclass(frozen=True)
class DataConfig:
    """What the run trains and evaluates on."""

    train_size: float = 1.0
    """Training examples: a fraction in (0, 1], or a count if > 1."""
    dev_size: int = 0
    """Dev examples used for the per-epoch curve, the checkpoint choice and the final dev score (0 = all)."""
    max_length: int = 256
    """Longest training sequence in tokens; longer ones are cut from the right."""
    both_orders: bool = False
    """Paraphrase: also train on (q2, q1) for every (q1, q2) pair."""
    eval_samples: int = 1
    """Sonnet: sampling rounds for the final chrF."""
    test_size: int = 0
    """Paraphrase: score only the first N test pairs at the end (0 = all; for quick runs)."""

    def __post_init__(self):
        _check(self.train_size > 0, f"train_size must be > 0 (a fraction in (0, 1] or a count), got {self.train_size}")
        _check(self.train_size <= 1 or float(self.train_size).is_integer(),
               f"train_size above 1 must be a whole count, got {self.train_size}")
        _check(self.dev_size >= 0, "dev_size must be >= 0")
        _check(self.max_length >= 8, "max_length must be at least 8")
        _check(self.eval_samples >= 1, "eval_samples must be at least 1")
        _check(self.test_size >= 0, "test_size must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """A whole run: task, regime, parameterisation, model and every stage's settings."""

    task: str = "paraphrase"
    """paraphrase | sonnet."""
    regime: str = "sft"
    """sft | dpo | sft-dpo."""
    params: str = "fft"
    """fft (all weights) | lora."""
    model: str = "builtin:mini"
    """builtin:tiny|mini|small, a local Hugging Face folder, or a hub name (gpt2)."""
    seed: int = 11711
    """Fixes data order, initialisation, dropout and sampling."""
    handoff_epoch: int = 0
    """sft-dpo: SFT epochs before DPO starts (0 = all of sft.epochs)."""
    trust_remote_code: bool = False
    """Allow a hub model's own code; off unless you trust it."""
    sft: OptimConfig = field(default_factory=OptimConfig)
    """SFT stage."""
    dpo_optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=2, lr=1e-4))
    """DPO stage (usually a smaller learning rate)."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """DPO objective."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters (params=lora)."""
    pairs: PairsConfig = field(default_factory=PairsConfig)
    """Sonnet preference pairs."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data sizes and lengths."""

    def __post_init__(self):
        _check(self.task in TASKS, f"unknown task '{self.task}'; choose {', '.join(TASKS)}")
        _check(self.regime in REGIMES, f"unknown regime '{self.regime}'; choose {', '.join(REGIMES)}")
        _check(self.params in PARAMS, f"unknown params '{self.params}'; choose {', '.join(PARAMS)}")
        _check(self.handoff_epoch >= 0, f"handoff_epoch must be >= 0 (0 = after all SFT epochs), "
                                        f"got {self.handoff_epoch}")
        _check(self.handoff_epoch <= self.sft.epochs,
               f"handoff_epoch {self.handoff_epoch} is beyond sft.epochs {self.sft.epochs}; "
               "lower it or raise sft.epochs (--epochs)")

    @property
    def sft_epochs_run(self) -> int:
        """SFT epochs actually trained (the handoff epoch for sft-dpo, else all)."""
        return self.handoff_epoch or self.sft.epochs


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


# ---- dict <-> dataclass, with key and type checks -------------------------------------------

def to_dict(cfg) -> dict:
    """A plain nested dict (tuples as lists), for YAML and hashing."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return list(v) if isinstance(v, tuple) else v
    return plain(cfg)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass cls from a nested dict; unknown keys and wrong types are UsageErrors."""
    kwargs = _checked_kwargs(cls, data, where)
    try:
        return cls(**kwargs)
    except UsageError as e:
        raise UsageError(f"{where}: {e}" if where else str(e)) from None


def _checked_kwargs(cls, data: dict, where: str = "") -> dict:
    """cls's keyword arguments from a (partial) mapping: every key known, every value coerced."""
    if not isinstance(data, dict):
        raise UsageError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise UsageError(f"unknown config key '{path}'; known keys here: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(hints[key], value, path)
    return kwargs


def _coerce(tp, value, path: str):
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise UsageError(f"config key '{path}' must be a list, got {value!r}")
        element = typing.get_args(tp)[0]
        return tuple(_coerce(element, x.strip() if isinstance(x, str) else x, path) for x in items)
    if tp is dict:
        if not isinstance(value, dict):
            raise UsageError(f"config key '{path}' must be a mapping, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(f"config key '{path}' must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise UsageError(f"config key '{path}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"config key '{path}' must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UsageError(f"config key '{path}' must be a finite number, got {value!r}")
        if tp is int:
            if not number.is_integer():
                raise UsageError(f"config key '{path}' must be a whole number, got {value!r}")
            return int(number)
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"config key '{path}' must be a string, got {value!r}")
        return str(value)
    return value


def parse_override(text: str) -> tuple[list[str], str]:
    """'section.field=value' -> (['section', 'field'], 'value')."""
    if "=" not in text:
        raise UsageError(f"override '{text}' must look like section.field=value")
    key, value = text.split("=", 1)
    return key.lstrip("-").replace("-", "_").split("."), value


def merge(base: dict, updates: dict) -> dict:
    """Recursive dict merge; updates win."""
    out = dict(base)
    for k, v in updates.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_path(tree: dict, keys: list[str], value) -> dict:
    """A copy of tree with tree[k1][k2]... = value."""
    if len(keys) == 1:
        return {**tree, keys[0]: value}
    return {**tree, keys[0]: set_path(tree.get(keys[0], {}), keys[1:], value)}


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a file (safe_load), with a one-line error on bad YAML."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"config file {path} is not UTF-8 text (bad byte at offset {e.start}); "
                         "save it as UTF-8 YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start and (start.line, start.column) != (mark.line, mark.column):
            what += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise UsageError(f"config file {path} is not valid YAML{where}: {what}; fix the YAML syntax there") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror or e}; pass a readable YAML file") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values")
    return data


def preset_defaults(task: str, model: str, params: str) -> dict:
    """Per-task defaults for built-in backbones or pretrained (hub/folder) models, from presets/train.yaml."""
    text = resources.files("sftdpo").joinpath("presets", "train.yaml").read_text()
    kind = "builtin" if model.startswith("builtin:") else "pretrained"
    section = yaml.safe_load(text).get(task, {}).get(kind, {})
    return merge(section.get("common", {}), section.get(params, {}))


def load_config(file: Path | None = None, overrides: dict | None = None,
                dotted: list[str] | None = None) -> TrainConfig:
    """Defaults <- task/backbone preset <- YAML file <- overrides dict <- dotted overrides."""
    tree = to_dict(TrainConfig())
    user: dict = read_yaml(file) if file else {}
    if file:  # unknown keys and bad values of the file itself are named with the file
        try:
            _checked_kwargs(TrainConfig, user)
        except UsageError as e:
            raise UsageError(f"config file {file}: {e}") from None
    user = merge(user, overrides or {})
    for item in dotted or []:
        keys, value = parse_override(item)
        user = set_path(user, keys, value)
    picks = {k: str(user.get(k, tree[k])) for k in ("task", "model", "params")}
    tree = merge(merge(tree, preset_defaults(picks["task"], picks["model"], picks["params"])), user)
    return from_dict(TrainConfig, tree)


def save_yaml(cfg, path: Path) -> None:
    """The resolved config as YAML (written atomically)."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
