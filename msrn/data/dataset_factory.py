"""One entry point for the data sets: ``create_dataset(kind, data, ...)`` for every kind of
:data:`DATASET_KINDS` (VOC, COCO, NUS-WIDE, Apparel, Open Images, CSV)."""

import os
import pathlib
from collections.abc import Callable, Sequence

from ._base import MultiLabelDataset
from .apparel import ApparelDataset
from .coco import COCODataset
from .csv_dataset import CSVDataset
from .nuswide import NUSWIDEDataset
from .openimages import OpenImagesDataset
from .voc import VOCDataset

__all__ = ["DATASET_KINDS", "create_dataset"]

DATASET_KINDS = ("voc", "coco", "nuswide", "apparel", "openimages", "csv")
# (training split, test split) of each kind when none is given.
_DEFAULT_SPLITS = {
    "voc": ("trainval", "test"),
    "coco": ("train", "val"),
    "nuswide": ("train", "test"),
    "apparel": ("trainval", "test"),
    "openimages": ("train", "test"),
}


def create_dataset(
    kind: str,
    data: "os.PathLike[str] | str",
    split: str | None = None,
    is_training: bool = False,
    transform: Callable | None = None,
    classes: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    skip_missing_images: bool = False,
    unknown_as_negative: bool = False,
) -> MultiLabelDataset | OpenImagesDataset:
    """The data set of ``kind`` at ``data``.

    Args:
        kind: ``"voc"`` (``data``: a VOCdevkit folder), ``"coco"`` (a COCO root), ``"nuswide"`` (the
            NUS-WIDE folder, or the authors' CSV file with the images beside it), ``"apparel"`` (the
            Apparel folder), ``"openimages"`` (the Open Images folder) or ``"csv"`` (a CSV file;
            ``split`` is unused).
        split: default ``trainval`` / ``test`` (VOC, Apparel), ``train`` / ``val`` (COCO) and
            ``train`` / ``test`` (NUS-WIDE, Open Images), by ``is_training``.
        classes: label names in target order (VOC, NUS-WIDE and CSV; default: the data set's own;
            Apparel and Open Images: checked against the set's own).
        skip_missing_images: NUS-WIDE, Apparel and Open Images: leave out listed images that are not
            on disk.
        unknown_as_negative: Open Images: the labels an image's file does not list are absent (0)
            instead of unknown (-1).

    VOC's "difficult" labels follow ``is_training``, whatever the split's name: positive (1) in a
    training set, unknown (-1, ignored by the metrics) in an evaluation set (``difficult_as`` of
    :class:`msrn.data.VOCDataset`).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {kind!r}.")
    if unknown_as_negative and kind != "openimages":
        raise ValueError("unknown_as_negative is an Open Images option (--dataset openimages).")
    options = dict(transform=transform, skip_bad_images=skip_bad_images)
    if kind == "csv":
        return CSVDataset(data, classes=classes, **options)
    split = split or _DEFAULT_SPLITS[kind][0 if is_training else 1]
    if kind == "coco":
        return COCODataset(data, split, **options)
    if kind == "openimages":
        dataset = OpenImagesDataset(
            data,
            split,
            skip_missing_images=skip_missing_images,
            unknown_as_negative=unknown_as_negative,
            **options,
        )
        if classes is not None and list(classes) != dataset.classes:
            raise ValueError(
                f"The {dataset.num_classes} Open Images labels of {data} differ from the {len(classes)} "
                f"labels given (a model trained with another oidv6-classes-trainable.txt?)."
            )
        return dataset
    if kind == "apparel":
        dataset = ApparelDataset(data, split, skip_missing_images=skip_missing_images, **options)
        if classes is not None and list(classes) != dataset.classes:
            raise ValueError(f"Apparel's labels are {dataset.classes}, not {list(classes)}.")
        return dataset
    if classes is not None:
        options["classes"] = classes
    if kind == "nuswide":
        if str(data).lower().endswith(".csv"):
            csv_file = pathlib.Path(data).expanduser()
            return NUSWIDEDataset(
                csv_file.parent, split, csv_file=csv_file, skip_missing_images=skip_missing_images, **options
            )
        return NUSWIDEDataset(data, split, skip_missing_images=skip_missing_images, **options)
    return VOCDataset(data, split, difficult_as="positive" if is_training else "unknown", **options)
