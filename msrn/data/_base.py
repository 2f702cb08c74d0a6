"""Shared machinery of the multi-label datasets: bad-image policy, sample layout, reading text files."""

import codecs
import copy
import logging
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..targets import NEGATIVE, POSITIVE, UNKNOWN, check_targets
from .image import BadImageError, load_rgb_image, not_a_file

__all__ = ["MultiLabelDataset", "read_utf8_text", "join_inside", "DIFFICULT_AS"]

_logger = logging.getLogger(__name__)

# What the target of a VOC "difficult" entry is (docs/design.md section 6).
DIFFICULT_AS = {"positive": POSITIVE, "unknown": UNKNOWN, "negative": NEGATIVE}


def read_utf8_text(path: pathlib.Path) -> str:
    """The text of an annotation / CSV / split file, which must be UTF-8 (a BOM is fine).

    A UTF-16 file or a file in a legacy encoding (Latin-1, Windows-1252) raises a ``ValueError`` naming
    the file and how to re-save it, instead of a bare ``UnicodeDecodeError``; so does a NUL byte in
    a UTF-8 file (naming its line). A path that is not a regular file (a folder, ``/dev/zero``) raises
    ``FileNotFoundError`` before anything is read.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(not_a_file(path))
    data = path.read_bytes()
    head = data[:4096]
    # UTF-16 without a byte-order mark: every other byte of its ASCII characters is NUL.
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or head.count(0) * 4 >= len(head) > 0:
        raise ValueError(
            f"{path} is UTF-16 (or another multi-byte encoding) text; save it as UTF-8 (in Excel: "
            f"'CSV UTF-8'; on the command line: iconv -f UTF-16 -t UTF-8 {path.name} > utf8-{path.name})."
        )
    if b"\x00" in data:
        offset = data.index(b"\x00")
        line = data[:offset].count(b"\n") + 1
        raise ValueError(
            f"{path} holds a NUL byte on line {line} (byte {offset}): it is not a "
            f"text file, or it is damaged; remove the byte or write the file again as UTF-8 text."
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


def _check_difficult_as(difficult_as: str) -> None:
    if difficult_as not in DIFFICULT_AS:
        raise ValueError(
            f"difficult_as must be one of {', '.join(map(repr, DIFFICULT_AS))}, got {difficult_as!r}."
        )


class MultiLabelDataset(torch.utils.data.Dataset):
    """Images with a fixed list of labels; subclasses parse their annotation format.

    Each sample is an ``(image, target)`` pair, as in any PyTorch classification set:

    - ``image``: the RGB PIL image passed through ``transform`` (usually a ``[3, H, W]`` tensor);
    - ``target``: float32 ``[n]``, one entry per label: 1 present, 0 absent, -1 unknown
      (:mod:`msrn.targets`). :class:`msrn.MSRNLoss`, :mod:`msrn.metrics` and the label graph leave
      the unknown entries out. Unknown are the ``-cat`` / ``?`` entries of a partial-label CSV, and
      PASCAL VOC's "difficult" labels where ``difficult_as="unknown"`` (the default of its
      evaluation splits; see :class:`msrn.data.VOCDataset`).

    Attributes:
        classes: the ``n`` label names, in target order.
        image_paths: one path per sample.
        targets: int64 ``[N, n]`` matrix of 1 / 0 / -1 (what ``target`` holds), e.g. for the label graph.
        difficult: bool ``[N, n]``, the entries whose label comes only from VOC "difficult" objects
            (all False for the other formats); their value in ``targets`` is set by ``difficult_as``.
        difficult_as: ``"positive"``, ``"unknown"`` or ``"negative"``.
        unknown: bool ``[N, n]``, the entries that are -1 in ``targets``.
        skipped_images: ``(path, reason)`` of images left out by ``skip_bad_images``.
    """

    def __init__(
        self,
        image_paths: Sequence[str],
        targets: np.ndarray,
        classes: Sequence[str],
        transform: Callable | None = None,
        skip_bad_images: bool = False,
        difficult: np.ndarray | None = None,
        difficult_as: str = "positive",
    ) -> None:
        _check_difficult_as(difficult_as)
        targets = check_targets(np.asarray(targets), "targets").astype(np.int64)
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
            first = missing[0] if not os.path.lexists(missing[0]) else not_a_file(missing[0], "image path")
            raise FileNotFoundError(
                f"{len(missing)} image file(s) not found, first: {first}. Fix the paths, or pass "
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
        self.difficult_as = "positive"
        self._set_difficult_as(difficult_as)
        if not self.image_paths:
            raise ValueError("The dataset has no usable images (all were skipped as unreadable).")

    def _set_difficult_as(self, difficult_as: str) -> None:
        _check_difficult_as(difficult_as)
        self.targets = np.where(self.difficult, DIFFICULT_AS[difficult_as], self.targets)
        self.difficult_as = difficult_as

    @property
    def unknown(self) -> np.ndarray:
        return self.targets == UNKNOWN

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
        return image, target

    def subset(
        self, indices: Sequence[int], transform: Callable | None = None, difficult_as: str | None = None
    ) -> "MultiLabelDataset":
        """The images at ``indices`` (in that order) as a data set of the same kind, read with
        ``transform`` (default: this set's); e.g. a validation split held out of the training set.

        The per-image attributes (``image_paths``, ``targets``, ``difficult`` and ``image_ids`` when the
        set has them) are taken at ``indices``; the original set is left as it is. ``difficult_as``
        (default: this set's) sets the targets of VOC "difficult" entries: a validation split held out
        of VOC ``trainval`` takes ``"unknown"``, as the test split does."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (len(indices) and not 0 <= indices.min() <= indices.max() < len(self)):
            raise IndexError(f"subset indices must be a list of image indices below {len(self)}.")
        part = copy.copy(self)
        part.image_paths = [self.image_paths[index] for index in indices]
        part.targets, part.difficult = self.targets[indices], self.difficult[indices]
        if isinstance(getattr(self, "image_ids", None), list) and len(self.image_ids) == len(self):
            part.image_ids = [self.image_ids[index] for index in indices]
        part.skipped_images = []
        if transform is not None:
            part.transform = transform
        if difficult_as is not None:
            part._set_difficult_as(difficult_as)
        return part

    def __repr__(self) -> str:
        return f"{type(self).__name__}(images={len(self)}, classes={self.num_classes})"
