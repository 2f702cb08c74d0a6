"""ONNX files for the onnxruntime backend, exported once per model and reused: a cache keyed by a hash
of everything the exported graph depends on.

A model's file is ``<cache_dir>/onnx/<architecture>-<key>.onnx``. The key hashes the weights and
buffers (every tensor of the state dict, and the image-independent semantic queries), the module
structure (``repr(model)``), the input size, the precision, the exporter's versions (msrn, torch,
ONNX opset) and, for int8, the calibration images and the onnxruntime version. Changing any weight,
even in place, gives a new key, so a stale file is never used; files of older weights stay until
deleted (they are plain files: ``rm -r ~/.cache/msrn/onnx`` removes them all). Concurrent processes
wait for each other's export (a lock file next to it), and files are written atomically.
"""

import hashlib
import logging
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from filelock import FileLock

from .._cache import default_cache_dir
from .._io import atomic_write
from ..export import DEFAULT_OPSET, export_onnx
from ..version import __version__
from .quantize import quantize_int8, quantizer_version

__all__ = ["onnx_cache_dir", "model_digest", "array_digest", "cached_onnx"]

_logger = logging.getLogger(__name__)

# Bump when the way a cached file is made changes, so that old caches are not reused.
_FORMAT = 1


def onnx_cache_dir(cache_dir: "os.PathLike[str] | str | None" = None) -> pathlib.Path:
    """``cache_dir`` or ``$MSRN_CACHE/onnx`` (default ``~/.cache/msrn/onnx``)."""
    return pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "onnx"


def _update_with_tensor(hasher, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict (names, dtypes, shapes, values), the semantic queries and the module
    structure: what the exported graph of ``model`` depends on."""
    hasher = hashlib.sha256()
    hasher.update(repr(model).encode())
    for name, tensor in model.state_dict(keep_vars=False).items():
        hasher.update(name.encode())
        _update_with_tensor(hasher, tensor)
    semantic_queries = getattr(model, "semantic_queries", None)
    if semantic_queries is not None:
        with torch.no_grad():
            _update_with_tensor(hasher, semantic_queries())
    return hasher.hexdigest()


def array_digest(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 of some arrays (shapes and values), e.g. the calibration batches of int8."""
    hasher = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        hasher.update(f"{array.dtype}{array.shape}".encode())
        hasher.update(array)
    return hasher.hexdigest()


def _key(weights: str, input_size: tuple[int, int, int], precision: str, extra: str = "") -> str:
    parts = [
        f"format={_FORMAT}",
        f"msrn={__version__}",
        f"torch={torch.__version__}",
        f"opset={DEFAULT_OPSET}",
        f"input={tuple(input_size)}",
        f"precision={precision}",
        f"weights={weights}",
        extra,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_onnx(
    model: torch.nn.Module,
    input_size: tuple[int, int, int],
    cache_dir: "os.PathLike[str] | str | None" = None,
    precision: str = "fp32",
    calibration: Sequence[np.ndarray] | None = None,
) -> pathlib.Path:
    """The cached ONNX file of ``model`` for ``input_size`` ``(C, H, W)`` at ``precision``
    (``"fp32"`` or ``"int8"``), exported (and quantized) first when there is none.

    Args:
        model: an eval-mode :class:`msrn.MSRN` on the CPU in float32.
        calibration: for int8, the normalised calibration batches ``[b, C, H, W]`` (float32) that set
            the activations' ranges (:func:`msrn.backends.quantize.quantize_int8`).
    """
    folder = onnx_cache_dir(cache_dir)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture = re.sub(r"[^A-Za-z0-9_.-]", "_", str(cfg.get("architecture", "msrn")))
    weights = model_digest(model)
    fp32 = folder / f"{architecture}-{_key(weights, input_size, 'fp32')}.onnx"
    _ensure(fp32, lambda path: export_onnx(model, path, img_size=tuple(input_size[-2:])), "Exporting")
    if precision == "fp32":
        return fp32
    if not calibration:
        raise ValueError("precision int8 needs calibration images to quantize the model.")
    extra = f"calibration={array_digest(calibration)} quantizer={quantizer_version()}"
    int8 = folder / f"{architecture}-{_key(weights, input_size, 'int8', extra)}.onnx"
    _ensure(int8, lambda path: quantize_int8(fp32, path, calibration), "Quantizing")
    return int8


def _ensure(path: pathlib.Path, write: Callable[[str], object], verb: str) -> None:
    """Write ``path`` with ``write(temporary)`` unless it exists (another process may be writing it)."""
    if path.is_file():
        _logger.info("Using the cached %s", path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # written by another process while this one waited
            return
        _logger.warning("%s the model to %s (once; later runs reuse it)", verb, path)
        atomic_write(path, write)


def discard(path: pathlib.Path) -> None:
    """Remove a cached file that cannot be loaded, so that the next call writes it again."""
    with FileLock(str(path) + ".lock"):
        path.unlink(missing_ok=True)
