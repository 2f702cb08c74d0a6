"""Multi-branch feature extractor over any timm model with feature maps (paper section 3.1 and 4.1)."""

import math
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.layers import PatchEmbed

__all__ = ["MultiBranchBackbone"]

# What timm raises when a model cannot be built with ``features_only=True``.
_NO_FEATURES_ERRORS = (
    RuntimeError,
    AttributeError,
    AssertionError,
    TypeError,
    NotImplementedError,
    KeyError,
    ValueError,
)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(2, stride=2)`` of an NCHW map as three element-wise maxima of strided views.

    The same values as ``F.max_pool2d(x, 2, 2)`` (floor mode, NaN propagates), about 10x faster on
    CPU, where PyTorch's NCHW max-pool kernel also computes indices. Not differentiable like the
    max-pool (ties would share the gradient), so only for inference.
    """
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    bottom = torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2])
    return torch.maximum(top, bottom, out=top)


class MultiBranchBackbone(nn.Module):
    r"""The last ``num_branches`` feature maps of a timm model, each projected to ``embed_dim`` channels.

    For the feature map :math:`\bar f_b` of stage ``b`` (ResNet: layer2, layer3, layer4; strides 8/16/32):

    .. math::
        f_b = \mathrm{Proj}_b\big(\mathrm{MaxPool}_{2\times2,\,s2}(\mathrm{Buffer}_b(\bar f_b))\big)

    ``Buffer_b`` is a 1x1 convolution ``C_b -> C_b`` with bias on every branch but the deepest (the
    paper's "buffer convolutional layer" that damps the gradients of the lower branches; the trunk
    itself continues from the un-buffered output), and ``Proj_b`` a 1x1 convolution
    ``C_b -> embed_dim`` with bias. No normalisation and no activation.

    The trunk is ``timm.create_model(backbone, features_only=True)``, so every timm model with
    feature maps serves: CNNs (ResNet, ConvNeXt, EfficientNet, RegNet, ...) give one map per stage;
    hierarchical transformers (Swin, its NHWC maps made NCHW here) likewise; plain ViTs (ViT, DeiT,
    EVA, ...) give one map per block, their tokens reshaped to the patch grid, so the branches are
    the last ``num_branches`` blocks, all at the patch stride. ``out_indices`` picks other stages
    or blocks.

    Args:
        backbone: name of a timm model that supports ``features_only`` (``timm.list_models()``),
            optionally with a pretrained tag (``resnet101.tv_in1k``).
        num_branches: how many of the last stages feed a branch (1 to the number of stages).
        embed_dim: output width ``d`` of every branch.
        pretrained: load the trunk's pretrained weights through timm.
        in_chans: input channels.
        out_indices: the trunk's feature indices of the branches, shallowest first (default: the
            last ``num_branches``); ``len(out_indices)`` must equal ``num_branches``.
        **backbone_kwargs: passed to ``timm.create_model`` for the trunk (e.g. ``img_size=448``
            for a transformer built for another input size).

    Shapes:
        - input: ``[N, in_chans, H, W]``, with ``H, W >= min_input_size`` (and ``H, W = img_size``
          for transformers with a fixed input size)
        - output: list of ``num_branches`` tensors ``[N, embed_dim, H_b, W_b]``, shallowest first,
          ``H_b = floor(H / (2 * stride_b))`` (for the usual even sizes).
    """

    def __init__(
        self,
        backbone: str,
        num_branches: int = 3,
        embed_dim: int = 512,
        pretrained: bool = False,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        base_name = backbone.split(".", 1)[0]
        if not timm.is_model(base_name):
            raise ValueError(
                f"Unknown backbone {backbone!r}: it is not a timm model. "
                f"Use a name from timm.list_models(), e.g. 'resnet101' or 'convnext_tiny'."
            )
        if num_branches < 1:
            raise ValueError(f"num_branches must be >= 1, got {num_branches}.")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}.")
        out_indices = self._branch_indices(backbone, num_branches, out_indices, in_chans, backbone_kwargs)
        self.trunk = timm.create_model(
            backbone,
            pretrained=pretrained,
            features_only=True,
            out_indices=out_indices,
            in_chans=in_chans,
            **backbone_kwargs,
        )
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.num_branches = num_branches
        self.embed_dim = embed_dim
        self.stage_channels: list[int] = list(self.trunk.feature_info.channels())
        self.stage_reductions: list[int] = list(self.trunk.feature_info.reduction())
        # Swin, MambaOut and friends give channels-last maps; the branches take NCHW.
        self.channels_last_output = getattr(self.trunk, "output_fmt", "NCHW") == "NHWC"  # str or Format
        self.fixed_input_size = _fixed_input_size(self.trunk)
        self.buffer_convs = nn.ModuleList(
            [nn.Conv2d(c, c, kernel_size=1, bias=True) for c in self.stage_channels[:-1]] + [nn.Identity()]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.projections = nn.ModuleList(
            [nn.Conv2d(c, embed_dim, kernel_size=1, bias=True) for c in self.stage_channels]
        )
        self.reset_branch_parameters()

    @staticmethod
    def _branch_indices(
        backbone: str,
        num_branches: int,
        out_indices: Sequence[int] | None,
        in_chans: int,
        backbone_kwargs: dict,
    ) -> tuple[int, ...]:
        """The trunk's feature indices for the branches, read from the feature layout timm declares."""

        def probe_stages(device: str) -> int:
            with torch.device(device):
                probe = timm.create_model(
                    backbone.split(".", 1)[0],
                    pretrained=False,
                    features_only=True,
                    in_chans=in_chans,
                    **backbone_kwargs,
                )
            return len(probe.feature_info)

        try:
            try:  # only the feature layout is needed: skip allocation and init
                num_stages = probe_stages("meta")
            except _NO_FEATURES_ERRORS:  # some models compute with data at init (older timm's RegNet)
                num_stages = probe_stages("cpu")
        except _NO_FEATURES_ERRORS as error:
            arguments = f" with backbone_kwargs={backbone_kwargs}" if backbone_kwargs else ""
            raise ValueError(
                f"Backbone {backbone!r} cannot serve as an MSRN backbone: timm cannot build it with "
                f"features_only=True{arguments} ({type(error).__name__}: {error}). Pick a timm model with "
                f"feature maps, e.g. resnet50, convnext_tiny, efficientnet_b3, regnety_016, "
                f"swin_tiny_patch4_window7_224 or vit_small_patch16_224."
            ) from error
        if out_indices is None:
            if num_branches > num_stages:
                raise ValueError(
                    f"num_branches={num_branches} but backbone {backbone!r} has only {num_stages} "
                    f"feature stages."
                )
            return tuple(range(num_stages - num_branches, num_stages))
        chosen = tuple(int(i) for i in out_indices)
        if len(chosen) != num_branches:
            raise ValueError(
                f"out_indices={list(chosen)} names {len(chosen)} feature maps but "
                f"num_branches={num_branches}; give one index per branch."
            )
        resolved = [i % num_stages if -num_stages <= i < num_stages else None for i in chosen]
        if None in resolved or resolved != sorted(set(resolved)):
            raise ValueError(
                f"out_indices={list(chosen)} must be distinct, increasing indices into the "
                f"{num_stages} feature maps of backbone {backbone!r} (0 to {num_stages - 1}, or negative)."
            )
        return tuple(resolved)

    def reset_branch_parameters(self) -> None:
        """Initialise the buffer convs as the authors do (He-normal over the output fan), the
        projections with PyTorch's default."""
        for conv in self.buffer_convs:
            if isinstance(conv, nn.Conv2d):
                fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
                bound = 1.0 / math.sqrt(conv.in_channels)
                nn.init.uniform_(conv.bias, -bound, bound)
        for conv in self.projections:
            conv.reset_parameters()

    @property
    def min_input_size(self) -> int:
        """Smallest height/width for which the deepest branch survives its 2x2 max-pool."""
        return 2 * max(self.stage_reductions)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that says how to fix an input the trunk cannot take."""
        if x.dim() != 4:
            raise ValueError(f"Expected an image batch [N, C, H, W], got a tensor of shape {list(x.shape)}.")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"Expected {self.in_chans} input channels, got {x.shape[1]} (input shape {list(x.shape)}). "
                f"Convert images to RGB, or build the model with in_chans={x.shape[1]}."
            )
        if self.fixed_input_size is not None and tuple(x.shape[2:]) != self.fixed_input_size:
            height, width = self.fixed_input_size
            raise ValueError(
                f"Backbone {self.backbone_name!r} is built for {height}x{width} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}. Resize the images, or build the backbone for your size with "
                f"backbone_kwargs=dict(img_size={x.shape[2]}) (ViT-style models also take "
                f"dynamic_img_size=True)."
            )
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"Input {x.shape[2]}x{x.shape[3]} is too small for backbone {self.backbone_name!r}: the "
                f"deepest branch has stride {max(self.stage_reductions)} and needs a 2x2 map for its "
                f"max-pool, so height and width must be at least {self.min_input_size} px."
            )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's raw stage outputs ``bar f_b`` (no buffer, pool or projection)."""
        self.check_input(x)
        stages = self.trunk(x)
        if self.channels_last_output:
            stages = [stage.permute(0, 3, 1, 2) for stage in stages]
        return list(stages)

    def _branch_pool(self, x: torch.Tensor) -> torch.Tensor:
        inference = not (torch.is_grad_enabled() and x.requires_grad)
        exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
        if inference and not exporting and x.dim() == 4 and x.is_contiguous():
            return _max_pool_2x2(x)
        return self.pool(x)

    def forward_branches(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Buffer, pool and project raw stage outputs into ``[N, embed_dim, H_b, W_b]`` maps."""
        return [
            projection(self._branch_pool(buffer(stage)))
            for stage, buffer, projection in zip(stages, self.buffer_convs, self.projections, strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_branches(self.forward_stages(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            # timm before 1.0.31 checkpoints every top-level module of its feature wrapper on its own,
            # an in-place activation (ResNet's act1) too, which then overwrites the input saved for the
            # recompute. Out of place, it gives the same values.
            for module in self.trunk.children():
                if getattr(module, "inplace", False) is True:
                    module.inplace = False
        # FeatureGetterNet (ViT-style trunks) keeps the model, and its switch, in ``.model``.
        for module in (self.trunk, getattr(self.trunk, "model", None)):
            if hasattr(module, "set_grad_checkpointing"):
                module.set_grad_checkpointing(enable)
                return
        self.trunk.grad_checkpointing = enable

    @property
    def first_conv(self) -> str | None:
        """Name (relative to this module) of the trunk's first convolution over the image, e.g.
        ``trunk.conv1`` (ResNet), ``trunk.stem_0`` (ConvNeXt), ``trunk.model.patch_embed.proj`` (ViT);
        timm's ``first_conv`` entry. ``None`` if the trunk has no such convolution."""
        for name, module in self.trunk.named_modules():
            if isinstance(module, nn.Conv2d) and module.in_channels == self.in_chans:
                return f"trunk.{name}"
        return None

    @property
    def branch_strides(self) -> list[int]:
        """Stride of each branch's output map relative to the input (stage stride times the pool)."""
        return [2 * r for r in self.stage_reductions]

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, num_branches={self.num_branches}, embed_dim={self.embed_dim}"
        )


def _fixed_input_size(trunk: nn.Module) -> tuple[int, int] | None:
    """The ``(H, W)`` a trunk's strict patch embedding accepts (ViT, Swin, ...), or None if any size goes."""
    for module in trunk.modules():
        if isinstance(module, PatchEmbed) and module.strict_img_size and module.img_size is not None:
            return tuple(module.img_size)
    return None
