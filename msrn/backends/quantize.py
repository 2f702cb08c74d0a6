"""int8 quantization of an exported MSRN with onnxruntime: static, calibrated on the user's images.

Weights are int8 per output channel and activations uint8 per tensor (onnxruntime's recommended
"U8S8" for x86), in QDQ format, for the convolutions of the backbone and the branches and the
matrix products of the head (``Conv``, ``MatMul``, ``Gemm``). The attention (eq. 7-9: products,
softmax, sums), the tanh and the activations stay float32. The activations' ranges are the
minimum and maximum seen on the calibration images, so those should look like the images to label
(a few dozen suffice). docs/predict.md gives the accuracy cost measured on the generated set.
"""

import contextlib
import logging
import os
import pathlib
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from ..export import INPUT_NAME

__all__ = ["quantize_int8", "quantizer_version", "QUANTIZED_OPS"]

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def quantizer_version() -> str:
    """The onnxruntime version (its quantizer decides what an int8 file holds), or ``"none"``."""
    try:
        import onnxruntime
    except ImportError:
        return "none"
    return onnxruntime.__version__


class _QuietRootLogger(logging.Filter):
    """onnxruntime's quantizer logs advice through the root logger; drop its records meanwhile."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.replace(os.sep, "/").count("/onnxruntime/")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _QuietRootLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize_int8(
    fp32_path: "os.PathLike[str] | str",
    int8_path: "os.PathLike[str] | str",
    calibration: Sequence[np.ndarray],
) -> pathlib.Path:
    """Write the static int8 model of the ONNX file ``fp32_path`` to ``int8_path``.

    Args:
        calibration: normalised image batches ``[b, C, H, W]`` float32, preprocessed exactly as the
            images to label (:class:`msrn.Predictor` does it with its own transform).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("int8 quantization needs at least one calibration image.")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="msrn-int8-") as scratch, _quiet_quantizer():
        # Shape inference and graph clean-up first: without them the quantizer leaves QDQ pairs that
        # onnxruntime cannot fuse, and the int8 model runs slower than the float one.
        prepared = pathlib.Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            calibrate_method=CalibrationMethod.MinMax,
        )
    return pathlib.Path(int8_path)
