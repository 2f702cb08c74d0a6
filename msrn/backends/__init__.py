"""Inference backends: what turns a batch of preprocessed images into logits for
:class:`msrn.Predictor`, ``msrn predict`` and ``msrn evaluate``.

Every backend gets the same input (the images decoded and transformed by the predictor's or the
data set's one code path) and returns logits, so probabilities and thresholds are applied
identically whatever runs the model:

- ``"torch"``: the PyTorch model, eager, under ``inference_mode`` with BatchNorm folded into the
  convolutions and the channels-last memory format (:class:`TorchBackend`); any device, ``amp``.
- ``"onnxruntime"``: the model exported once to ONNX (msrn/export.py), cached under
  ``$MSRN_CACHE/onnx`` by a hash of its weights, and run by onnxruntime on the CPU with all graph
  optimisations (:class:`OnnxRuntimeBackend`). Its probabilities match torch's to about 1e-7.
- ``"auto"`` (the default): ``"onnxruntime"`` when the onnxruntime package is installed, the
  device is the CPU, the model is float32 and no ``amp`` is asked for; else ``"torch"``. When the
  export fails (a backbone the exporter cannot trace, a cache folder that cannot be written) it
  warns and runs torch.

``precision="int8"`` (onnxruntime only) runs a statically quantized copy of the exported model,
calibrated on images the caller provides (msrn/backends/quantize.py).
"""

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from .._warnings import warn
from .onnx_cache import cached_onnx, discard, model_digest, onnx_cache_dir
from .onnxruntime_backend import (
    BackendUnavailableError,
    OnnxRuntimeBackend,
    import_onnxruntime,
    onnxruntime_available,
)
from .torch_backend import TorchBackend, inference_copy

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BackendUnavailableError",
    "TorchBackend",
    "OnnxRuntimeBackend",
    "create_backend",
    "resolve_backend",
    "cached_onnx",
    "onnx_cache_dir",
    "model_digest",
    "inference_copy",
    "onnxruntime_available",
]

_logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")


def resolve_backend(
    backend: str, device: torch.device, amp: str | None = None, precision: str = "fp32", dtype=torch.float32
) -> str:
    """``"torch"`` or ``"onnxruntime"``: the backend that runs for these settings (``"auto"`` is
    onnxruntime when it is installed and the CPU runs a float32 model without ``amp``, and always
    for int8), or a clear error for a combination that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    mixed = amp not in (None, "none")
    if backend == "auto":
        if precision == "int8":
            backend = "onnxruntime"
        else:
            suitable = device.type == "cpu" and not mixed and dtype == torch.float32
            return "onnxruntime" if suitable and onnxruntime_available() else "torch"
    if backend == "torch":
        if precision == "int8":
            raise ValueError("precision int8 runs on the onnxruntime backend: use backend 'onnxruntime'.")
        return "torch"
    if device.type != "cpu":
        raise ValueError(
            f"backend 'onnxruntime' runs on the CPU, not on {device}: use backend 'torch' on a GPU."
        )
    if mixed:
        raise ValueError(f"amp {amp!r} is for backend 'torch'; the onnxruntime backend runs fp32 or int8.")
    if dtype != torch.float32:
        raise ValueError(f"backend 'onnxruntime' exports float32 models; this one is {dtype}.")
    import_onnxruntime()  # the one-line error when it is missing
    return "onnxruntime"


def create_backend(
    model: nn.Module,
    backend: str = "auto",
    precision: str = "fp32",
    device: torch.device | None = None,
    amp: str | None = None,
    input_size: tuple[int, int, int] | None = None,
    cache_dir: "os.PathLike[str] | str | None" = None,
    calibration: Sequence[np.ndarray] | None = None,
) -> "TorchBackend | OnnxRuntimeBackend":
    """The backend that runs ``model`` (eval mode, on ``device``) for these settings.

    Args:
        backend: ``"auto"``, ``"torch"`` or ``"onnxruntime"`` (see the module's docstring).
        precision: ``"fp32"`` or ``"int8"`` (onnxruntime).
        input_size: ``(C, H, W)`` of the images the backend will get; the ONNX graph is exported for
            it (default: the model's ``pretrained_cfg``).
        cache_dir: where ONNX files are cached (default ``$MSRN_CACHE/onnx``, ``~/.cache/msrn/onnx``).
        calibration: for int8, normalised image batches ``[b, C, H, W]`` float32 that set the
            activations' ranges.
    """
    parameter = next(model.parameters())
    device = parameter.device if device is None else device
    chosen = resolve_backend(backend, device, amp, precision, parameter.dtype)
    if chosen == "torch":
        return TorchBackend(model, device, amp)
    if input_size is None:
        input_size = tuple((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 448, 448)))
    try:
        return _onnxruntime_backend(model, tuple(input_size), cache_dir, precision, calibration)
    except Exception as error:
        if backend != "auto" or precision != "fp32":
            raise
        # auto chose onnxruntime as the faster path; a model it cannot export, or a cache folder that
        # cannot be written, must not stop a prediction that torch can make.
        message = (
            f"backend 'auto': the onnxruntime backend could not be set up ({type(error).__name__}: "
            f"{error}); running the torch backend instead (backend='torch' skips this attempt)."
        )
        warn(_logger, message)
        return TorchBackend(model, device, amp)


def _onnxruntime_backend(model, input_size, cache_dir, precision, calibration) -> OnnxRuntimeBackend:
    path = cached_onnx(model, input_size, cache_dir, precision, calibration)
    try:
        return OnnxRuntimeBackend(path, precision)
    except BackendUnavailableError:
        raise
    except Exception:  # a damaged cache file (a disk error, an edit): export it again, once
        discard(path)
        path = cached_onnx(model, input_size, cache_dir, precision, calibration)
        return OnnxRuntimeBackend(path, precision)
