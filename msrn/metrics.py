"""Multi-label classification metrics of the paper's tables (ML-GCN definitions, docs/design.md section 7).

All results are in percent. ``scores`` are probabilities (sigmoid of the logits) ``[N, n]``,
``targets`` ``[N, n]`` of 1 (present), 0 (absent) and -1 (unknown, :mod:`msrn.targets`): entries below
0 are *ignored*, with no extra argument, so the targets of any ``msrn.data`` data set (VOC "difficult"
labels of an evaluation split, partial labels) go in as they are. ``ignore``, an optional bool
``[N, n]``, ignores further entries (the same as writing -1 there).

- AP of a class (:func:`average_precision`): rank the class's non-ignored examples by score; AP is
  the mean over its positives of the precision at the positive's rank. Equal scores form one
  threshold (as in scikit-learn's ``average_precision_score``), so AP does not depend on how ties
  happen to be ordered; without ties this is exactly the ML-GCN definition. A class without any
  (non-ignored) positive has no AP: it is NaN and left out of the mAP.
- At a threshold (:func:`multilabel_metrics`), a label is predicted when its score is
  ``>= threshold`` (and, with ``top_k``, it is among the image's ``top_k`` best scores); ignored
  entries count as negatives (as ML-GCN counts VOC's difficult labels). Per class: ``Nc`` correct,
  ``Np`` predicted, ``Ng`` true positives. ``CP = mean(Nc / Np)`` (``Np = 0`` counts as 1),
  ``CR = mean(Nc / Ng)`` over the classes that have positives, ``CF1 = 2 CP CR / (CP + CR)``;
  ``OP = sum Nc / sum Np``, ``OR = sum Nc / sum Ng``,
  ``OF1`` likewise. ``threshold`` may be one number or one per class (e.g. :func:`fit_thresholds`).
- Per-class thresholds (:func:`fit_thresholds`), fitted on validation scores: for each class, the
  threshold that maximises the class's F1 on them, placed halfway between the lowest score it
  predicts and the next lower score. A class keeps ``default`` (0.5) when it has no (non-ignored)
  positive, or when no threshold gives a higher F1 than ``default`` does.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ._blocks import BLOCK_ELEMENTS, index_blocks
from .targets import check_targets, known_mask

__all__ = [
    "average_precision",
    "mean_average_precision",
    "multilabel_metrics",
    "fit_thresholds",
    "METRIC_NAMES",
]

METRIC_NAMES = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
# Entries of the [N, n] inputs handled at a time where a whole-matrix temporary would be large.
_BLOCK_ELEMENTS = BLOCK_ELEMENTS


def _to_numpy(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = (
            array.detach().float().cpu().numpy()
            if array.is_floating_point()
            else array.detach().cpu().numpy()
        )
    return np.asarray(array)


def _check_inputs(scores: Any, targets: Any, ignore: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = _to_numpy(scores, "scores")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    # float32 scores stay float32 (no [N, n] float64 copy: 9.6 GB for Open Images' test split); the
    # cast is exact, so rankings and ties are the same, and comparisons with thresholds are made in
    # float64 (_check_threshold, _best_f1_threshold).
    targets = np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets
    if scores.ndim != 2:
        raise ValueError(
            f"scores must be an [N, n] matrix (images x classes), got shape {list(scores.shape)}."
        )
    if tuple(targets.shape) != scores.shape:
        raise ValueError(f"targets {list(targets.shape)} must have the shape of scores {list(scores.shape)}.")
    if not all(np.isfinite(scores[rows]).all() for rows in index_blocks(*scores.shape, _BLOCK_ELEMENTS)):
        raise ValueError("scores contains NaN or infinite values.")
    targets = check_targets(targets, "targets")
    unknown = ~known_mask(targets)
    if ignore is not None:
        ignore = _to_numpy(ignore, "ignore").astype(bool)
        if ignore.shape != scores.shape:
            raise ValueError(
                f"ignore {list(ignore.shape)} must have the shape of scores {list(scores.shape)}."
            )
        unknown = unknown | ignore
    return scores, targets > 0, unknown


def _class_columns(
    scores: np.ndarray, positives: np.ndarray, ignore: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(scores, positives)`` of each class's non-ignored entries, class after class. A column of an
    ``[N, n]`` array is strided, so a block of columns at a time is first copied into rows."""
    for block in index_blocks(scores.shape[1], len(scores), _BLOCK_ELEMENTS):
        rows = (np.ascontiguousarray(part[:, block].T) for part in (scores, positives, ignore))
        for class_scores, class_positives, class_ignored in zip(*rows, strict=True):
            class_kept = ~class_ignored
            yield class_scores[class_kept], class_positives[class_kept]


def _class_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    num_positives = int(positives.sum())
    if num_positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], positives[order]
    # Close each group of equal scores at its last element: one threshold per distinct score.
    group_ends = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]
    true_positives = np.cumsum(hits)[group_ends]
    precision = true_positives / (group_ends + 1)
    new_positives = np.diff(np.r_[0, true_positives])
    return float((new_positives * precision).sum() / num_positives)


def average_precision(scores: Any, targets: Any, ignore: Any | None = None) -> np.ndarray:
    """Per-class average precision in percent, ``[n]`` (NaN for a class without positives).

    Args:
        scores: ``[N, n]`` scores (probabilities or logits: only their order matters).
        targets: ``[N, n]`` ground truth, 1 / 0 / -1; the -1 entries are dropped from the ranking.
        ignore: optional ``[N, n]`` bool; True entries are dropped from the ranking too.
    """
    return _average_precision(*_check_inputs(scores, targets, ignore))


def _average_precision(scores: np.ndarray, positives: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    return np.array([100.0 * _class_ap(*column) for column in _class_columns(scores, positives, ignore)])


def mean_average_precision(scores: Any, targets: Any, ignore: Any | None = None) -> float:
    """mAP in percent: the mean of :func:`average_precision` over classes that have positives
    (NaN when no class has one)."""
    return _mean(average_precision(scores, targets, ignore))


def _mean(per_class: np.ndarray) -> float:
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def _count(counts: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> None:
    """Add ``Nc, Np, Ng`` per class of a block of images to ``counts`` ``[3, n]``."""
    counts[0] += (predicted & truth).sum(axis=0)
    counts[1] += predicted.sum(axis=0)
    counts[2] += truth.sum(axis=0)


def _threshold_metrics(counts: np.ndarray) -> dict[str, float]:
    correct, num_predicted, num_true = counts.astype(np.float64)
    has_true = num_true > 0
    cp = float(np.mean(correct / np.maximum(num_predicted, 1)))
    cr = float(np.mean(correct[has_true] / num_true[has_true])) if has_true.any() else float("nan")
    op = float(correct.sum() / max(num_predicted.sum(), 1))
    orr = float(correct.sum() / num_true.sum()) if num_true.sum() > 0 else float("nan")

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    return {
        "CP": 100 * cp,
        "CR": 100 * cr,
        "CF1": 100 * f1(cp, cr),
        "OP": 100 * op,
        "OR": 100 * orr,
        "OF1": 100 * f1(op, orr),
    }


def multilabel_metrics(
    scores: Any,
    targets: Any,
    ignore: Any | None = None,
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    top_k: int | None = None,
) -> dict[str, float]:
    """``mAP, CP, CR, CF1, OP, OR, OF1`` in percent (see the module docstring).

    Args:
        scores: ``[N, n]`` probabilities (sigmoid of the logits); the threshold applies to them.
        targets: ``[N, n]`` ground truth, 1 / 0 / -1; the -1 entries are left out of AP and count as
            negatives at the threshold (ML-GCN's treatment of VOC's difficult labels).
        ignore: optional ``[N, n]`` bool of further entries treated as -1.
        threshold: a label is predicted when its score is ``>= threshold``: one value for every class,
            or ``[n]`` values, one per class (e.g. from :func:`fit_thresholds`, or the model's
            ``pretrained_cfg["label_thresholds"]``).
        top_k: when given, also return the top-k variants ``CP_top3, ..., OF1_top3`` (for ``top_k=3``):
            a label is then predicted only when it is also among the image's ``top_k`` best scores.
    """
    scores_np, targets_np, ignore_np = _check_inputs(scores, targets, ignore)
    if top_k is not None and not 1 <= top_k <= scores_np.shape[1]:
        raise ValueError(
            f"top_k must be between 1 and the number of classes {scores_np.shape[1]}, got {top_k}."
        )
    results = {"mAP": _mean(_average_precision(scores_np, targets_np, ignore_np))}
    thresholds = _check_threshold(threshold, scores_np.shape[1])
    counts = np.zeros((3, scores_np.shape[1]), dtype=np.int64)
    top_counts = np.zeros_like(counts)
    # A block of images at a time: no [N, n] temporaries beyond the checked inputs.
    for block in index_blocks(*scores_np.shape, _BLOCK_ELEMENTS):
        truth = targets_np[block] & ~ignore_np[block]
        predicted = scores_np[block] >= thresholds
        _count(counts, predicted, truth)
        if top_k is not None:
            _count(top_counts, predicted & _in_top_k(scores_np[block], top_k), truth)
    results.update(_threshold_metrics(counts))
    if top_k is not None:
        top = _threshold_metrics(top_counts)
        results.update({f"{name}_top{top_k}": value for name, value in top.items()})
    return results


def _in_top_k(scores: np.ndarray, top_k: int) -> np.ndarray:
    """bool, the shape of ``scores`` ``[B, n]``: the ``top_k`` best scores of each image; among equal
    scores at the cut, the lower class indices (what a stable sort by score gives). No sort: each
    row's k-th best score is found by partition."""
    kth_best = -np.partition(-scores, top_k - 1, axis=1)[:, top_k - 1 : top_k]
    above = scores > kth_best
    at_cut = scores == kth_best
    places_at_cut = top_k - above.sum(axis=1, keepdims=True)
    return above | (at_cut & (np.cumsum(at_cut, axis=1) <= places_at_cut))


def _check_threshold(threshold: Any, num_classes: int) -> np.ndarray:
    """``threshold`` as a float64 ``[n]`` array (from a scalar or ``[n]``): comparing float32 scores
    with it is then done in float64 under every NumPy's promotion rules."""
    values = _to_numpy(threshold, "threshold").astype(np.float64)
    if values.ndim > 1 or (values.ndim == 1 and len(values) != num_classes):
        raise ValueError(
            f"threshold must be one number or one per class ({num_classes}), got shape {list(values.shape)}."
        )
    if not np.isfinite(values).all():
        raise ValueError("threshold contains NaN or infinite values.")
    return np.broadcast_to(values, (num_classes,))


def _best_f1_threshold(scores: np.ndarray, positives: np.ndarray, default: float) -> float:
    """The threshold of one class that maximises its F1 on ``scores`` (see the module docstring)."""
    scores = scores.astype(np.float64)  # one column: the midpoint and the default compare in float64
    num_positives = int(positives.sum())
    if num_positives == 0:
        return default
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], positives[order]
    # One candidate cut after each group of equal scores: predict every score >= the group's value.
    group_ends = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]
    true_positives = np.cumsum(hits)[group_ends]
    f1 = 2 * true_positives / (group_ends + 1 + num_positives)
    best = int(np.argmax(f1))  # the first maximum: the highest threshold among equal F1
    predicted_at_default = scores >= default
    f1_at_default = (
        2 * (predicted_at_default & positives).sum() / (predicted_at_default.sum() + num_positives)
    )
    if f1[best] <= f1_at_default:
        return default
    lowest_kept = sorted_scores[group_ends[best]]
    next_lower = sorted_scores[group_ends[best] + 1] if group_ends[best] + 1 < len(sorted_scores) else 0.0
    return float((lowest_kept + next_lower) / 2)


def fit_thresholds(scores: Any, targets: Any, ignore: Any | None = None, default: float = 0.5) -> np.ndarray:
    """Per-class thresholds ``[n]`` that maximise each class's F1 on (validation) ``scores``.

    For each class, every cut between two distinct scores is a candidate; the one with the highest F1
    (the highest threshold among equal F1) is placed halfway between the lowest score it predicts and
    the next lower score (0 below the lowest score). Fallback: a class keeps ``default`` when it has no
    non-ignored positive, or when no cut beats the F1 that ``default`` itself gives.

    Args:
        scores: ``[N, n]`` probabilities.
        targets: ``[N, n]`` ground truth, 1 / 0 / -1; the -1 entries are left out of the fit.
        ignore: optional ``[N, n]`` bool of further entries left out.
        default: the threshold of the fallback (0.5, that of :func:`multilabel_metrics`).

    Returns:
        float64 ``[n]``, each in ``(0, 1)`` for probabilities; ``multilabel_metrics(...,
        threshold=thresholds)`` applies them.
    """
    if not 0.0 < default < 1.0:
        raise ValueError(f"default must be between 0 and 1 (exclusive), got {default}.")
    scores_np, targets_np, ignore_np = _check_inputs(scores, targets, ignore)
    return np.array(
        [_best_f1_threshold(*column, default) for column in _class_columns(scores_np, targets_np, ignore_np)],
        dtype=np.float64,
    )
