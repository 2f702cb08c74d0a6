"""Apparel (11 labels: six colours and five clothing items) with the authors' 50/50 split.

Two layouts of ``root`` are read:

- the public data set: one folder per ``<colour>_<item>`` pair, images inside (every image has
  exactly one colour and one item)::

      <root>/black_dress/<image>.jpg
      <root>/blue_pants/<image>.jpg
      ...

- a flat folder of images, labelled by ``labels_file`` (a CSV with the columns ``image`` and
  ``labels``, labels separated by spaces, e.g. ``black dress``; other columns are ignored) or, without
  one, by the authors' own label table.

The split is the authors' (paper section 4.2): their table of the 11,384 images, in their order,
ships with msrn; ``random.seed(10)`` and ``random.shuffle`` of that order, first half ``trainval``,
second half ``test`` (:func:`apparel_authors_split`). Images are matched to the table by file name:
images found in ``root`` that the table does not list are left out (counted in the log), and listed
images that are not found are missing (an error unless ``skip_missing_images=True``).
"""

import csv
import gzip
import importlib.resources
import io
import logging
import os
import pathlib
import random
import re
from collections.abc import Callable

import numpy as np

from .. import labels as label_sets
from ._base import MultiLabelDataset, read_utf8_text
from ._missing import drop_missing_images

__all__ = ["ApparelDataset", "APPAREL_SPLIT_SEED", "apparel_authors_split"]

_logger = logging.getLogger(__name__)

APPAREL_SPLIT_SEED = 10
_TABLE = "apparel_images.csv.gz"
_SPLITS = ("trainval", "test")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_LABEL_SEPARATORS = re.compile(r"[\s;]+")


def apparel_authors_split() -> list[tuple[str, tuple[str, ...], str]]:
    """``(image file name, labels, split)`` of the authors' 11,384 Apparel images.

    The rows come in the order of the authors' shuffle: their label table (sorted by folder, then
    file name) shuffled by ``random.seed(10); random.shuffle``; the first half is ``"trainval"``,
    the second ``"test"``.
    """
    packed = importlib.resources.files(__package__).joinpath(_TABLE).read_bytes()
    text = gzip.decompress(packed).decode("utf-8")
    table = list(csv.reader(io.StringIO(text)))[1:]
    order = list(range(len(table)))
    random.Random(APPAREL_SPLIT_SEED).shuffle(order)
    half = len(order) // 2
    return [
        (table[i][0], tuple(table[i][1].split()), "trainval" if position < half else "test")
        for position, i in enumerate(order)
    ]


def _is_image(path: pathlib.Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()


def _public_layout(root: pathlib.Path, classes: list[str]) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """``{file name: (path, (colour, item))}`` from ``<colour>_<item>`` folders; ``None`` when there
    are none. A file name in several folders keeps the labels of the last folder in sorted order,
    as the authors' table does."""
    folders, ignored = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        colour, _, item = folder.name.partition("_")
        (folders if colour in classes and item in classes else ignored).append((folder, (colour, item)))
    if not folders:
        return None
    if ignored:
        _logger.warning(
            "Apparel: ignoring %d folder(s) that are not <colour>_<item> of the 11 labels: %s",
            len(ignored),
            ", ".join(folder.name for folder, _ in ignored),
        )
    images: dict[str, tuple[str, tuple[str, ...]]] = {}
    repeated = 0
    for folder, labels in folders:
        for path in sorted(filter(_is_image, folder.iterdir())):
            repeated += path.name in images
            images[path.name] = (str(path), labels)
    if repeated:
        _logger.info(
            "Apparel: %d file name(s) appear in more than one folder; each keeps the labels of "
            "its last folder",
            repeated,
        )
    return images


def _flat_layout(
    root: pathlib.Path, labels_file: pathlib.Path | None
) -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """``{file name: (path, labels or None)}`` from a flat folder and an optional labels table."""
    if labels_file is None:
        return {path.name: (str(path), None) for path in filter(_is_image, root.iterdir())}
    if not labels_file.is_file():
        raise FileNotFoundError(f"Labels file not found: {labels_file}")
    with io.StringIO(read_utf8_text(labels_file), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "image" not in columns or "labels" not in columns:
            raise ValueError(
                f"Labels file {labels_file} needs the columns 'image' and 'labels' "
                f"(labels separated by spaces, e.g. 'black dress'); got {reader.fieldnames}."
            )
        images = {}
        for row in reader:
            image = (row[columns["image"]] or "").strip()
            if image:
                names = tuple(n for n in _LABEL_SEPARATORS.split(row[columns["labels"]] or "") if n)
                images[os.path.basename(image)] = (str(root / image), names)
    return images


class ApparelDataset(MultiLabelDataset):
    """Apparel as a multi-label classification set, split as the authors split it.

    Args:
        root: the folder of ``<colour>_<item>`` sub-folders, or a flat folder of images.
        split: ``"trainval"`` or ``"test"`` (5,692 images each when every image is present).
        transform: applied to the RGB PIL image.
        labels_file: labels of a flat folder (CSV with ``image`` and ``labels`` columns); default: the
            authors' labels.
        skip_missing_images: leave out images of the split that are not found (always counted in the log).
        skip_bad_images: also decode every image and leave out unreadable ones (implies
            ``skip_missing_images``).

    Targets follow the built-in ``apparel`` label order (colours, then items).

    Attributes:
        missing_images: paths of images of the split that were not found (left out).
    """

    def __init__(
        self,
        root: "os.PathLike[str] | str",
        split: str = "trainval",
        transform: Callable | None = None,
        labels_file: "os.PathLike[str] | str | None" = None,
        skip_missing_images: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(
                f"split must be 'trainval' or 'test' (the authors' Apparel split), got {split!r}."
            )
        self.root = pathlib.Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Apparel folder not found: {self.root} (pass the folder of <colour>_<item> sub-folders, "
                f"or a flat folder of images)."
            )
        classes = list(label_sets.load("apparel").names)
        labels_path = pathlib.Path(labels_file).expanduser() if labels_file is not None else None
        found = None if labels_path is not None else _public_layout(self.root, classes)
        public = found is not None
        if found is None:
            found = _flat_layout(self.root, labels_path)
        if not found:
            raise FileNotFoundError(
                f"No Apparel images under {self.root}: expected <colour>_<item> sub-folders "
                f"(black_dress, ...) or image files" + (f" listed in {labels_path}." if labels_path else ".")
            )
        table = apparel_authors_split()
        listed = {image for image, _, _ in table}
        extra = sorted(name for name in found if name not in listed)
        if extra:
            _logger.warning(
                "Apparel: %d image(s) under %s are not in the authors' table and are left out (first: %s)",
                len(extra),
                self.root,
                extra[0],
            )
        index = {name: i for i, name in enumerate(classes)}
        paths, rows, relabelled = [], [], 0
        for image, authors_labels, image_split in table:
            if image_split != split:
                continue
            expected = self.root / "_".join(authors_labels) / image if public else self.root / image
            path, labels = found.get(image, (str(expected), None))
            if labels is None:
                labels = authors_labels
            relabelled += tuple(sorted(labels)) != tuple(sorted(authors_labels))
            unknown = [name for name in labels if name not in index]
            if unknown:
                raise ValueError(
                    f"Apparel image {image}: unknown label(s) {unknown}; known: {', '.join(classes)}."
                )
            paths.append(path)
            rows.append([index[name] for name in labels])
        if relabelled:
            _logger.warning(
                "Apparel %s: %d image(s) carry other labels than in the authors' table", split, relabelled
            )
        targets = np.zeros((len(paths), len(classes)), dtype=np.int64)
        for row, columns in enumerate(rows):
            targets[row, columns] = 1
        paths, targets, self.missing_images = drop_missing_images(
            paths, targets, skip_missing_images or skip_bad_images, f"Apparel {split}"
        )
        super().__init__(paths, targets, classes, transform=transform, skip_bad_images=skip_bad_images)
