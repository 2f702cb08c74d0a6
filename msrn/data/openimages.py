"""Open Images (V6) image-level labels as a multi-label classification set.

Layout, with the official file names (V6)::

    <root>/oidv6-class-descriptions.csv     LabelName,DisplayName (the header row is optional)
    <root>/oidv6-classes-trainable.txt      one LabelName a line: the labels used, in this order
    <root>/oidv6-train-annotations-human-imagelabels.csv   ImageID,Source,LabelName,Confidence
    <root>/validation-annotations-human-imagelabels.csv
    <root>/test-annotations-human-imagelabels.csv
    <root>/{train,validation,test}/<ImageID>.jpg

One sample per image that its split's label file lists, in ImageID order. Confidence 1 is a positive
(target 1), 0 a verified negative (0). A label the file does not list for an image was never checked:
it is unknown (-1; :mod:`msrn.targets`), left out of the loss, the metrics and the label graph;
``unknown_as_negative=True`` makes it absent (0) instead, as most Open Images baselines train.
Rows of labels outside the trainable list are left out (their images stay). The label names
(``classes``) are the display names of the descriptions file, made unique with the LabelName where two
labels share one (``Bow (/m/01g3x7)``); ``label_ids`` are the LabelNames.

At full size the train file lists about 9 M images and tens of millions of rows. The labels are
kept sparse, one CSR row per image (``label_indptr``, ``label_indices``, ``label_states``), and a
sample's dense target is built in ``__getitem__``; :meth:`OpenImagesDataset.label_lists` gives them
to the sparse label-graph code. The image folder is listed once to find missing images.
"""

import copy
import csv
import io
import logging
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .._warnings import warn
from ..targets import NEGATIVE, POSITIVE, UNKNOWN
from ._base import read_utf8_text
from ._missing import report_missing_images
from ._oid_labels import read_image_labels
from .image import BadImageError, load_rgb_image

__all__ = ["OpenImagesDataset", "OPENIMAGES_LABEL_FILES"]

_logger = logging.getLogger(__name__)

OPENIMAGES_LABEL_FILES = {
    "train": "oidv6-train-annotations-human-imagelabels.csv",
    "validation": "validation-annotations-human-imagelabels.csv",
    "test": "test-annotations-human-imagelabels.csv",
}
DESCRIPTIONS_FILE = "oidv6-class-descriptions.csv"
TRAINABLE_FILE = "oidv6-classes-trainable.txt"
# Largest images x labels matrix that ``targets`` / ``unknown`` build (int64: 1 GiB).
_DENSE_LIMIT = 1 << 27
_LISTING_STEP = 1 << 20


class _ImagePaths(Sequence):
    """``<folder>/<ImageID>.jpg`` of each image id, made when asked (no list of millions of strings)."""

    def __init__(self, folder: pathlib.Path, image_ids: np.ndarray) -> None:
        self.folder, self.image_ids = folder, image_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return os.path.join(self.folder, self.image_ids[index].decode("utf-8", errors="replace") + ".jpg")


def _read_trainable(path: pathlib.Path) -> list[str]:
    names, seen = [], {}
    for line, text in enumerate(read_utf8_text(path).splitlines(), start=1):
        name = text.strip()
        if not name:
            continue
        if "," in name:
            raise ValueError(
                f"{path}, line {line}: expected one LabelName a line (like /m/01g317), got {name[:80]!r}."
            )
        if name in seen:
            raise ValueError(
                f"{path}, line {line}: label {name} is listed again (first on line {seen[name]})."
            )
        seen[name] = line
        names.append(name)
    if not names:
        raise ValueError(f"{path} lists no label: expected one LabelName a line (like /m/01g317).")
    return names


def _read_descriptions(path: pathlib.Path) -> dict[str, str]:
    """LabelName -> DisplayName (a display name may hold commas and quotes; a header row is skipped)."""
    names = {}
    reader = csv.reader(io.StringIO(read_utf8_text(path), newline=""))
    try:
        for row in reader:
            if not row or not row[0].strip():
                continue
            if reader.line_num == 1 and [cell.strip() for cell in row[:2]] == ["LabelName", "DisplayName"]:
                continue
            if len(row) < 2:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected LabelName,DisplayName, got {row[0][:80]!r}."
                )
            names[row[0].strip()] = ",".join(row[1:]).strip()
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: {error}.") from None
    return names


def _class_names(label_ids: Sequence[str], descriptions: dict[str, str], path: pathlib.Path) -> list[str]:
    undescribed = [label for label in label_ids if not descriptions.get(label)]
    if undescribed:
        message = (
            f"{len(undescribed)} trainable label(s) have no display name in {path} (first: "
            f"{undescribed[0]}); they are named by their LabelName. Are the two files of one release?"
        )
        warn(_logger, message)
    names = [descriptions.get(label) or label for label in label_ids]
    taken: dict[str, int] = {}
    for name in names:
        taken[name] = taken.get(name, 0) + 1
    return [
        f"{name} ({label})" if taken[name] > 1 else name for name, label in zip(names, label_ids, strict=True)
    ]


def _listed_images(folder: pathlib.Path) -> np.ndarray:
    """Sorted ImageIDs (bytes) of the ``*.jpg`` files in ``folder``: one listing, no ``stat`` per file."""
    parts, names = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(".jpg"):
                names.append(entry.name[:-4].encode("utf-8", errors="surrogateescape"))
                if len(names) >= _LISTING_STEP:
                    parts.append(np.array(names, dtype=bytes))
                    names = []
    parts.append(np.array(names, dtype=bytes))
    listed = np.concatenate(parts) if len(parts) > 1 else parts[0]
    listed.sort()
    return listed


def _present(image_ids: np.ndarray, listed: np.ndarray) -> np.ndarray:
    if not len(listed):
        return np.zeros(len(image_ids), dtype=bool)
    position = np.minimum(np.searchsorted(listed, image_ids), len(listed) - 1)
    return listed[position] == image_ids


def _take_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(new indptr, positions into the old indices)`` of CSR rows ``rows``."""
    lengths = indptr[rows + 1] - indptr[rows]
    new_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_indptr[1:])
    positions = np.arange(new_indptr[-1], dtype=np.int64) + np.repeat(indptr[rows] - new_indptr[:-1], lengths)
    return new_indptr, positions


class OpenImagesDataset(torch.utils.data.Dataset):
    """Open Images image-level labels (see the module docstring for the layout and the choices).

    Each sample is ``(image, target)``: the RGB image through ``transform``, and a float32 ``[n]``
    target of 1 (positive), 0 (verified negative) and -1 (unknown: not listed for the image), or 0
    for those with ``unknown_as_negative``.

    Args:
        root: the folder holding the label files and the image folders.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        transform: applied to the RGB PIL image.
        unknown_as_negative: labels not listed for an image are absent (0) instead of unknown (-1).
        skip_missing_images: leave out listed images that are not in ``<root>/<split>/`` (always
            counted in the log) instead of raising.
        skip_bad_images: also decode every image and leave out unreadable ones (implies
            ``skip_missing_images``; slow at full size).
        check_images: ``False`` trusts the label file and does not list the image folder (e.g. to
            count labels only); a missing image then fails when it is read.

    Attributes:
        classes: the ``n`` label names (display names), in the order of the trainable list.
        label_ids: the ``n`` LabelNames (``/m/...``), in the same order.
        image_ids: ``[N]`` bytes array of the ImageIDs; ``image_paths`` their files.
        label_indptr, label_indices, label_states: the known labels as CSR rows: image ``s`` has label
            ``label_indices[k]`` with state ``label_states[k]`` (1 positive, 0 verified negative) for
            ``k`` in ``label_indptr[s]:label_indptr[s + 1]``; int64, int32 and int8.
        missing_images: paths of listed images that were not on disk (left out).
        skipped_images: ``(path, reason)`` of images left out by ``skip_bad_images``.
    """

    difficult_as = "positive"  # no VOC "difficult" labels here; the trainer's data-set interface

    def __init__(
        self,
        root: "os.PathLike[str] | str",
        split: str = "train",
        transform: Callable | None = None,
        unknown_as_negative: bool = False,
        skip_missing_images: bool = False,
        skip_bad_images: bool = False,
        check_images: bool = True,
    ) -> None:
        if split not in OPENIMAGES_LABEL_FILES:
            raise ValueError(
                f"Open Images split must be one of {tuple(OPENIMAGES_LABEL_FILES)}, got {split!r}."
            )
        self.root = pathlib.Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.unknown_as_negative = bool(unknown_as_negative)
        names = (TRAINABLE_FILE, DESCRIPTIONS_FILE, OPENIMAGES_LABEL_FILES[split])
        files = [self.root / name for name in names]
        expected = f"{', '.join(names[:2])} and {names[2]} (the V6 file names), with the images in {split}/"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"No Open Images folder {self.root}{' (it is a file)' if self.root.exists() else ''}: pass "
                f"the folder that holds {expected}."
            )
        for path in files:
            if not path.is_file():
                others = sorted(p.name for p in self.root.iterdir() if p.suffix in (".csv", ".txt"))
                found = f"; it holds {', '.join(others[:6])}" if others else ""
                raise FileNotFoundError(f"{self.root} has no {path.name}: it must hold {expected}{found}.")
        self.label_ids = _read_trainable(files[0])
        self.classes = _class_names(self.label_ids, _read_descriptions(files[1]), files[1])
        labels = read_image_labels(files[2], self.label_ids)
        self.image_ids = labels.image_ids
        self.label_indptr, self.label_indices, self.label_states = (
            labels.indptr,
            labels.indices,
            labels.states,
        )
        self.image_folder = self.root / split
        self.missing_images: Sequence[str] = []
        self.skipped_images: list[tuple[str, str]] = []
        if check_images or skip_bad_images:
            self._drop_missing(skip_missing_images or skip_bad_images)
        if skip_bad_images:
            self._drop_unreadable()
        if not len(self):
            raise ValueError(f"Open Images {split} has no usable image.")
        _logger.info(
            "Open Images %s: %d images, %d labels, %d positive and %d verified negative labels "
            "(the others are %s)",
            split,
            len(self),
            self.num_classes,
            int(self.label_states.sum()),
            int(len(self.label_states) - self.label_states.sum()),
            "negative" if self.unknown_as_negative else "unknown",
        )

    # ----------------------------------------------------------------------------- loading steps
    def _drop_missing(self, skip: bool) -> None:
        if not self.image_folder.is_dir():
            raise FileNotFoundError(
                f"Open Images {self.split}: no image folder {self.image_folder}; put the images there as "
                f"<ImageID>.jpg."
            )
        present = _present(self.image_ids, _listed_images(self.image_folder))
        if present.all():
            return
        missing = np.flatnonzero(~present)
        self.missing_images = _ImagePaths(self.image_folder, self.image_ids[missing])
        report_missing_images(
            f"Open Images {self.split}", len(missing), len(present), self.missing_images[0], skip
        )
        self._keep(np.flatnonzero(present))

    def _drop_unreadable(self) -> None:
        keep = np.ones(len(self), dtype=bool)
        for index, path in enumerate(self.image_paths):
            try:
                load_rgb_image(path)
            except (FileNotFoundError, BadImageError) as error:
                keep[index] = False
                self.skipped_images.append((path, str(error)))
        if self.skipped_images:
            _logger.warning(
                "Skipped %d unreadable image(s) of %d; first: %s",
                len(self.skipped_images),
                len(keep),
                self.skipped_images[0][0],
            )
            self._keep(np.flatnonzero(keep))

    def _keep(self, rows: np.ndarray) -> None:
        self.label_indptr, positions = _take_rows(self.label_indptr, rows)
        self.label_indices = self.label_indices[positions]
        self.label_states = self.label_states[positions]
        self.image_ids = self.image_ids[rows]

    # ------------------------------------------------------------------------------------ samples
    @property
    def image_paths(self) -> Sequence[str]:
        return _ImagePaths(self.image_folder, self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        image = load_rgb_image(self.image_paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.target(index)

    def target(self, index: int) -> torch.Tensor:
        """The float32 ``[n]`` target of image ``index`` (1 / 0 / -1), built from its sparse row."""
        target = torch.full((self.num_classes,), float(NEGATIVE if self.unknown_as_negative else UNKNOWN))
        begin, end = self.label_indptr[index], self.label_indptr[index + 1]
        target[torch.from_numpy(self.label_indices[begin:end].astype(np.int64))] = torch.from_numpy(
            self.label_states[begin:end].astype(np.float32)
        )
        return target

    # ------------------------------------------------------------------------------------- labels
    def label_lists(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        """``(positives, negatives)``, each ``(indptr, indices)`` CSR rows (one per image) of the positive
        and of the verified negative labels, as :func:`msrn.graph` takes them; ``negatives`` is ``None``
        with ``unknown_as_negative`` (every label not positive is then absent)."""
        positive = self.label_states == POSITIVE
        positives = self._rows_where(positive)
        return positives, None if self.unknown_as_negative else self._rows_where(~positive)

    def _rows_where(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        running = np.zeros(len(mask) + 1, dtype=np.int64)
        np.cumsum(mask, out=running[1:])
        return running[self.label_indptr], self.label_indices[mask]

    def _dense_shape(self, what: str) -> tuple[int, int]:
        size = len(self) * self.num_classes
        if size > _DENSE_LIMIT:
            raise ValueError(
                f"OpenImagesDataset.{what} would be a dense {len(self):,} x {self.num_classes:,} matrix "
                f"({size * 8 / 2**30:.1f} GiB), too large: use label_lists() (the sparse labels) or "
                f"subset() first (msrn train needs it for --val-fraction and for the label graph)."
            )
        return len(self), self.num_classes

    def _dense(self, what: str) -> np.ndarray:
        fill = NEGATIVE if self.unknown_as_negative else UNKNOWN
        targets = np.full(self._dense_shape(what), fill, dtype=np.int64)
        rows = np.repeat(np.arange(len(self)), np.diff(self.label_indptr))
        targets[rows, self.label_indices] = self.label_states
        return targets

    @property
    def targets(self) -> np.ndarray:
        """int64 ``[N, n]`` matrix of 1 / 0 / -1, for small sets only (a ``ValueError`` above
        ``2**27`` entries: use :meth:`label_lists`)."""
        return self._dense("targets")

    @property
    def unknown(self) -> np.ndarray:
        """bool ``[N, n]``: the -1 entries of :attr:`targets` (small sets only)."""
        return self._dense("unknown") == UNKNOWN

    @property
    def difficult(self) -> np.ndarray:
        """bool ``[N, n]``, all False: Open Images has no VOC-style "difficult" labels (small sets only)."""
        return np.zeros(self._dense_shape("difficult"), dtype=bool)

    def subset(
        self, indices: Sequence[int], transform: Callable | None = None, difficult_as: str | None = None
    ) -> "OpenImagesDataset":
        """The images at ``indices`` (in that order) as a data set of the same kind, read with
        ``transform`` (default: this set's); ``difficult_as`` is accepted and unused (no difficult labels)."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and not 0 <= rows.min() <= rows.max() < len(self)):
            raise IndexError(f"subset indices must be a list of image indices below {len(self)}.")
        part = copy.copy(self)
        part._keep(rows)
        part.skipped_images = []
        if transform is not None:
            part.transform = transform
        return part

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, images={len(self)}, classes={self.num_classes})"
