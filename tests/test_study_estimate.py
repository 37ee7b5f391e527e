"""study --dry-run: cell counts and the cost arithmetic."""


from sftdpo.cli import main
from sftdpo.config import load_config
from sftdpo.study.estimate import cell_tokens, model_params


def test_cell_tokens_hand_worked():
    # sft-dpo sonnet: 3 SFT epochs x 100 x 10 tokens + 2 DPO epochs x 100 pairs x 2 sequences x 10 tokens
    cfg = load_config(overrides={"task": "sonnet", "regime": "sft-dpo", "sft": {"epochs": 3},
                                 "dpo_optim": {"epochs": 2}})
    assert cell_tokens(cfg, 100, 10.0) == 3 * 100 * 10 + 2 * 100 * 2 * 10
    # paraphrase pairs share the prompt: one sequence a pair; half the data
    cfg = load_config(overrides={"task": "paraphrase", "regime": "dpo", "dpo_optim": {"epochs": 1},
                                 "data": {"train_size": 0.5}})
    assert cell_tokens(cfg, 100, 10.0) == 1 * 50 * 10


def test_model_params():
    assert model_params("gpt2") == 124e6
    # mini: 12 * 4 * 256^2 + (8192 + 512) * 256
    assert model_params("builtin:mini") == 12 * 4 * 256**2 + (8192 + 512) * 256


def test_dry_run_lists_the_paper_grid(data_root, capsys):
    assert main(["study", "--preset", "paper", "--dry-run", "--data-dir", str(data_root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("612 cells:")
    assert "GPU-hours" in out and "paraphrase 14,585" in out


def test_study_status_of_a_missing_dir_is_a_usage_error(tmp_path, capsys):
    assert main(["study", "status", str(tmp_path)]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
