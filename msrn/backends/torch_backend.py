"""The PyTorch inference backend: the model in eager mode, with what helps a CNN on the CPU."""

import copy
import logging

import torch
import torch.nn as nn

from .._amp import autocast_context, check_amp

__all__ = ["TorchBackend", "fuse_batchnorm"]

_logger = logging.getLogger(__name__)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` whose backbone trunk has every ``Conv2d -> BatchNorm2d`` pair
    folded into one convolution (``torch.fx``), sharing all other modules with ``model``.

    The folded convolution computes the same function (to float rounding, about 1e-7 relative) in
    one pass instead of two. Only the trunk is traced, as timm builds it; a trunk that ``torch.fx``
    cannot trace is kept as it is (logged), so the result is always correct.
    """
    from torch.fx.experimental.optimization import fuse

    backbone = getattr(model, "backbone", None)
    trunk = getattr(backbone, "trunk", None)
    if trunk is None:
        return model
    try:
        fused_trunk = fuse(trunk)  # traces and folds a deep copy; ``trunk`` is left untouched
    except Exception as error:  # torch.fx raises many types for code it cannot trace
        _logger.info("BatchNorm not folded: the trunk cannot be traced by torch.fx (%s)", error)
        return model
    fused_backbone = copy.copy(backbone)  # a shallow copy: same branch convolutions, new trunk
    fused_backbone._modules = dict(backbone._modules)
    fused_backbone._modules["trunk"] = fused_trunk
    fused = copy.copy(model)
    fused._modules = dict(model._modules)
    fused._modules["backbone"] = fused_backbone
    return fused


class TorchBackend:
    """``images [N, C, H, W] -> logits [N, n]`` with the PyTorch model (``backend="torch"``).

    Runs under ``torch.inference_mode()`` and the ``amp`` autocast. With ``channels_last`` the
    model's weights and each batch use the channels-last memory format (oneDNN's preferred layout on
    CPU, and the tensor cores' on CUDA); with ``fold_batchnorm`` a copy of the trunk with BatchNorm
    folded into the convolutions runs (:func:`fuse_batchnorm`). Neither changes the results beyond
    float rounding (|Δp| about 1e-7); benchmarks/bench_predict.py measures each.

    Args:
        model: an eval-mode MSRN on ``device``; converted to channels-last in place when asked.
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
        network = fuse_batchnorm(model) if fold_batchnorm and not model.training else model
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.dtype = next(model.parameters()).dtype

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of normalised images (moved to the device and dtype of the model)."""
        images = images.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(self.device, self.amp):
            return self.network(images)
