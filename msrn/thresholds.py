"""Which decision thresholds label an image: one rule for :class:`msrn.Predictor`, ``msrn predict``,
:func:`msrn.engine.evaluate_checkpoint` and ``msrn evaluate``.

A threshold given by the caller wins (``"override"``); else the model's own per-label thresholds
(``pretrained_cfg["label_thresholds"]``, fitted on a validation split by ``msrn train``) are used as
saved (``"model"``), and a model whose saved entry is malformed is refused, never quietly given 0.5;
only a model without any saved thresholds gets 0.5 for every label (``"default"``).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_THRESHOLD", "THRESHOLD_SOURCES", "DecisionThresholds", "decision_thresholds"]

# The decision threshold of a model without thresholds of its own (the paper's CP/CR/F1 use it too).
DEFAULT_THRESHOLD = 0.5
THRESHOLD_SOURCES = ("override", "model", "default")


@dataclasses.dataclass(frozen=True)
class DecisionThresholds:
    """The thresholds in use and where they come from.

    Attributes:
        values: ``[n]`` float64, one threshold per label in label order; label ``i`` is chosen when its
            probability is ``>= values[i]``.
        source: ``"override"`` (given by the caller), ``"model"`` (the model's saved per-label
            thresholds) or ``"default"`` (0.5: the model has none).
    """

    values: np.ndarray
    source: str


def decision_thresholds(model: Any, threshold: float | Sequence[float] | None = None) -> DecisionThresholds:
    """The thresholds that label ``model``'s outputs.

    Args:
        model: an :class:`msrn.MSRN` (its ``num_classes`` and ``get_label_thresholds()``).
        threshold: ``None`` (the model's own, else 0.5), one probability in (0, 1) for every label, or
            ``num_classes`` probabilities in [0, 1], one per label.

    Raises:
        ValueError: ``threshold`` is out of range or of the wrong length, or the model's saved
            thresholds are malformed (the message says which entry and how to fix it).
    """
    n = model.num_classes
    if threshold is None:
        saved = model.get_label_thresholds()  # raises on a malformed entry
        if saved is not None:
            return DecisionThresholds(np.asarray(saved, dtype=np.float64), "model")
        return DecisionThresholds(np.full(n, DEFAULT_THRESHOLD), "default")
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}.")
        return DecisionThresholds(np.full(n, float(threshold)), "override")
    try:
        values = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (n,) or not ((values >= 0.0) & (values <= 1.0)).all():
        raise ValueError(
            f"threshold must be one probability, or {n} probabilities in [0, 1] (one per label), got "
            f"{threshold!r}."
        )
    return DecisionThresholds(values, "override")
