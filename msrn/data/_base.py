"""Shared machinery of the multi-label datasets: image decoding, bad-image policy, sample layout."""
import logging
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["MultiLabelDataset", "load_rgb_image", "BadImageError"]

_logger = logging.getLogger(__name__)

# Letterbox colour under transparent pixels when an RGBA/LA/palette image is flattened to RGB.
_TRANSPARENT_FILL = (255, 255, 255)


class BadImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, or not an image)."""


def load_rgb_image(path: "os.PathLike[str] | str") -> Image.Image:
    """Decode ``path`` fully and return an RGB image.

    Grayscale, palette, 16-bit, CMYK and images with transparency are converted to RGB
    (transparent pixels become white). A missing file raises ``FileNotFoundError``; a corrupt or
    truncated one raises :class:`BadImageError`; both name the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later inside a transform
            return _to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImageError(
            f"Cannot decode image {path}: {error}. Replace or delete the file, or pass "
            f"skip_bad_images=True (--skip-bad-images) to leave such images out."
        ) from error


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _TRANSPARENT_FILL)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16/32-bit grayscale: scale to 8 bits by the image's own range instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) * (255.0 / (high - low))
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


class MultiLabelDataset(torch.utils.data.Dataset):
    """Images with a fixed list of labels; subclasses parse their annotation format.

    Each sample is ``(image, target, difficult)``:

    - ``image``: the RGB PIL image passed through ``transform`` (usually a ``[3, H, W]`` tensor);
    - ``target``: float32 ``[n]``, 1 where the label is present (VOC "difficult"-only labels
      included: they count as positive for training, docs/design.md section 6);
    - ``difficult``: bool ``[n]``, True where the label is present only through difficult objects;
      evaluation ignores those entries (docs/design.md section 7).

    Attributes:
        classes: the ``n`` label names, in target order.
        image_paths: one path per sample.
        targets: int64 ``[N, n]`` 0/1 matrix (what ``target`` holds), e.g. for the label graph.
        difficult: bool ``[N, n]``.
        skipped_images: ``(path, reason)`` of images left out by ``skip_bad_images``.
    """

    def __init__(
        self,
        image_paths: Sequence[str],
        targets: np.ndarray,
        difficult: Optional[np.ndarray],
        classes: Sequence[str],
        transform: Optional[Callable] = None,
        skip_bad_images: bool = False,
    ) -> None:
        targets = np.asarray(targets, dtype=np.int64)
        if difficult is None:
            difficult = np.zeros_like(targets, dtype=bool)
        difficult = np.asarray(difficult, dtype=bool)
        if targets.shape != (len(image_paths), len(classes)) or difficult.shape != targets.shape:
            raise ValueError(
                f"targets/difficult must be [{len(image_paths)}, {len(classes)}], got "
                f"{list(targets.shape)} and {list(difficult.shape)}."
            )
        self.classes: List[str] = list(classes)
        self.transform = transform
        self.skipped_images: List[Tuple[str, str]] = []
        keep = np.ones(len(image_paths), dtype=bool)
        missing = [path for path in image_paths if not os.path.isfile(path)]
        if missing and not skip_bad_images:
            raise FileNotFoundError(
                f"{len(missing)} image file(s) not found, first: {missing[0]}. Fix the paths, or pass "
                f"skip_bad_images=True (--skip-bad-images) to leave them out."
            )
        if skip_bad_images:
            for index, path in enumerate(image_paths):
                try:
                    load_rgb_image(path)
                except (FileNotFoundError, BadImageError) as error:
                    keep[index] = False
                    self.skipped_images.append((path, str(error)))
            if self.skipped_images:
                _logger.warning("Skipped %d unreadable image(s) of %d; first: %s", len(self.skipped_images),
                                len(image_paths), self.skipped_images[0][0])
        self.image_paths: List[str] = [path for path, k in zip(image_paths, keep) if k]
        self.targets = targets[keep]
        self.difficult = difficult[keep]
        if not self.image_paths:
            raise ValueError("The dataset has no usable images (all were skipped as unreadable).")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int):
        image = load_rgb_image(self.image_paths[index])
        if self.transform is not None:
            image = self.transform(image)
        target = torch.from_numpy(self.targets[index].astype(np.float32))
        difficult = torch.from_numpy(self.difficult[index].copy())
        return image, target, difficult

    def __repr__(self) -> str:
        return f"{type(self).__name__}(images={len(self)}, classes={self.num_classes})"
