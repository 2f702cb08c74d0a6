"""Shared machinery of the multi-label datasets: bad-image policy, sample layout, reading text files."""

import codecs
import logging
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .image import BadImageError, load_rgb_image

__all__ = ["MultiLabelDataset", "read_utf8_text", "join_inside", "unknown_entries"]

_logger = logging.getLogger(__name__)


def read_utf8_text(path: pathlib.Path) -> str:
    """The text of an annotation / CSV / split file, which must be UTF-8 (a BOM is fine).

    A UTF-16 file or a file in a legacy encoding (Latin-1, Windows-1252) raises a ``ValueError`` naming
    the file and how to re-save it, instead of a bare ``UnicodeDecodeError``.
    """
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise ValueError(
            f"{path} is UTF-16 (or another multi-byte encoding) text; save it as UTF-8 (in Excel: "
            f"'CSV UTF-8'; on the command line: iconv -f UTF-16 -t UTF-8 {path.name} > utf8-{path.name})."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); it is probably "
            f"Latin-1 / Windows-1252: save it as UTF-8 (in Excel: 'CSV UTF-8'; on the command line: "
            f"iconv -f LATIN1 -t UTF-8 {path.name} > utf8-{path.name})."
        ) from None


def join_inside(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """``folder / name`` when ``name`` is a relative path that stays inside ``folder`` (checked on the
    text, so symlinked sub-folders still work); ``None`` for an absolute or ``..``-escaping name."""
    relative = pathlib.PurePath(name)
    if relative.is_absolute() or relative.anchor or not name.strip():
        return None
    if os.path.normpath(relative).split(os.sep)[0] == os.pardir:
        return None
    return folder / relative


def unknown_entries(targets, ignore):
    """Which entries of ``(target, ignore)`` samples are unknown labels, to be left out of the loss.

    A sample's third item marks the entries the metrics ignore. Two kinds share it: a VOC
    "difficult" label has target 1 and is trained as a positive; an unknown label of a partial-label
    CSV has target 0 and must not be trained as a negative. So an entry is unknown when it is ignored
    and its target is 0: ``unknown = ignore & (targets == 0)``.

    Args:
        targets: ``[..., n]`` 0/1 targets (tensor or array).
        ignore: bool of the same shape (the third item of a sample, or a data set's ``difficult``).

    Returns:
        bool of the same shape and kind (tensor or array).
    """
    return ignore & (targets == 0)


class MultiLabelDataset(torch.utils.data.Dataset):
    """Images with a fixed list of labels; subclasses parse their annotation format.

    Each sample is ``(image, target, difficult)``:

    - ``image``: the RGB PIL image passed through ``transform`` (usually a ``[3, H, W]`` tensor);
    - ``target``: float32 ``[n]``, 1 where the label is present (VOC "difficult"-only labels
      included: they count as positive for training, docs/design.md section 6), 0 where it is absent
      or unknown;
    - ``difficult``: bool ``[n]``, the entries evaluation ignores (docs/design.md section 7): labels
      present only through VOC difficult objects (target 1), and unknown labels of a partial-label
      CSV (target 0; :func:`unknown_entries` tells them apart, and training leaves them out of the
      loss).

    Attributes:
        classes: the ``n`` label names, in target order.
        image_paths: one path per sample.
        targets: int64 ``[N, n]`` 0/1 matrix (what ``target`` holds), e.g. for the label graph.
        difficult: bool ``[N, n]``, the entries evaluation ignores.
        unknown: bool ``[N, n]``, the unknown entries (``difficult`` where the target is 0).
        skipped_images: ``(path, reason)`` of images left out by ``skip_bad_images``.
    """

    def __init__(
        self,
        image_paths: Sequence[str],
        targets: np.ndarray,
        difficult: np.ndarray | None,
        classes: Sequence[str],
        transform: Callable | None = None,
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
        self.classes: list[str] = list(classes)
        self.transform = transform
        self.skipped_images: list[tuple[str, str]] = []
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
                _logger.warning(
                    "Skipped %d unreadable image(s) of %d; first: %s",
                    len(self.skipped_images),
                    len(image_paths),
                    self.skipped_images[0][0],
                )
        self.image_paths: list[str] = [path for path, k in zip(image_paths, keep, strict=True) if k]
        self.targets = targets[keep]
        self.difficult = difficult[keep]
        if not self.image_paths:
            raise ValueError("The dataset has no usable images (all were skipped as unreadable).")

    @property
    def unknown(self) -> np.ndarray:
        return unknown_entries(self.targets, self.difficult)

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
