"""Image transforms of the paper's recipe (docs/design.md section 6).

Training: :class:`MultiScaleCrop` to the input size (crop sides drawn from ``scales`` times the
short side, the two sides at most ``max_distort`` scale steps apart, the crop placed at one of five
fixed positions: four corners and centre), a horizontal flip, ImageNet normalisation.
Evaluation: a plain resize to ``image_size x image_size`` (no crop), then the same normalisation.

Beyond the paper (off by default): timm's RandAugment (:func:`randaugment_transform`) after the crop
and flip, and Cutout (torchvision's ``RandomErasing``) after the normalisation.
"""

import re
from collections.abc import Sequence

import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import RandAugment as _TimmRandAugment
from timm.data.auto_augment import rand_augment_transform
from torchvision import transforms as T

from .image import to_rgb_image

__all__ = [
    "MultiScaleCrop",
    "train_transform",
    "eval_transform",
    "randaugment_transform",
    "PAPER_CROP_SCALES",
]

PAPER_CROP_SCALES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6)

_RANDAUGMENT_SYNTAX = (
    "timm's RandAugment syntax: 'rand' then '-'-separated sections, each at most once: m<magnitude, "
    "integer 0-10 or up to mmax>, n<operations per image, integer>, p<probability of each operation, "
    "0-1>, mstd<standard deviation of the magnitude, >100 for uniform>, mmax<largest magnitude, "
    "integer>, inc<0|1: operations that grow with the magnitude>, t<weights|3a|3aw: operation set>; "
    "e.g. 'rand-m9-mstd0.5-inc1'"
)
_RANDAUGMENT_SECTION = re.compile(r"(mstd|mmax|inc|m|n|p|t)(.+)")
_RANDAUGMENT_SETS = ("weights", "3a", "3aw")
_MAX_MAGNITUDE = 10  # timm's default upper bound of the magnitude (its _LEVEL_DENOM)


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


def _check_randaugment_spec(spec: str) -> None:
    """Refuse a RandAugment ``spec`` that timm would reject with an assertion, or silently misread."""

    def refuse(problem: str) -> None:
        raise ValueError(f"randaugment {spec!r}: {problem}. Expected {_RANDAUGMENT_SYNTAX}.")

    if not isinstance(spec, str):
        refuse("not a string")
    name, *sections = spec.split("-")
    if name != "rand":
        refuse("it must start with 'rand'")
    seen: dict[str, str] = {}
    for section in sections:
        if section in ("mstd", "mmax", "inc", "m", "n", "p", "t"):
            refuse(f"section {section!r} has no value")
        match = _RANDAUGMENT_SECTION.fullmatch(section)
        if match is None:
            refuse(f"unknown section {section!r}")
        key, value = match.groups()
        if key in seen:
            refuse(f"section {key!r} given twice")
        seen[key] = value
        if key in ("m", "n", "mmax") and not value.isdigit():
            refuse(f"{key} takes a whole number, got {value!r}")
        if key == "inc" and value not in ("0", "1"):
            refuse(f"inc takes 0 or 1, got {value!r}")
        if key == "t" and value not in _RANDAUGMENT_SETS:
            refuse(f"unknown operation set {value!r}")
        if key in ("p", "mstd"):
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not (number >= 0 and (key != "p" or number <= 1)):
                refuse(f"{key} takes a number {'in 0-1' if key == 'p' else '>= 0'}, got {value!r}")
    largest = int(seen.get("mmax", _MAX_MAGNITUDE))
    if "m" in seen and int(seen["m"]) > largest:
        refuse(f"magnitude {seen['m']} is above the largest, {largest} (raise it with mmax)")


def _posterize(image: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize with the bits kept to Pillow's 1-8.

    timm asks for 0 bits at the low magnitudes of ``Posterize`` and the high ones of
    ``PosterizeIncreasing`` (fewer than 0 above magnitude 10 with ``mmax``); Pillow 13 refuses them
    (older Pillow returned an all-black image). Those keep 1 bit here; 8 or more is the image itself.
    """
    if bits_to_keep >= 8:
        return image
    return ImageOps.posterize(image, max(1, int(bits_to_keep)))


class _RGBRandAugment(_TimmRandAugment):
    """timm's RandAugment on an RGB copy of images of other modes (its fill colour is RGB)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return super().__call__(image if image.mode == "RGB" else to_rgb_image(image))


def randaugment_transform(
    spec: str,
    image_size: int = 448,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    interpolation: int = Image.BILINEAR,
):
    """timm's RandAugment for ``spec`` (e.g. ``"rand-m9-mstd0.5-inc1"``), on ``image_size`` images.

    The hyper-parameters are those of ``timm.data.create_transform``: areas moved into view by a
    rotation, shear or translation are filled with ``mean`` (the normalisation's mean colour, so they
    become zeros after it), absolute translations go up to 45% of ``image_size``, and geometric
    operations resample with ``interpolation``. Randomness comes from Python's ``random`` and
    numpy's global generator (:class:`msrn.data.SeededAugmentation` seeds both per sample).

    Safe with any Pillow: where timm's posterize asks for fewer than 1 bit (``Posterize`` below
    magnitude 2.5, ``PosterizeIncreasing`` at 10 and above, reached with ``mstd`` noise), it keeps 1
    bit, which Pillow 13 accepts (older Pillow made the image black). Images of other modes than RGB
    are converted to RGB first (:func:`msrn.data.to_rgb_image`); the result is RGB of the same size.

    Raises:
        ValueError: ``spec`` does not follow timm's syntax (the message gives it).
    """
    _check_randaugment_spec(spec)
    hparams = dict(
        translate_const=int(image_size * 0.45),
        img_mean=tuple(min(255, round(255 * channel)) for channel in mean),
        interpolation=interpolation,
    )
    timm_augment = rand_augment_transform(spec, hparams)
    for op in timm_augment.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize  # this instance's op only: timm's tables stay as they are
    return _RGBRandAugment(timm_augment.ops, timm_augment.num_layers, timm_augment.choice_weights)


def train_transform(
    image_size: int = 448,
    scales: Sequence[float] = PAPER_CROP_SCALES,
    max_distort: int = 2,
    hflip: float = 0.5,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    randaugment: str | None = None,
    cutout: float = 0.0,
) -> T.Compose:
    """The paper's training augmentation: multi-scale crop, horizontal flip, normalisation.

    Beyond the paper, both off by default: ``randaugment``, a timm RandAugment spec applied after the
    crop and flip (:func:`randaugment_transform`); ``cutout``, the probability of erasing one random
    rectangle per image (torchvision's ``RandomErasing``: 2-33% of the image, aspect 0.3-3.3, filled
    with zeros, i.e. the mean colour, after the normalisation).

    Returns a callable mapping an RGB PIL image to a float ``[3, image_size, image_size]`` tensor.

    Raises:
        ValueError: a bad ``randaugment`` spec, ``cutout`` outside 0-1, or bad crop ``scales``.
    """
    if not 0.0 <= cutout <= 1.0:
        raise ValueError(
            f"cutout is the probability of erasing a rectangle of each image, in 0-1; got {cutout}."
        )
    steps = [
        MultiScaleCrop(image_size, scales=scales, max_distort=max_distort),
        T.RandomHorizontalFlip(hflip),
    ]
    if randaugment:
        steps.append(randaugment_transform(randaugment, image_size, mean))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if cutout > 0:
        steps.append(T.RandomErasing(p=cutout, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0))
    return T.Compose(steps)


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
