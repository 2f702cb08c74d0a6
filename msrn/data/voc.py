"""PASCAL VOC 2007 classification labels read from the dataset's own on-disk layout.

Expected tree (``root`` may be the ``VOCdevkit`` folder or the ``VOC2007`` folder itself)::

    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

A label is present in an image when the XML has an object of that class. A label whose objects are
all marked ``<difficult>1</difficult>`` is a "difficult" entry: positive (1) in the training splits, as
in the authors' code, and unknown (-1, ignored) in the evaluation splits, as in the VOC protocol
(``difficult_as``; docs/design.md sections 6-7).

The image of an annotation is ``JPEGImages/<filename>`` (``<id>.jpg`` when the XML has no
``<filename>``); a ``<filename>`` that is absolute or leaves ``JPEGImages`` with ``..`` is refused
(sub-folders, symlinked ones included, are fine). An id listed twice in a split file is used once,
with a warning.
"""

import logging
import os
import pathlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import numpy as np

from ._base import MultiLabelDataset, join_inside, read_utf8_text

__all__ = ["VOC_CLASSES", "VOCDataset", "resolve_voc_root", "voc_difficult_as"]

_logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def resolve_voc_root(root: "os.PathLike[str] | str", year: str = "2007") -> pathlib.Path:
    """The ``VOC<year>`` folder under ``root`` (a VOCdevkit folder, or that folder itself)."""
    root = pathlib.Path(root).expanduser()
    for candidate in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"No PASCAL VOC {year} tree under {root}: expected {root / f'VOC{year}' / 'Annotations'} "
        f"(pass the VOCdevkit folder, the one that contains VOC{year}/)."
    )


def voc_difficult_as(split: str) -> str:
    """The default target of a "difficult" entry in ``split``: ``"positive"`` for a training split (a
    name that starts with ``train``: ``train``, ``trainval``), ``"unknown"`` for any other (``test``,
    ``val``)."""
    return "positive" if split.startswith("train") else "unknown"


def _read_split(split_file: pathlib.Path) -> list[str]:
    if not split_file.is_file():
        folder = split_file.parent
        available = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
        raise FileNotFoundError(
            f"Split file not found: {split_file}. Available splits in {folder}: {available or 'none'}."
        )
    ids, first_line, repeated = [], {}, []
    for line_number, line in enumerate(read_utf8_text(split_file).splitlines(), start=1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        if join_inside(split_file.parent, image_id) is None:
            raise ValueError(
                f"Split file {split_file}, line {line_number}: {image_id!r} is not an image id "
                f"(a file name without extension, e.g. 000005, that stays inside the tree)."
            )
        if image_id in first_line:
            repeated.append((image_id, line_number))
            continue
        first_line[image_id] = line_number
        ids.append(image_id)
    if not ids:
        raise ValueError(f"Split file {split_file} is empty: it must list one image id per line.")
    if repeated:
        image_id, line_number = repeated[0]
        _logger.warning(
            "Split file %s lists %d image id(s) more than once (first: %s on lines %d and %d); "
            "each image is used once.",
            split_file,
            len(repeated),
            image_id,
            first_line[image_id],
            line_number,
        )
    return ids


def _parse_annotation(xml_file: pathlib.Path, class_index: dict) -> tuple[str | None, list[tuple[int, bool]]]:
    if not xml_file.is_file():
        raise FileNotFoundError(
            f"Annotation file not found: {xml_file} (its image id is listed in the split file)."
        )
    try:
        tree = ET.parse(xml_file)
    except ET.ParseError as error:
        raise ValueError(f"Annotation file {xml_file} is not valid XML: {error}.") from error
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise ValueError(
                f"Annotation file {xml_file} names an unknown class {name!r}; known classes: "
                f"{', '.join(class_index)}."
            )
        difficult_text = (obj.findtext("difficult") or "0").strip()
        objects.append((class_index[name], difficult_text not in ("0", "")))
    return tree.getroot().findtext("filename"), objects


def _image_path(image_dir: pathlib.Path, filename: str, xml_file: pathlib.Path) -> pathlib.Path:
    path = join_inside(image_dir, filename)
    if path is None:
        raise ValueError(
            f"Annotation file {xml_file}: <filename> {filename!r} is not a path inside {image_dir}; write "
            f"the image's name relative to that folder (e.g. {pathlib.PurePath(filename).name!r})."
        )
    return path


class VOCDataset(MultiLabelDataset):
    """PASCAL VOC (2007 by default) as a multi-label classification set.

    Args:
        root: the ``VOCdevkit`` folder (or the ``VOC2007`` folder).
        split: name of a file in ``ImageSets/Main`` (``trainval``, ``test``, ``train``, ``val``).
        year: the ``VOC<year>`` sub-folder.
        transform: applied to the RGB PIL image.
        classes: label names, in target order (default: the 20 VOC classes in the standard order).
        skip_bad_images: leave out missing or undecodable images (reported in ``skipped_images``)
            instead of raising.
        difficult_as: the target of a label whose objects are all "difficult": ``"positive"`` (1,
            trained on as present, as in the authors' code), ``"unknown"`` (-1, left out of the loss and
            the metrics, the VOC evaluation protocol) or ``"negative"`` (0). Default: ``"positive"`` for
            ``train`` and ``trainval`` (a split whose name starts with ``train``), ``"unknown"`` for
            ``test``, ``val`` and any other split (:func:`voc_difficult_as`).

    Each sample is ``(image, target [n])`` with 1 / 0 / -1 entries; see :class:`MultiLabelDataset`.
    ``difficult`` (bool ``[N, n]``) keeps which entries are difficult whatever ``difficult_as`` is.
    """

    def __init__(
        self,
        root: "os.PathLike[str] | str",
        split: str = "trainval",
        year: str = "2007",
        transform: Callable | None = None,
        classes: Sequence[str] = VOC_CLASSES,
        skip_bad_images: bool = False,
        difficult_as: str | None = None,
    ) -> None:
        self.root = resolve_voc_root(root, year)
        self.split = split
        class_index = {name: i for i, name in enumerate(classes)}
        self.image_ids = _read_split(self.root / "ImageSets" / "Main" / f"{split}.txt")
        targets = np.zeros((len(self.image_ids), len(classes)), dtype=np.int64)
        easy = np.zeros((len(self.image_ids), len(classes)), dtype=bool)
        paths = []
        for row, image_id in enumerate(self.image_ids):
            xml_file = self.root / "Annotations" / f"{image_id}.xml"
            filename, objects = _parse_annotation(xml_file, class_index)
            filename = (filename or "").strip() or f"{image_id}.jpg"
            paths.append(str(_image_path(self.root / "JPEGImages", filename, xml_file)))
            for label, is_difficult in objects:
                targets[row, label] = 1
                easy[row, label] |= not is_difficult
        difficult = (targets == 1) & ~easy
        super().__init__(
            paths,
            targets,
            classes,
            transform=transform,
            skip_bad_images=skip_bad_images,
            difficult=difficult,
            difficult_as=voc_difficult_as(split) if difficult_as is None else difficult_as,
        )
        if self.skipped_images:
            kept = set(self.image_paths)
            self.image_ids = [i for i, p in zip(self.image_ids, paths, strict=True) if p in kept]
