"""A study's grid: axes to vary, per-task base configs, and its expansion into cells.

Axes that do not apply to a cell collapse (LoRA ranks only for lora, handoff epochs only
for sft-dpo, DPO losses only where DPO runs, pair constructions only for sonnet DPO), so the
grid holds no duplicate runs. A cell's key names its axes; its config hash tells whether a
changed study file changed the cell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml

from ..config import PARAMS, TrainConfig, load_config, merge, read_yaml, to_dict
from ..errors import UsageError
from ..io import tree_hash

PRESETS = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class StudySpec:
    """What a study varies, and the fixed settings of every cell."""

    name: str = "study"
    """A label for reports."""
    model: str = "builtin:mini"
    """The model every cell starts from."""
    tasks: tuple[str, ...] = ("paraphrase", "sonnet")
    regimes: tuple[str, ...] = ("sft", "dpo", "sft-dpo")
    params: tuple[str, ...] = ("fft", "lora")
    lora_ranks: tuple[int, ...] = (8,)
    handoff_epochs: tuple[int, ...] = (0,)
    """sft-dpo handoff epochs; 0 = after all SFT epochs."""
    train_sizes: tuple[float, ...] = ()
    """Fractions in (0, 1] or counts of the training data; empty = not an axis (base/preset decide)."""
    pairs: tuple[str, ...] = ("shuffled",)
    """Sonnet preference-pair constructions."""
    losses: tuple[str, ...] = ("sigmoid",)
    """DPO loss variants."""
    seeds: tuple[int, ...] = (11711, 11712)
    base: dict = field(default_factory=dict)
    """Config values for every cell, per task: {"paraphrase": {...}, "sonnet": {...}, "all": {...}}."""

    def __post_init__(self):
        for axis in ("tasks", "regimes", "params", "lora_ranks", "handoff_epochs", "pairs", "losses", "seeds"):
            if not getattr(self, axis):
                raise UsageError(f"study axis '{axis}' is empty; give at least one value")


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    key: str
    axes: dict
    config: TrainConfig

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def config_hash(cfg: TrainConfig) -> str:
    return tree_hash(to_dict(cfg))


def _axis_values(spec: StudySpec, task: str, regime: str, params: str) -> dict[str, tuple]:
    dpo = regime in ("dpo", "sft-dpo")
    return {"lora_rank": spec.lora_ranks if params == "lora" else (None,),
            "handoff_epoch": spec.handoff_epochs if regime == "sft-dpo" else (None,),
            "train_size": spec.train_sizes or (None,),
            "pairs": spec.pairs if dpo and task == "sonnet" else (None,),
            "loss": spec.losses if dpo else (None,),
            "seed": spec.seeds}


def cell_key(axes: dict) -> str:
    """A readable, unique key: task-regime-params[-rR][-hK][-nSIZE][-PAIRS][-LOSS]-sSEED."""
    parts = [axes["task"], axes["regime"], axes["params"]]
    if axes.get("lora_rank") is not None:
        parts.append(f"r{axes['lora_rank']}")
    if axes.get("handoff_epoch") is not None:
        parts.append(f"h{axes['handoff_epoch']}")
    if axes.get("train_size") is not None:
        parts.append(f"n{axes['train_size']:g}")
    for name in ("pairs", "loss"):
        if axes.get(name) is not None:
            parts.append(str(axes[name]))
    parts.append(f"s{axes['seed']}")
    return "-".join(parts)


def expand(spec: StudySpec) -> list[Cell]:
    """Every cell of the grid, in a stable order (tasks, regimes, params, then the other axes)."""
    cells = []
    for task, regime, params in itertools.product(spec.tasks, spec.regimes, spec.params):
        values = _axis_values(spec, task, regime, params)
        for combo in itertools.product(*values.values()):
            axes = {"task": task, "regime": regime, "params": params, **dict(zip(values, combo))}
            cells.append(Cell(cell_key(axes), axes, cell_config(spec, axes)))
    return cells


def cell_config(spec: StudySpec, axes: dict) -> TrainConfig:
    """The TrainConfig of a cell: preset <- base['all'] <- base[task] <- the cell's axes; in each base
    level, a `params_fft:` or `params_lora:` block applies to that parameterisation only."""
    tree: dict = {}
    blocks = {f"params_{p}": p for p in PARAMS}
    for level in (spec.base.get("all", {}), spec.base.get(axes["task"], {})):
        common = {k: v for k, v in level.items() if k not in blocks}
        tree = merge(merge(tree, common), level.get(f"params_{axes['params']}", {}))
    tree = merge(tree, {"task": axes["task"], "regime": axes["regime"], "params": axes["params"],
                        "model": spec.model, "seed": axes["seed"]})
    if axes["train_size"] is not None:
        tree = merge(tree, {"data": {"train_size": axes["train_size"]}})
    if axes["lora_rank"] is not None:
        tree = merge(tree, {"lora": {"r": axes["lora_rank"], "alpha": 2 * axes["lora_rank"]}})
    if axes["handoff_epoch"]:
        tree = merge(tree, {"handoff_epoch": axes["handoff_epoch"]})
    if axes["pairs"] is not None:
        tree = merge(tree, {"pairs": {"construction": axes["pairs"]}})
    if axes["loss"] is not None:
        tree = merge(tree, {"dpo": {"loss_type": axes["loss"]}})
    try:
        return load_config(overrides=tree)
    except UsageError as e:
        raise UsageError(f"study cell {cell_key(axes)}: {e}") from None


def spec_from_dict(data: dict, where: str = "study") -> StudySpec:
    """A StudySpec from a mapping (YAML), checking keys; list axes become tuples."""
    from ..config import from_dict

    return from_dict(StudySpec, data, where)


def load_spec(preset: str | None = None, file: Path | None = None, model: str | None = None,
              overrides: list[str] | None = None) -> StudySpec:
    """A preset or a study YAML file, then --model and `axis=v1,v2` / `base.task.key=value` overrides."""
    if (preset is None) == (file is None):
        raise UsageError("give either --preset (smoke, quick, paper) or --config STUDY.yaml")
    if preset is not None:
        if preset not in PRESETS:
            raise UsageError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        data = yaml.safe_load(resources.files("sftdpo").joinpath("presets", f"study-{preset}.yaml").read_text())
    else:
        data = read_yaml(file)
        try:  # the file's own unknown keys and bad values are named with the file
            spec_from_dict(data)
        except UsageError as e:
            raise UsageError(f"config file {file}: {e}") from None
    from ..config import parse_override, set_path

    for item in overrides or []:
        keys, value = parse_override(item)
        data = set_path(data, keys, value)
    if model:
        data["model"] = model
    spec = spec_from_dict(data)
    return replace(spec, base=spec.base or {})
