"""The study grid (sftdpo.study.grid): the presets' expansion into cells, collapsed axes, cell
configs, per-task base values, `load_spec` errors and overrides, and config hashes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sftdpo.errors import UsageError
from sftdpo.study.grid import PRESETS, StudySpec, config_hash, expand, load_spec

DPO_REGIMES = ("dpo", "sft-dpo")


@pytest.fixture(scope="module")
def grids() -> dict[str, list]:
    """Every preset expanded once (the paper grid has 612 cells, each a load_config)."""
    return {name: expand(load_spec(name)) for name in PRESETS}


def write_study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


# ---- sizes -------------------------------------------------------------------------------------

def test_smoke_and_quick_have_24_cells(grids):
    # 2 tasks x 3 regimes x fft/lora x 2 seeds; one rank, handoff, pair construction and loss each
    assert len(grids["smoke"]) == 24
    assert len(grids["quick"]) == 24


def test_paper_has_612_cells(grids):
    # Per (task, regime, params): train sizes (3) x seeds (3) = 9 runs, times
    #   ranks (3) for lora, handoffs (3, 9 -> 2) for sft-dpo, pairs (4) for sonnet DPO regimes,
    #   losses (default: sigmoid only -> 1) for DPO regimes.
    # paraphrase: sft fft 9, sft lora 27, dpo fft 9, dpo lora 27, sft-dpo fft 18, sft-dpo lora 54 = 144
    # sonnet:     sft fft 9, sft lora 27, dpo fft 36, dpo lora 108, sft-dpo fft 72, sft-dpo lora 216 = 468
    # total 144 + 468 = 612
    cells = grids["paper"]
    assert len(cells) == 144 + 468 == 612
    per = Counter((c.axes["task"], c.axes["regime"], c.axes["params"]) for c in cells)
    assert per == {
        ("paraphrase", "sft", "fft"): 9, ("paraphrase", "sft", "lora"): 27,
        ("paraphrase", "dpo", "fft"): 9, ("paraphrase", "dpo", "lora"): 27,
        ("paraphrase", "sft-dpo", "fft"): 18, ("paraphrase", "sft-dpo", "lora"): 54,
        ("sonnet", "sft", "fft"): 9, ("sonnet", "sft", "lora"): 27,
        ("sonnet", "dpo", "fft"): 36, ("sonnet", "dpo", "lora"): 108,
        ("sonnet", "sft-dpo", "fft"): 72, ("sonnet", "sft-dpo", "lora"): 216,
    }


def test_losses_axis_multiplies_only_dpo_cells():
    spec = load_spec("smoke", overrides=["losses=sigmoid,ipo,hinge", "seeds=1"])
    cells = expand(spec)
    # per task: sft 2 (fft/lora) + dpo 2 x 3 losses + sft-dpo 2 x 3 losses = 14
    assert len(cells) == 2 * (2 + 6 + 6)
    assert {c.axes["loss"] for c in cells if c.axes["regime"] == "sft"} == {None}
    assert {c.config.dpo.loss_type for c in cells if c.axes["regime"] != "sft"} == {"sigmoid", "ipo", "hinge"}


@pytest.mark.parametrize("preset", PRESETS)
def test_keys_are_unique(grids, preset):
    keys = [c.key for c in grids[preset]]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("preset", PRESETS)
def test_configs_are_distinct(grids, preset):
    """No duplicate runs: collapsed axes do not produce two cells with the same config."""
    hashes = [c.config_hash for c in grids[preset]]
    assert len(set(hashes)) == len(hashes)


def test_order_is_tasks_regimes_params_first(grids):
    cells = grids["smoke"]
    assert [c.axes["task"] for c in cells] == ["paraphrase"] * 12 + ["sonnet"] * 12
    assert [c.axes["regime"] for c in cells[:12]] == ["sft"] * 4 + ["dpo"] * 4 + ["sft-dpo"] * 4
    assert expand(load_spec("smoke")) == cells  # stable


def test_smoke_keys(grids):
    keys = {c.key for c in grids["smoke"]}
    for key in ("paraphrase-sft-fft-s1", "paraphrase-sft-lora-r8-s2", "paraphrase-dpo-fft-sigmoid-s1",
                "paraphrase-sft-dpo-lora-r8-h0-sigmoid-s2", "sonnet-dpo-fft-shuffled-sigmoid-s1",
                "sonnet-sft-dpo-lora-r8-h0-shuffled-sigmoid-s2"):
        assert key in keys


# ---- cell configs carry the axes ---------------------------------------------------------------

def test_paper_cell_configs_carry_axis_values(grids):
    for cell in grids["paper"]:
        axes, cfg = cell.axes, cell.config
        assert (cfg.task, cfg.regime, cfg.params, cfg.model) == (axes["task"], axes["regime"], axes["params"], "gpt2")
        assert cfg.seed == axes["seed"]
        assert cfg.data.train_size == axes["train_size"]
        assert (axes["lora_rank"] is not None) == (axes["params"] == "lora")
        if axes["params"] == "lora":
            assert cfg.lora.r == axes["lora_rank"]
            assert cfg.lora.alpha == 2 * axes["lora_rank"]
        assert (axes["handoff_epoch"] is not None) == (axes["regime"] == "sft-dpo")
        if axes["regime"] == "sft-dpo":
            assert cfg.handoff_epoch == axes["handoff_epoch"]
            assert cfg.sft_epochs_run == axes["handoff_epoch"]
        dpo = axes["regime"] in DPO_REGIMES
        assert (axes["loss"] is not None) == dpo
        if dpo:
            assert cfg.dpo.loss_type == axes["loss"]
        assert (axes["pairs"] is not None) == (dpo and axes["task"] == "sonnet")
        if axes["pairs"] is not None:
            assert cfg.pairs.construction == axes["pairs"]
        # base.all applies to every cell
        assert cfg.sft.epochs == 10
        assert cfg.dpo_optim.epochs == 3


def test_paper_axis_values_all_appear(grids):
    cells = grids["paper"]
    assert {c.config.lora.r for c in cells if c.axes["params"] == "lora"} == {4, 8, 16}
    assert {c.config.handoff_epoch for c in cells if c.axes["regime"] == "sft-dpo"} == {3, 9}
    assert {c.config.data.train_size for c in cells} == {0.01, 0.1, 1.0}
    assert ({c.config.pairs.construction for c in cells if c.axes["pairs"]}
            == {"sampled", "shuffled", "many-per-prompt", "windows"})
    assert {c.config.seed for c in cells} == {11711, 11712, 11713}
    assert {c.key.split("-n")[1].split("-")[0] for c in cells} == {"0.01", "0.1", "1"}


def test_smoke_base_per_task(grids):
    for cell in grids["smoke"]:
        cfg = cell.config
        assert cfg.model == "builtin:tiny"
        assert (cfg.sft.epochs, cfg.sft.lr) == (1, 3e-3)           # base.all
        assert (cfg.dpo_optim.epochs, cfg.dpo_optim.lr) == (1, 1e-3)
        if cfg.task == "paraphrase":
            assert (cfg.data.train_size, cfg.data.dev_size, cfg.data.test_size) == (128, 32, 64)
        else:
            assert cfg.data.train_size == 16
    assert {c.config.seed for c in grids["smoke"]} == {1, 2}


def test_quick_base_per_task(grids):
    for cell in grids["quick"]:
        cfg = cell.config
        assert cfg.model == "builtin:mini"
        if cfg.task == "paraphrase":
            assert (cfg.sft.epochs, cfg.dpo_optim.epochs, cfg.data.train_size) == (1, 1, 2000)
            lrs = {"fft": (1e-3, 1e-3), "lora": (3e-3, 3e-3)}[cfg.params]
            assert (cfg.sft.lr, cfg.dpo_optim.lr) == lrs  # the per-parameterisation blocks
        else:
            assert (cfg.sft.epochs, cfg.dpo_optim.epochs) == (4, 1)
            assert cfg.sft.lr == {"fft": 5e-4, "lora": 2e-3}[cfg.params]  # train.yaml's, untouched


def test_base_blocks_per_params_apply_to_their_cells_only(tmp_path):
    from sftdpo.study.grid import expand, load_spec

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodel: builtin:tiny\ntasks: [paraphrase]\nregimes: [sft]\nseeds: [1]\n"
                    "base:\n  all: {sft: {epochs: 2}, params_lora: {sft: {lr: 0.5}}}\n"
                    "  paraphrase: {params_fft: {sft: {lr: 0.25}}, params_lora: {sft: {epochs: 3}},\n"
                    "               lora: {dropout: 0.0}}\n")
    cells = {c.config.params: c.config for c in expand(load_spec(file=path))}
    assert (cells["fft"].sft.lr, cells["fft"].sft.epochs) == (0.25, 2)
    assert (cells["lora"].sft.lr, cells["lora"].sft.epochs, cells["lora"].lora.dropout) == (0.5, 3, 0.0)


def test_handoff_zero_means_all_sft_epochs(grids):
    cells = [c for c in grids["smoke"] if c.axes["regime"] == "sft-dpo"]
    assert cells and all(c.axes["handoff_epoch"] == 0 and "-h0-" in c.key for c in cells)
    assert all(c.config.handoff_epoch == 0 and c.config.sft_epochs_run == c.config.sft.epochs for c in cells)


# ---- load_spec ---------------------------------------------------------------------------------

def test_load_spec_needs_exactly_one_source(tmp_path):
    with pytest.raises(UsageError, match="either --preset"):
        load_spec()
    path = write_study(tmp_path, "seeds: [1]\n")
    with pytest.raises(UsageError, match="either --preset"):
        load_spec("smoke", path)


def test_load_spec_unknown_preset():
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        load_spec("huge")


def test_load_spec_unknown_key_is_named(tmp_path):
    path = write_study(tmp_path, "name: mine\nseedz: [1, 2]\n")
    with pytest.raises(UsageError, match="seedz"):
        load_spec(file=path)


@pytest.mark.parametrize("axis", ["tasks", "regimes", "params", "lora_ranks", "handoff_epochs", "pairs",
                                  "losses", "seeds"])
def test_load_spec_empty_axis(tmp_path, axis):
    path = write_study(tmp_path, f"{axis}: []\n")
    with pytest.raises(UsageError, match=f"'{axis}' is empty"):
        load_spec(file=path)


def test_load_spec_from_file(tmp_path):
    path = write_study(tmp_path, "name: mine\nmodel: builtin:tiny\ntasks: [sonnet]\nregimes: [dpo]\n"
                                 "params: [lora]\nlora_ranks: [2, 4]\npairs: [shuffled, windows]\nseeds: [5]\n"
                                 "base:\n  sonnet:\n    data: {train_size: 8}\n")
    spec = load_spec(file=path)
    assert isinstance(spec, StudySpec) and spec.name == "mine"
    cells = expand(spec)
    assert len(cells) == 2 * 2
    assert {(c.config.lora.r, c.config.pairs.construction) for c in cells} == {
        (2, "shuffled"), (2, "windows"), (4, "shuffled"), (4, "windows")}
    assert all(c.config.data.train_size == 8 and c.config.seed == 5 for c in cells)


def test_bad_cell_value_names_the_cell(tmp_path):
    path = write_study(tmp_path, "tasks: [sonnet]\nregimes: [dpo]\nparams: [fft]\nlosses: [nonsense]\nseeds: [1]\n")
    with pytest.raises(UsageError, match="sonnet-dpo-fft"):
        expand(load_spec(file=path))


def test_override_seeds():
    spec = load_spec("smoke", overrides=["seeds=1,2,3"])
    assert spec.seeds == (1, 2, 3)
    cells = expand(spec)
    assert len(cells) == 36
    assert Counter(c.config.seed for c in cells) == {1: 12, 2: 12, 3: 12}


def test_override_base_value_and_model():
    spec = load_spec("smoke", model="builtin:mini", overrides=["base.paraphrase.data.test_size=48", "seeds=1"])
    cells = expand(spec)
    assert all(c.config.model == "builtin:mini" for c in cells)
    para = [c for c in cells if c.axes["task"] == "paraphrase"]
    assert para and all(c.config.data.test_size == 48 and c.config.data.train_size == 128 for c in para)


def test_override_train_sizes_axis():
    cells = expand(load_spec("smoke", overrides=["train_sizes=0.5,1", "seeds=1"]))
    assert len(cells) == 24
    assert {c.config.data.train_size for c in cells} == {0.5, 1.0}
    assert {c.key for c in cells} >= {"paraphrase-sft-fft-n0.5-s1", "paraphrase-sft-fft-n1-s1"}


def test_config_hash_changes_with_a_base_value():
    before = {c.key: c.config_hash for c in expand(load_spec("smoke"))}
    lr = {c.key: c.config_hash for c in expand(load_spec("smoke", overrides=["base.all.sft.lr=0.01"]))}
    assert before.keys() == lr.keys()
    assert all(lr[k] != before[k] for k in before)
    sonnet_only = {c.key: c.config_hash
                   for c in expand(load_spec("smoke", overrides=["base.sonnet.data.train_size=12"]))}
    for key, h in sonnet_only.items():
        assert (h != before[key]) == key.startswith("sonnet-")
    # the hash is a pure function of the config
    again = {c.key: c.config_hash for c in expand(load_spec("smoke"))}
    assert again == before
    cell = expand(load_spec("smoke"))[0]
    assert config_hash(cell.config) == cell.config_hash and len(cell.config_hash) == 16
