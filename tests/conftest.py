"""Shared pytest fixtures. Sections are owned by different parts of the package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --------------------------------------------------------------------------
# Data layer fixtures (sftdpo.data): the shared data directory.
# --------------------------------------------------------------------------

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data directory: $SFTDPO_DATA_DIR, else <repo>/../shared/data.

    It must exist (CI clones the repo beside shared/); a missing one fails loudly.
    """
    env = os.environ.get("SFTDPO_DATA_DIR")
    root = Path(env) if env else _REPO.parent / "shared" / "data"
    if not (root / "quora").is_dir():
        pytest.fail(
            f"data directory {root} not found (from "
            f"{'$SFTDPO_DATA_DIR' if env else '<repo>/../shared/data'}); "
            "set SFTDPO_DATA_DIR to a directory with quora/, sonnets/, shakespeare-plays/",
            pytrace=False,
        )
    return root


# --------------------------------------------------------------------------
# Model fixtures (sftdpo.backbone, sftdpo.models): the tiny built-in backbone,
# built once per session into a private cache dir.
# --------------------------------------------------------------------------

# The test models are tiny, so one intra-op thread is fastest; with two threads
# and a second busy process on a 2-core machine, torch's thread pool thrashes
# (measured: 14 ms vs 335 ms per tiny training step). Subprocesses inherit it.
# Set OMP_NUM_THREADS yourself to override.
from collections.abc import Iterator  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _limit_torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_limit_torch_threads()


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Path]:
    """Folder of the `tiny` built-in backbone, built into a session cache dir.

    $SFTDPO_CACHE_DIR stays pointed at that dir for the whole session, so tests
    never touch the user's cache and `builtin:tiny` resolves to this same build.
    """
    from sftdpo.backbone import CACHE_ENV, build_backbone

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("sftdpo-cache"))
    yield build_backbone("tiny", data_root, progress=False)
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="session")
def tiny_model(tiny_backbone: Path):
    """(model, tokenizer) of the tiny backbone, shared: tests that train or mutate load their own."""
    from sftdpo.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_backbone))


# --------------------------------------------------------------------------
# Training-engine fixtures (sftdpo.regimes, sftdpo.cli train): small paraphrase
# splits, so end-to-end runs tokenize and evaluate a few dozen pairs, not 18k.
# --------------------------------------------------------------------------

SMALL_TRAIN_PAIRS = 256
"""Paraphrase train pairs the end-to-end tests see (subsampled further by data.train_size)."""
SMALL_EVAL_PAIRS = 48
"""Paraphrase dev and test pairs the end-to-end tests see."""


@pytest.fixture(scope="module")
def small_paraphrase_splits() -> Iterator[None]:
    """For one test module: ParaphraseTask.pairs returns the first 256 train / 48 dev and test pairs."""
    from sftdpo.tasks.paraphrase import ParaphraseTask

    full = ParaphraseTask.pairs

    def pairs(self, split: str):
        items = full(self, split)
        return items[:SMALL_TRAIN_PAIRS] if split == "train" else items[:SMALL_EVAL_PAIRS]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ParaphraseTask, "pairs", pairs)
        yield
