"""The PyTorch inference backend: the model in eager mode, with what helps a CNN on the CPU."""

import copy
import logging

import torch
import torch.nn as nn

from .._amp import autocast_context, check_amp

__all__ = ["TorchBackend", "inference_copy"]

_logger = logging.getLogger(__name__)


def inference_copy(model: nn.Module, fold_batchnorm: bool = True, channels_last: bool = False) -> nn.Module:
    """``model`` prepared for inference without touching it: a copy whose backbone is its own (the
    trunk with every ``Conv2d -> BatchNorm2d`` pair folded into one convolution by ``torch.fx``, the
    weights in channels-last format, as asked), sharing every other module (embeddings, attention,
    head) with ``model``. ``model`` itself when neither is asked or it has no ``backbone``.

    A folded convolution computes the same function (to float rounding, about 1e-7 relative) in one
    pass instead of two. Only the trunk is traced, as timm builds it; a trunk that ``torch.fx`` cannot
    trace is kept unfolded (logged), so the result is always correct. The copy costs the memory of
    the backbone (180 MB for ResNet-101).
    """
    backbone = getattr(model, "backbone", None)
    if not (fold_batchnorm or channels_last) or backbone is None or model.training:
        return model
    backbone = copy.deepcopy(backbone)
    if fold_batchnorm and hasattr(backbone, "trunk"):
        from torch.fx.experimental.optimization import fuse

        try:
            backbone.trunk = fuse(backbone.trunk, inplace=True)
        except Exception as error:  # torch.fx raises many types for code it cannot trace
            _logger.info("BatchNorm not folded: the trunk cannot be traced by torch.fx (%s)", error)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    prepared = copy.copy(model)  # shallow: the same embeddings, attention and head
    prepared._modules = dict(model._modules)
    prepared._modules["backbone"] = backbone
    return prepared


class TorchBackend:
    """``images [N, C, H, W] -> logits [N, n]`` with the PyTorch model (``backend="torch"``).

    Runs under ``torch.inference_mode()`` and the ``amp`` autocast. With ``channels_last`` the
    model's weights and each batch use the channels-last memory format (oneDNN's preferred layout on
    CPU, and the tensor cores' on CUDA); with ``fold_batchnorm`` BatchNorm is folded into the
    trunk's convolutions. Both apply to a copy of the backbone (:func:`inference_copy`), so ``model``
    is left as it is. Neither changes the results beyond float rounding (|Δp| about 1e-7);
    benchmarks/bench_predict.py measures each.

    Args:
        model: an eval-mode MSRN on ``device``.
        device: where the model is.
        amp: ``None``/``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        channels_last: channels-last memory format.
        fold_batchnorm: fold BatchNorm into the convolutions of the trunk.
    """

    name = "torch"
    precision = "fp32"

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        amp: str | None = None,
        channels_last: bool = True,
        fold_batchnorm: bool = True,
    ) -> None:
        check_amp(amp, device)
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.network = inference_copy(model, fold_batchnorm, channels_last)
        self.dtype = next(model.parameters()).dtype

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of normalised images (moved to the device and dtype of the model)."""
        images = images.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(self.device, self.amp):
            return self.network(images)
