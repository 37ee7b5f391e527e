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
