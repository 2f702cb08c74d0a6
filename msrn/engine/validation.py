"""The trainer's validation split: held out of the training images (``--val-fraction`` or
``--val-split``), scored after every epoch to choose ``best/`` and to fit per-class thresholds.

Without a validation split ``best/`` is chosen on the test split, as in the paper's protocol (and the
reference code); its test figures are then optimistic.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data import read_holdout_file, stratified_holdout
from ..metrics import fit_thresholds, multilabel_metrics

__all__ = ["hold_out_validation", "epoch_metrics", "THRESHOLD_METRICS"]

THRESHOLD_METRICS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


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


def epoch_metrics(
    test_predictions: tuple[np.ndarray, np.ndarray],
    val_predictions: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, float], np.ndarray | None]:
    """``(metrics, fitted thresholds or None)`` of one epoch's predictions ``(scores, targets)``
    (targets 1 / 0 / -1; the -1 entries are ignored).

    The metrics are the test ones of :func:`msrn.metrics.multilabel_metrics` (threshold 0.5, top-3),
    and with validation predictions: ``val_mAP, val_CP, ... val_OF1`` (threshold 0.5), and
    ``fitted_CP, ... fitted_OF1``, the test metrics at the thresholds fitted on the validation scores
    (:func:`msrn.metrics.fit_thresholds`).
    """
    scores, targets = test_predictions
    metrics = multilabel_metrics(scores, targets, top_k=3)
    if val_predictions is None:
        return metrics, None
    val_scores, val_targets = val_predictions
    val_metrics = multilabel_metrics(val_scores, val_targets)
    metrics.update({f"val_{name}": value for name, value in val_metrics.items()})
    thresholds = fit_thresholds(val_scores, val_targets)
    fitted = multilabel_metrics(scores, targets, threshold=thresholds)
    metrics.update({f"fitted_{name}": fitted[name] for name in THRESHOLD_METRICS})
    return metrics, thresholds
