"""Shared fixtures: the offline data copies beside the checkout, and thread limits."""
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALI_REPLAY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests are small; one thread avoids oversubscribing a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding the offline MNIST and CIFAR-10 copies (skips when absent)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"no offline data at {SHARED_DATA} (set ALI_REPLAY_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO_ROOT
