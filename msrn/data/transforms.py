"""Image transforms of the paper's recipe (docs/design.md section 6).

Training: :class:`MultiScaleCrop` to the input size (crop sides drawn from ``scales`` times the
short side, the two sides at most ``max_distort`` scale steps apart, the crop placed at one of five
fixed positions: four corners and centre), a horizontal flip, ImageNet normalisation.
Evaluation: a plain resize to ``image_size x image_size`` (no crop), then the same normalisation.
"""

from collections.abc import Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T

__all__ = ["MultiScaleCrop", "train_transform", "eval_transform", "PAPER_CROP_SCALES"]

PAPER_CROP_SCALES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6)


class MultiScaleCrop:
    """Crop a random-scale, random-aspect region at a fixed position and resize it to ``size``.

    Args:
        size: output side (square output ``size x size``).
        scales: crop sides as fractions of the image's short side.
        max_distort: largest allowed difference between the scale indices of width and height
            (0 keeps the crop square; 2 allows e.g. 1.0 x 0.8).
        interpolation: PIL resampling filter for the final resize.

    Randomness comes from ``torch``'s generator, so ``torch.manual_seed`` and DataLoader worker
    seeding make it reproducible.
    """

    def __init__(
        self,
        size: int,
        scales: Sequence[float] = PAPER_CROP_SCALES,
        max_distort: int = 2,
        interpolation: int = Image.BILINEAR,
    ) -> None:
        if not scales or any(not 0.0 < s <= 1.0 for s in scales):
            raise ValueError(f"scales must be fractions in (0, 1], got {list(scales)}.")
        if max_distort < 0:
            raise ValueError(f"max_distort must be >= 0, got {max_distort}.")
        self.size = int(size)
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = int(max_distort)
        self.interpolation = interpolation

    def _snap(self, side: int) -> int:
        # A crop within a few pixels of the output size is taken at exactly that size (no resampling blur).
        return self.size if abs(side - self.size) < 3 else side

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random ``(left, top, right, bottom)`` box for an image of the given size."""
        short = min(width, height)
        sides = [max(1, self._snap(int(short * s))) for s in self.scales]
        pairs = [
            (w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= self.max_distort
        ]
        crop_w, crop_h = pairs[int(torch.randint(len(pairs), ()).item())]
        crop_w, crop_h = min(crop_w, width), min(crop_h, height)
        step_w, step_h = (width - crop_w) // 4, (height - crop_h) // 4
        offsets = [
            (0, 0),
            (4 * step_w, 0),
            (0, 4 * step_h),
            (4 * step_w, 4 * step_h),
            (2 * step_w, 2 * step_h),
        ]
        left, top = offsets[int(torch.randint(len(offsets), ()).item())]
        return left, top, left + crop_w, top + crop_h

    def __call__(self, image: Image.Image) -> Image.Image:
        box = self.crop_box(*image.size)
        return image.crop(box).resize((self.size, self.size), self.interpolation)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scales={self.scales}, max_distort={self.max_distort})"
        )


def train_transform(
    image_size: int = 448,
    scales: Sequence[float] = PAPER_CROP_SCALES,
    max_distort: int = 2,
    hflip: float = 0.5,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> T.Compose:
    """The paper's training augmentation: multi-scale crop, horizontal flip, normalisation.

    Returns a callable mapping an RGB PIL image to a float ``[3, image_size, image_size]`` tensor.
    """
    return T.Compose(
        [
            MultiScaleCrop(image_size, scales=scales, max_distort=max_distort),
            T.RandomHorizontalFlip(hflip),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def eval_transform(
    image_size: int = 448,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> T.Compose:
    """The paper's test transform: resize to ``image_size x image_size`` (aspect not kept), normalise."""
    return T.Compose(
        [
            T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
