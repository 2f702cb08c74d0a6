"""The label counts a training run checks and logs, read from a data set's dense ``targets`` or, for a
set that keeps its labels sparse (:class:`msrn.data.OpenImagesDataset`: millions of images, thousands
of labels), from its per-image rows (``label_lists()``), without a dense ``images x labels`` copy."""

from typing import Any

import numpy as np

from ..targets import positive_mask

__all__ = ["label_state_counts", "positive_counts", "unknown_counts"]


def _sparse(dataset: Any):
    return dataset.label_lists() if hasattr(dataset, "label_lists") else None


def label_state_counts(dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 ``[n]`` each: the images of ``dataset`` where each label is present (target 1), absent
    (0) and unknown (-1)."""
    sparse = _sparse(dataset)
    images = len(dataset)
    if sparse is None:
        targets = np.asarray(dataset.targets)
        positive = positive_mask(targets).sum(axis=0)
        unknown = np.asarray(dataset.unknown, dtype=bool).sum(axis=0)
        return positive, images - positive - unknown, unknown
    (_, labels), negatives = sparse
    positive = np.bincount(labels, minlength=dataset.num_classes).astype(np.int64)
    if negatives is None:  # every label not listed as positive is absent
        return positive, images - positive, np.zeros_like(positive)
    negative = np.bincount(negatives[1], minlength=dataset.num_classes).astype(np.int64)
    return positive, negative, images - positive - negative


def positive_counts(dataset: Any) -> np.ndarray:
    """int64 ``[n]``: the images of ``dataset`` where each label is present (target 1)."""
    sparse = _sparse(dataset)
    if sparse is None:
        return positive_mask(np.asarray(dataset.targets)).sum(axis=0)
    (_, labels), _ = sparse
    return np.bincount(labels, minlength=dataset.num_classes).astype(np.int64)


def unknown_counts(dataset: Any) -> tuple[int, int, int]:
    """``(unknown entries, images with one, VOC difficult ones among the entries)`` of ``dataset``."""
    sparse = _sparse(dataset)
    if sparse is None:
        unknown = np.asarray(dataset.unknown)
        difficult = getattr(dataset, "difficult", None)
        in_difficult = int((unknown & np.asarray(difficult)).sum()) if difficult is not None else 0
        return int(unknown.sum()), int(unknown.any(axis=1).sum()), in_difficult
    (positive_rows, _), negatives = sparse
    if negatives is None:  # every label not listed as positive is absent
        return 0, 0, 0
    known = np.diff(positive_rows) + np.diff(negatives[0])
    unknown = dataset.num_classes - known
    return int(unknown.sum()), int((unknown > 0).sum()), 0
