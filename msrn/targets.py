"""The label convention of targets: one number per (image, label) entry.

Every ``msrn.data`` data set yields ``(image, target)`` pairs, and ``target`` is one float ``[n]``
tensor that carries every label state:

- :data:`POSITIVE` (``1``): the label is present;
- :data:`NEGATIVE` (``0``): the label is absent;
- :data:`UNKNOWN` (``-1``): nobody said; e.g. a partial-label CSV's ``-cat`` or ``?``, and PASCAL VOC's
  "difficult" labels in an evaluation split (docs/design.md section 6).

:class:`msrn.MSRNLoss`, :mod:`msrn.metrics` and the label graph (:mod:`msrn.graph`) leave out every
entry below 0, with no extra argument, so the plain PyTorch loop works on every data set::

    for images, targets in loader:
        loss = criterion(model(images), targets)

The helpers take a tensor or a NumPy array and return the same kind.
"""

from typing import Any

import numpy as np
import torch

from ._blocks import index_blocks

__all__ = ["POSITIVE", "NEGATIVE", "UNKNOWN", "known_mask", "positive_mask", "check_targets"]

POSITIVE = 1
NEGATIVE = 0
UNKNOWN = -1


def known_mask(targets: Any) -> Any:
    """bool, ``True`` where the entry is known (``targets >= 0``: positive or negative); same shape.

    Example: the binary cross-entropy of the known entries only::

        known = known_mask(targets)
        loss = F.binary_cross_entropy_with_logits(logits[known], targets[known])
    """
    return targets >= 0


def positive_mask(targets: Any) -> Any:
    """bool, ``True`` where the label is present (``targets > 0``); unknown entries are not."""
    return targets > 0


def check_targets(targets: Any, name: str = "targets") -> np.ndarray:
    """``targets`` as a NumPy array after checking it holds only 1, 0 and -1 (:data:`UNKNOWN`).

    Raises:
        ValueError: another value (e.g. 0.5, 2, NaN), naming what the convention is.
    """
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu()
        targets = targets.float().numpy() if targets.is_floating_point() else targets.numpy()
    values = np.asarray(targets)
    if values.dtype == bool:
        return values.astype(np.int8)
    rows = values.reshape(1, -1) if values.ndim < 2 else values
    for block_rows in index_blocks(len(rows), int(np.prod(rows.shape[1:]))):
        block = rows[block_rows]
        valid = (block == POSITIVE) | (block == NEGATIVE) | (block == UNKNOWN)
        if not valid.all():
            odd = block[~valid].flat[0].item()
            raise ValueError(
                f"{name} must hold only 1 (present), 0 (absent) and -1 (unknown, left out), got {odd!r}."
            )
    return values
