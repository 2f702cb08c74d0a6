"""The onnxruntime inference backend: the exported graph (msrn/export.py) run by onnxruntime on the CPU."""

import logging
import os
import pathlib

import numpy as np
import torch

from ..export import INPUT_NAME, OUTPUT_NAME

__all__ = ["OnnxRuntimeBackend", "BackendUnavailableError", "import_onnxruntime", "onnxruntime_available"]

_logger = logging.getLogger(__name__)


class BackendUnavailableError(ImportError):
    """An inference backend was asked for whose package is not installed."""


def import_onnxruntime():
    """The ``onnxruntime`` module, or a one-line :class:`BackendUnavailableError` saying what to do."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime "
            "(or pip install 'msrn[export]'), or use backend 'torch' (--backend torch)."
        ) from None
    return onnxruntime


def onnxruntime_available() -> bool:
    """Whether ``import onnxruntime`` works."""
    try:
        import_onnxruntime()
    except BackendUnavailableError:
        return False
    return True


class OnnxRuntimeBackend:
    """``images [N, C, H, W] -> logits [N, n]`` with an ONNX file in an onnxruntime CPU session
    (``backend="onnxruntime"``), all graph optimisations on.

    Args:
        path: the ONNX file (:func:`msrn.backends.onnx_cache.cached_onnx` makes and caches it).
        precision: what the file holds, ``"fp32"`` or ``"int8"`` (reported, not checked).
        threads: onnxruntime's intra-op threads; default ``torch.get_num_threads()``, so both backends
            use as many cores (``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set it).
    """

    name = "onnxruntime"

    def __init__(
        self, path: "os.PathLike[str] | str", precision: str = "fp32", threads: int | None = None
    ) -> None:
        onnxruntime = import_onnxruntime()
        self.path = pathlib.Path(path)
        self.precision = precision
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about unused initializers etc.
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        (shape,) = [list(i.shape) for i in self.session.get_inputs() if i.name == INPUT_NAME]
        self.input_size = tuple(shape[1:])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32, CPU) of a batch of normalised images."""
        if tuple(images.shape[1:]) != self.input_size:
            raise ValueError(
                f"the ONNX model takes images of shape {list(self.input_size)}, got {list(images.shape[1:])}."
            )
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits)
