"""One entry point for the data sets: ``create_dataset("voc" | "coco" | "csv", ...)``."""
import os
from collections.abc import Callable, Sequence

from ._base import MultiLabelDataset
from .coco import COCODataset
from .csv_dataset import CSVDataset
from .voc import VOCDataset

__all__ = ["DATASET_KINDS", "create_dataset"]

DATASET_KINDS = ("voc", "coco", "csv")
# (training split, test split) of each kind when none is given.
_DEFAULT_SPLITS = {"voc": ("trainval", "test"), "coco": ("train", "val")}


def create_dataset(
    kind: str,
    data: "os.PathLike[str] | str",
    split: str | None = None,
    is_training: bool = False,
    transform: Callable | None = None,
    classes: Sequence[str] | None = None,
    skip_bad_images: bool = False,
) -> MultiLabelDataset:
    """The data set of ``kind`` at ``data``.

    Args:
        kind: ``"voc"`` (``data``: a VOCdevkit folder), ``"coco"`` (a COCO root) or ``"csv"`` (a CSV
            file; ``split`` is unused).
        split: default ``trainval`` / ``test`` (VOC) and ``train`` / ``val`` (COCO), by ``is_training``.
        classes: label names in target order (VOC and CSV; default: the VOC classes / the file's).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {kind!r}.")
    options = dict(transform=transform, skip_bad_images=skip_bad_images)
    if kind == "csv":
        return CSVDataset(data, classes=classes, **options)
    split = split or _DEFAULT_SPLITS[kind][0 if is_training else 1]
    if kind == "coco":
        return COCODataset(data, split, **options)
    if classes is not None:
        options["classes"] = classes
    return VOCDataset(data, split, **options)
