"""Reading an image file as an RGB picture: the one decoding step behind the data sets, ``msrn predict``,
``msrn evaluate``, the attention pictures and the ONNX example, so that a file gives the same pixels on
every path (:func:`load_rgb_image`).
"""

import os
import pathlib
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "load_rgb_image",
    "to_rgb_image",
    "BadImageError",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "find_image_files",
    "check_image_header",
]

# 80 megapixels: above any camera photo used for training (a decoded RGB copy is 240 MB), and below
# Pillow's default warning level, so an accepted image never triggers Pillow's bomb warning.
DEFAULT_MAX_PIXELS = 80_000_000

# File endings taken from a folder by :func:`find_image_files`.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Colour under transparent pixels when an image with transparency is flattened to RGB.
_TRANSPARENT_FILL = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
# What Pillow's format plugins may raise on malformed data, besides OSError and ValueError.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    Image.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image file that cannot be used: corrupt, truncated, not an image, or over the pixel limit.

    ``path`` is the file and ``reason`` what was wrong with it (the message adds how to go on); both
    are ``None`` when the error was rebuilt from its message alone (e.g. in a DataLoader worker).
    """

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


def _bad_image(path: str, reason: str) -> BadImageError:
    return BadImageError(
        f"Bad image {path}: {reason}. Replace or delete the file, or leave such images out with "
        f"skip_bad_images=True (--skip-bad-images).",
        path=path,
        reason=reason,
    )


def not_a_file(path: "os.PathLike[str] | str", what: str = "File") -> str:
    """Why ``path`` is not a regular file, for an error message: not found, or a folder, device, pipe
    or socket (a file such as ``/dev/zero`` would be read without end)."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return f"{what} not found: {path}"
    if os.path.isdir(path):
        kind = "a folder"
    elif not os.path.exists(path):
        kind = "a broken symbolic link"
    else:
        kind = "a device, pipe or other special file"
    return f"{what} {path} is {kind}, not a regular file"


def load_rgb_image(
    path: "os.PathLike[str] | str", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode ``path`` fully and return it as an upright RGB image.

    In order:

    1. an image with more than ``max_pixels`` pixels is refused before decoding (a decompression
       bomb: a small file whose header claims e.g. 100000 x 100000 pixels). The limit is this
       argument, not Pillow's global ``Image.MAX_IMAGE_PIXELS`` (Pillow's guard still applies on top);
    2. the whole file is decoded, so that a truncated file fails here, naming it, not in a transform;
    3. the picture is turned upright by its EXIF orientation tag (as a photo viewer shows it);
    4. it is converted to RGB by :func:`to_rgb_image`.

    Args:
        path: the image file.
        max_pixels: largest ``width * height`` accepted; ``None`` accepts any size that Pillow's own
            guard (``PIL.Image.MAX_IMAGE_PIXELS``) lets through.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        BadImageError: the file is not a readable image, or has more than ``max_pixels`` pixels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(not_a_file(path, "Image file"))
    too_large = None
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                too_large = (
                    f"its header claims {width} x {height} = {width * height:,} pixels, more than the limit "
                    f"of {max_pixels:,} (a decompression bomb, or a huge scan: downscale it)"
                )
            else:
                image.load()  # decode now: a truncated file fails here, not later inside a transform
                return to_rgb_image(image)
    except Image.DecompressionBombError as error:
        raise _bad_image(path, f"too many pixels ({error})") from None
    except _DECODE_ERRORS as error:
        raise _bad_image(path, _describe(error)) from error
    raise _bad_image(path, too_large)


def check_image_header(
    path: "os.PathLike[str] | str", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """Read only the header of ``path`` (format, size) and return ``(width, height)``: a check of a
    whole data set in seconds, before a long run reads the pixels with :func:`load_rgb_image`.

    It finds a missing or empty file, a file that is not an image (or is cut off inside its header)
    and one over ``max_pixels``; a file cut off later in its pixel data is found only when decoded.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        BadImageError: as :func:`load_rgb_image`, for what the header shows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(not_a_file(path, "Image file"))
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise _bad_image(path, f"too many pixels ({error})") from None
    except _DECODE_ERRORS as error:
        raise _bad_image(path, _describe(error)) from error
    if max_pixels is not None and width * height > max_pixels:
        raise _bad_image(
            path,
            f"its header claims {width} x {height} = {width * height:,} pixels, more than "
            f"the limit of {max_pixels:,}",
        )
    return width, height


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if "cannot identify image file" in text:
        return "not an image file Pillow can read"
    return text


def to_rgb_image(image: Image.Image) -> Image.Image:
    """A new upright RGB copy of an opened Pillow ``image``.

    - The EXIF orientation tag is applied.
    - Transparent pixels (RGBA, LA, palette or colour-key transparency) become white.
    - 16-bit grayscale is scaled to 8 bits (``v * 255 / 65535``). 32-bit integer pixels are taken as
      8-bit when they fit in 0..255, as 16-bit when they fit in 0..65535, and are otherwise stretched
      from their minimum to their maximum. Float pixels are taken as 0..1 when they fit, as 0..255
      when those fit, and are otherwise stretched; NaN and infinite pixels become black.
    - CMYK, grayscale, bilevel and palette images go through Pillow's conversion.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(image), mode="L").convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _TRANSPARENT_FILL)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return _clip(values.astype(np.float64) * (255.0 / 65535.0))
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        return _clip(values * 255.0)
    if low >= 0.0 and high <= 255.0:
        return _clip(values)
    if image.mode == "I" and low >= 0.0 and high <= 65535.0:
        return _clip(values * (255.0 / 65535.0))
    stretched = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return _clip(np.where(finite, stretched, 0.0))


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def find_image_files(
    folder: "os.PathLike[str] | str", suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[pathlib.Path]:
    """The files under ``folder`` (recursively, through symlinked sub-folders, each real folder once)
    whose ending is one of ``suffixes`` (case-insensitive), sorted."""
    suffixes = tuple(s.lower() for s in suffixes)
    found, seen = [], set()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop, or two links to one folder
            subdirectories[:] = []
            continue
        seen.add(real)
        found.extend(pathlib.Path(directory, name) for name in files if name.lower().endswith(suffixes))
    return sorted(p for p in found if p.is_file())
