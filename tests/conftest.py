import pathlib

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is not present")
    return SHARED_DIR
