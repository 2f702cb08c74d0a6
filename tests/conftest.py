import os
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


@pytest.fixture(autouse=True, scope="session")
def _msrn_cache(tmp_path_factory):
    """``$MSRN_CACHE`` in a folder of the test session (the ONNX files of the onnxruntime backend, the
    generated set), shared by its tests and its subprocesses, never the user's ~/.cache/msrn."""
    previous = os.environ.get("MSRN_CACHE")
    os.environ["MSRN_CACHE"] = str(tmp_path_factory.mktemp("msrn-cache"))
    yield
    if previous is None:
        os.environ.pop("MSRN_CACHE", None)
    else:
        os.environ["MSRN_CACHE"] = previous
