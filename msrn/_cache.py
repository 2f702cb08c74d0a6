"""Where msrn keeps what it generates for reuse (the generated data set, exported ONNX files)."""

import os
import pathlib

__all__ = ["default_cache_dir"]


def default_cache_dir() -> pathlib.Path:
    """``$MSRN_CACHE`` or ``~/.cache/msrn``: where the generated data set and the ONNX files of the
    onnxruntime backend are written."""
    return pathlib.Path(os.environ.get("MSRN_CACHE", pathlib.Path.home() / ".cache" / "msrn")).expanduser()
