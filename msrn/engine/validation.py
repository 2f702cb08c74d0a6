"""The trainer's validation split: held out of the training images (``--val-fraction`` or
``--val-split``), scored after every epoch to choose ``best/`` and to fit per-class thresholds.

Without a validation split ``best/`` is chosen on the test split, as in the paper's protocol (and the
reference code); its test figures are then optimistic.

A split too small to choose on is refused (:func:`check_split_sizes`): it must hold at least
:data:`MIN_VAL_IMAGES` images, and leave at least as many images to train on. A class's threshold is
fitted only when the split holds at least :data:`MIN_FIT_POSITIVES` known positives of it; the others
keep 0.5 (a warning names them, with their counts).
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data import read_holdout_file, stratified_holdout
from ..metrics import fit_thresholds, multilabel_metrics
from ..targets import POSITIVE

__all__ = [
    "hold_out_validation",
    "check_split_sizes",
    "fitted_classes",
    "epoch_metrics",
    "THRESHOLD_METRICS",
    "MIN_VAL_IMAGES",
    "MIN_FIT_POSITIVES",
    "TOP_K",
    "top_k_for",
]

THRESHOLD_METRICS = ("CP", "CR", "CF1", "OP", "OR", "OF1")
MIN_VAL_IMAGES = 5  # fewer: one image's scores would choose best/ (a one-image split has mAP 100)
MIN_FIT_POSITIVES = 3  # fewer: the F1-best threshold sits just below one or two scores
TOP_K = 3  # the paper's top-3 metrics


def top_k_for(num_classes: int) -> int | None:
    """``TOP_K`` (3), or None for a label set of 3 classes or fewer: there every label is among an
    image's top 3, so the top-3 metrics say nothing and are left out."""
    return TOP_K if num_classes > TOP_K else None


def hold_out_validation(
    train_set: Any,
    val_fraction: float | None,
    val_split: str | None,
    val_seed: int,
    eval_transform: Callable | None,
) -> tuple[Any, Any]:
    """``(training part, validation part or None)`` of ``train_set``.

    The validation part is ``val_split`` (a file naming its images, :func:`msrn.data.read_holdout_file`)
    or ``val_fraction`` of the images (:func:`msrn.data.stratified_holdout`, seeded by ``val_seed``);
    it is read with ``eval_transform`` and, like a test split, has VOC's "difficult" labels unknown
    (-1). The training part keeps the other images, in their order.
    """
    if val_fraction is not None and val_split is not None:
        raise ValueError("Give either --val-fraction or --val-split, not both.")
    if val_fraction is None and val_split is None:
        return train_set, None
    if val_split is not None:
        held = read_holdout_file(val_split, train_set.image_paths)
    else:
        # Difficult labels are not positives of the validation part: leave them out of the strata.
        held = stratified_holdout(train_set.targets, val_fraction, val_seed, ignore=train_set.difficult)
    kept = np.setdiff1d(np.arange(len(train_set)), held)
    return train_set.subset(kept), train_set.subset(held, transform=eval_transform, difficult_as="unknown")


def check_split_sizes(train_part: Any, val_part: Any, source: str) -> None:
    """Refuse a validation split of fewer than :data:`MIN_VAL_IMAGES` images, or one larger than the
    training part it leaves; ``source`` is the option that made it (``--val-fraction 0.01``)."""
    held, kept = len(val_part), len(train_part)
    total = held + kept

    def images(count: int, kind: str = "") -> str:
        return f"{count} {kind}image{'s' if count != 1 else ''}"

    if total < 2 * MIN_VAL_IMAGES:
        raise ValueError(
            f"{source}: the training set has {images(total)}, too few to hold out a validation split "
            f"of at least {MIN_VAL_IMAGES} and train on as many; drop the option (best/ is then chosen "
            f"on the test split)."
        )
    if held < MIN_VAL_IMAGES:
        raise ValueError(
            f"{source} holds out {images(held)} of {total} for validation; choosing best/ and fitting "
            f"thresholds needs at least {MIN_VAL_IMAGES}: hold out more (--val-fraction "
            f"{MIN_VAL_IMAGES / total:.2g} or more), or drop the option (best/ is then chosen on the "
            f"test split)."
        )
    if kept < held:
        raise ValueError(
            f"{source} leaves {images(kept, 'training ')} for {images(held, 'validation ')}: the "
            f"validation split may not be larger than what is trained on; use a --val-fraction of at "
            f"most 0.5."
        )


def fitted_classes(targets: np.ndarray) -> np.ndarray:
    """bool ``[n]``: the classes whose threshold is fitted on a validation split with these targets
    (1 / 0 / -1), those with at least :data:`MIN_FIT_POSITIVES` positives (1)."""
    return (np.asarray(targets) == POSITIVE).sum(axis=0) >= MIN_FIT_POSITIVES


def epoch_metrics(
    test_predictions: tuple[np.ndarray, np.ndarray],
    val_predictions: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, float], np.ndarray | None]:
    """``(metrics, fitted thresholds or None)`` of one epoch's predictions ``(scores, targets)``
    (targets 1 / 0 / -1; the -1 entries are ignored).

    The metrics are the test ones of :func:`msrn.metrics.multilabel_metrics` (threshold 0.5, top-3
    unless there are 3 classes or fewer, :func:`top_k_for`),
    and with validation predictions: ``val_mAP, val_CP, ... val_OF1`` (threshold 0.5), and
    ``fitted_CP, ... fitted_OF1``, the test metrics at the thresholds fitted on the validation scores
    (:func:`msrn.metrics.fit_thresholds`; 0.5 for a class with fewer than :data:`MIN_FIT_POSITIVES`
    validation positives, :func:`fitted_classes`). The thresholds are None when no class has enough.
    """
    scores, targets = test_predictions
    metrics = multilabel_metrics(scores, targets, top_k=top_k_for(scores.shape[1]))
    if val_predictions is None:
        return metrics, None
    val_scores, val_targets = val_predictions
    val_metrics = multilabel_metrics(val_scores, val_targets)
    metrics.update({f"val_{name}": value for name, value in val_metrics.items()})
    enough = fitted_classes(val_targets)
    thresholds = np.where(enough, fit_thresholds(val_scores, val_targets), 0.5)
    fitted = multilabel_metrics(scores, targets, threshold=thresholds)
    metrics.update({f"fitted_{name}": fitted[name] for name in THRESHOLD_METRICS})
    return metrics, (thresholds if enough.any() else None)
