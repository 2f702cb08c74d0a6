"""Export a trained MSRN to ONNX: one ``images -> logits`` graph with a dynamic batch dimension.

The label and group embeddings (paper eq. 4-5) do not depend on the image, so the exported graph
holds them as constants: it contains the backbone, the semantic guided attention (eq. 7-9) and the
head, and a runtime without PyTorch only has to feed normalised images. The preprocessing the
model expects (input size, mean, std, interpolation) and the label names are written into the ONNX
file's metadata (``metadata_props``) so that a runtime can read them back.
"""

import json
import logging
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ._io import atomic_write
from .models import MSRN

__all__ = ["export_onnx", "onnx_metadata", "resolve_input_size", "run_onnx", "check_opset", "DEFAULT_OPSET"]

_logger = logging.getLogger(__name__)

# Opset 17 is served by every onnxruntime release since 1.11 and covers all the ops MSRN needs.
DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class _FrozenEmbeddingsMSRN(nn.Module):
    """``images -> logits`` with the image-independent semantic queries ``[E_l; E_g]`` (and, for the
    label-wise head, the label embeddings ``E_l`` its read-out starts from) stored as constant
    buffers, so that the exported graph needs no graph-attention ops."""

    def __init__(self, model: MSRN) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            embeddings = model.label_group_embeddings()
            self.register_buffer("queries", model.semantic_queries().detach().clone())
            self.register_buffer("label_embeddings", embeddings[0].detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(images, queries=self.queries)
        return self.model.forward_head(features, label_embeddings=self.label_embeddings)


def resolve_input_size(model: MSRN, img_size: int | Sequence[int] | None = None) -> tuple:
    """``(C, H, W)`` of the exported input: ``img_size`` (``H`` or ``(H, W)``) or the model's
    ``pretrained_cfg["input_size"]``; checked against the backbone's smallest input."""
    if img_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        height, width = tuple(cfg.get("input_size", (3, 448, 448)))[-2:]
    elif isinstance(img_size, int):
        height = width = img_size
    else:
        height, width = tuple(img_size)
    minimum = model.backbone.min_input_size
    if height < minimum or width < minimum:
        raise ValueError(
            f"img_size {height}x{width} is too small for backbone {model.backbone.backbone_name!r}: "
            f"height and width must be at least {minimum} px."
        )
    return model.backbone.in_chans, int(height), int(width)


def onnx_metadata(model: MSRN, input_size: Sequence[int]) -> dict[str, str]:
    """The key/value strings :func:`export_onnx` stores in the ONNX file (all JSON-encoded)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return {
        "architecture": json.dumps(cfg.get("architecture", type(model).__name__)),
        "label_names": json.dumps(model.get_label_names()),
        "input_size": json.dumps(list(input_size)),
        "mean": json.dumps(list(cfg.get("mean", IMAGENET_DEFAULT_MEAN))),
        "std": json.dumps(list(cfg.get("std", IMAGENET_DEFAULT_STD))),
        "interpolation": json.dumps(cfg.get("interpolation", "bilinear")),
        "crop_mode": json.dumps(cfg.get("crop_mode", "squash")),
        "crop_pct": json.dumps(cfg.get("crop_pct", 1.0)),
        "output": json.dumps("logits; apply a sigmoid for per-label probabilities"),
    }


def _add_metadata(path: pathlib.Path, metadata: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        _logger.warning(
            "The onnx package is not installed: the ONNX file is written without its metadata "
            "(label names, preprocessing). pip install onnx to include them."
        )
        return
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_onnx(
    model: MSRN,
    path: str | pathlib.Path,
    img_size: int | Sequence[int] | None = None,
    opset_version: int = DEFAULT_OPSET,
) -> pathlib.Path:
    """Write ``model`` as an ONNX inference graph ``images [batch, C, H, W] -> logits [batch, n]``.

    The batch dimension is dynamic; height and width are fixed at ``img_size`` (default: the
    model's ``pretrained_cfg["input_size"]``, 448 for the paper's models). The label/group
    embeddings are evaluated once and stored as constants. The model is exported in eval mode and
    left in the mode it was in.

    Args:
        model: an :class:`~msrn.MSRN` (any device; exported on its device and dtype).
        path: output ``.onnx`` file (its folder is created).
        img_size: ``H`` (square) or ``(H, W)`` of the exported input.
        opset_version: ONNX opset.

    Returns:
        The path written.
    """
    if not isinstance(model, MSRN):
        raise TypeError(f"export_onnx expects an msrn.MSRN model, got {type(model).__name__}.")
    check_opset(opset_version)
    path = pathlib.Path(path)
    input_size = resolve_input_size(model, img_size)
    parameter = next(model.parameters())
    example = torch.zeros(2, *input_size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    was_memory_efficient = model.sga.memory_efficient
    model.eval()
    # The literal eq. 7-9 is tensor ops only, which a tracer records for any batch size, whereas the
    # memory-saving SGA loops over chunks sized by the traced batch.
    model.sga.memory_efficient = False
    wrapper = _FrozenEmbeddingsMSRN(model).eval()

    def write(temporary: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # Input checks branch on static shapes (channels, height, width), which the traced graph
            # fixes anyway; only the batch dimension is dynamic.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # The TorchScript-based exporter, chosen on purpose: the dynamo exporter needs
            # onnxscript, which is not a dependency of this package.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (example,),
                temporary,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset_version,
                do_constant_folding=True,
            )
        _add_metadata(pathlib.Path(temporary), onnx_metadata(model, input_size))

    try:
        atomic_write(path, write)  # a failed export (a full disk...) leaves no half-written file
    finally:
        model.sga.memory_efficient = was_memory_efficient
        model.train(was_training)
    _logger.info(
        "Exported %s: %s %s -> %s [batch, %d]",
        path,
        INPUT_NAME,
        ["batch", *input_size],
        OUTPUT_NAME,
        model.num_classes,
    )
    return path


def check_opset(opset_version: int) -> None:
    """Refuse an ONNX opset that this torch cannot export to, before any export work."""
    if isinstance(opset_version, bool) or not isinstance(opset_version, int):
        raise ValueError(f"opset_version must be an integer, got {opset_version!r}.")
    lowest, highest = _SUPPORTED_OPSETS
    if not lowest <= opset_version <= (highest or opset_version):
        supported = f"{lowest}..{highest}" if highest else f">= {lowest}"
        raise ValueError(
            f"ONNX opset {opset_version} is not supported by torch {torch.__version__} (it exports opsets "
            f"{supported}); use the default, {DEFAULT_OPSET}."
        )


def _supported_opsets() -> tuple[int, int | None]:
    """The opsets torch's exporter accepts; torch keeps the range in a private module, so when it moves
    only the lower bound is checked here (torch still refuses the rest, less clearly)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MIN_OPSET), int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return 7, None


_SUPPORTED_OPSETS = _supported_opsets()


def run_onnx(path: str | pathlib.Path, images: Any) -> np.ndarray:
    """Run an exported file in onnxruntime (CPU) on normalised ``images [N, C, H, W]``; returns logits."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("run_onnx needs onnxruntime: pip install onnxruntime") from error
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]
