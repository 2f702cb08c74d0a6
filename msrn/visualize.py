"""Where MSRN looks for each label: semantic guided attention maps as arrays and as pictures.

For branch ``b`` and label ``k`` the map is the attention of eq. 8, ``a[p, k, c]`` (a softmax over
the positions ``p`` of the branch's feature map), averaged over the channels ``c``: a
``[H_b, W_b]`` map that sums to one. :func:`label_attention_maps` computes them for a batch,
:func:`resize_maps` brings every branch to the image size, and :func:`attention_grid` draws a
Pillow picture: one row per label, the image and then one overlay per branch.

Only Pillow and NumPy are used for drawing (no plotting library).
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .data.image import to_rgb_image
from .models import MSRN

__all__ = [
    "label_attention_maps",
    "resize_maps",
    "branch_names",
    "heatmap_colors",
    "overlay_heatmap",
    "attention_grid",
    "tensor_to_image",
]

# Colour ramp for heat maps, low to high (our own: dark blue, blue, cyan, yellow, red).
_RAMP = np.array([[0, 0, 96], [0, 64, 255], [0, 220, 220], [255, 230, 0], [220, 0, 0]], dtype=np.float32)


@torch.no_grad()
def label_attention_maps(model: MSRN, images: torch.Tensor) -> list[torch.Tensor]:
    """Per-label semantic guided attention of every branch (eq. 8, averaged over channels).

    Args:
        model: an :class:`~msrn.MSRN` whose attention is guided by label embeddings
            (``embeddings`` ``"both"``, ``"label"`` or ``"none"``).
        images: normalised images ``[N, C, H, W]``, as the model is fed.

    Returns:
        One tensor per branch, shallowest first: ``[N, n, H_b, W_b]``, each map summing to one over
        its positions (row ``k`` is label ``k``).
    """
    if not isinstance(model, MSRN):
        raise TypeError(f"label_attention_maps expects an msrn.MSRN model, got {type(model).__name__}.")
    return model.label_attention_maps(images)


def resize_maps(maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample the branch maps of :func:`label_attention_maps` to ``size = (H, W)``.

    Returns ``[N, n, B, H, W]``: image, label, branch. The values are interpolated attention
    weights (no renormalisation).
    """
    if len(maps) == 0:
        raise ValueError("resize_maps needs at least one branch map.")
    resized = [F.interpolate(m.float(), size=tuple(size), mode="bilinear", align_corners=False) for m in maps]
    return torch.stack(resized, dim=2)


def branch_names(model: MSRN) -> list[str]:
    """Readable branch names, shallowest first, e.g. ``["layer2 /16", "layer3 /32", "layer4 /64"]``."""
    try:
        modules = list(model.backbone.trunk.feature_info.module_name())
    except (AttributeError, TypeError):
        modules = [f"branch {b}" for b in range(model.num_branches)]
    return [f"{name} /{stride}" for name, stride in zip(modules, model.backbone.branch_strides, strict=False)]


def heatmap_colors(heatmap: np.ndarray) -> np.ndarray:
    """Map a 2-D array to RGB ``uint8`` ``[H, W, 3]``, its minimum dark blue and its maximum red."""
    values = np.asarray(heatmap, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"heatmap must be a 2-D array, got shape {list(values.shape)}.")
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    position = scaled * (len(_RAMP) - 1)
    index = np.clip(np.floor(position).astype(np.int64), 0, len(_RAMP) - 2)
    fraction = (position - index)[..., None]
    colors = _RAMP[index] * (1.0 - fraction) + _RAMP[index + 1] * fraction
    return np.round(colors).astype(np.uint8)


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend the colour-mapped ``heatmap`` (resized to the image, bilinear) over ``image``.

    ``alpha`` is the weight of the heat map (0: image only, 1: heat map only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    image = to_rgb_image(image)
    heat = Image.fromarray(heatmap_colors(heatmap)).resize(image.size, Image.BILINEAR)
    return Image.blend(image, heat, alpha)


def tensor_to_image(
    image: torch.Tensor,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> Image.Image:
    """Undo the normalisation of one ``[3, H, W]`` model input and return it as a Pillow image."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"tensor_to_image expects one RGB image [3, H, W], got {list(image.shape)}.")
    pixels = image.detach().float().cpu()
    pixels = pixels * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def attention_grid(
    image: Image.Image,
    maps: np.ndarray,
    titles: Sequence[str],
    column_names: Sequence[str] | None = None,
    cell_size: int = 224,
    alpha: float = 0.5,
) -> Image.Image:
    """A picture with one row per label: the image, then the image under each branch's map.

    Args:
        image: the picture the maps refer to (e.g. the model input, :func:`tensor_to_image`).
        maps: ``[L, B, h, w]`` attention maps (any resolution; each is resized to the cell).
        titles: ``L`` row titles, e.g. ``"dog 0.93"``.
        column_names: ``B`` branch names (default ``branch 0``...).
        cell_size: height of a cell in pixels (width follows the image's aspect ratio).
        alpha: heat-map weight of the overlays.

    Returns:
        An RGB image of ``L`` rows and ``B + 1`` columns plus a header line and row titles.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [labels, branches, h, w], got shape {list(maps.shape)}.")
    num_rows, num_branches = maps.shape[:2]
    if len(titles) != num_rows:
        raise ValueError(f"got {len(titles)} titles for {num_rows} rows of maps.")
    if column_names is None:
        column_names = [f"branch {b}" for b in range(num_branches)]
    column_names = list(column_names)
    if len(column_names) != num_branches:
        raise ValueError(f"got {len(column_names)} column names for {num_branches} branches.")
    image = to_rgb_image(image)  # upright (EXIF), transparency on white, as the model saw it
    cell_h = cell_size
    cell_w = max(1, round(cell_size * image.width / image.height))
    font = _font(max(10, cell_size // 14))
    text_h = max(12, cell_size // 10)
    pad = 4
    width = (num_branches + 1) * (cell_w + pad) + pad
    height = text_h + num_rows * (text_h + cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    base = image.resize((cell_w, cell_h), Image.BILINEAR)
    for column, name in enumerate(["image", *column_names]):
        draw.text((pad + column * (cell_w + pad), 1), name, fill=(0, 0, 0), font=font)
    for row in range(num_rows):
        top = text_h + row * (text_h + cell_h + pad)
        draw.text((pad, top + 1), titles[row], fill=(0, 0, 0), font=font)
        canvas.paste(base, (pad, top + text_h))
        for branch in range(num_branches):
            overlay = overlay_heatmap(base, maps[row, branch], alpha=alpha)
            canvas.paste(overlay, (pad + (branch + 1) * (cell_w + pad), top + text_h))
    return canvas
