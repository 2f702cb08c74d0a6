"""Label co-occurrence graph: the neighbourhoods the GAT layers attend over (docs/design.md section 1).

Edge direction. From co-occurrence counts ``co[i, j]`` (images with both labels) and label counts
``count[i]``, the conditional probability is ``P(j | i) = co[i, j] / count[i]`` and the binary edge is
``E[i, j] = P(j | i) >= threshold`` ("seeing i makes j likely"). A GAT node ``i`` aggregates from the
labels that make it likely, so the attention mask is the transpose::

    mask[i, j] = E[j, i] = P(i | j) >= threshold        (plus self-loops, mask[i, i] = True)

On the official VOC 2007 statistics at ``threshold = 0.4`` this gives 6 edges: ``person`` attends
to five labels that usually come with a person, and ``chair`` attends to ``diningtable``.
A label that never occurs (``count[i] == 0``) has no outgoing edge (no division by zero).

Partial labels. When some entries of the label matrix are unknown (-1 in the targets,
:mod:`msrn.targets`, e.g. a partial-label CSV; ``unknown[s, j]``), only known entries are counted:
``co[i, j]`` counts the images where both labels are present (an unknown entry is never present),
and the denominator becomes the number of images where ``i`` is present *and* ``j`` is known::

    known[i, j] = #{s : y[s, i] = 1 and not unknown[s, j]}
    P(j | i)    = co[i, j] / known[i, j]          (0 when known[i, j] = 0)

so an image that does not say whether ``j`` is there does not count as evidence that ``j`` is absent.
Without unknown entries ``known[i, j] = count[i]`` and this is the formula above.
"""

from typing import Any

import numpy as np
import torch

from .targets import known_mask, positive_mask

__all__ = [
    "cooccurrence_statistics",
    "known_pair_counts",
    "conditional_probabilities",
    "edges_from_statistics",
    "label_graph_from_statistics",
    "label_graph_from_targets",
]


def _as_numpy(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    result = np.asarray(array)
    if result.dtype == object:
        raise ValueError(f"{name} must be numeric, got an object array.")
    return result


def cooccurrence_statistics(targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(cooccurrence [n, n], counts [n])`` of a ``[N, n]`` label matrix (1 / 0 / -1).

    Entries > 0 count as present (so VOC's "difficult" labels, positives in a training set, count
    too); unknown (-1) entries are never present. ``cooccurrence[i, i]`` equals ``counts[i]``; it is
    not used by the graph.
    """
    y = _as_numpy(targets, "targets")
    if y.ndim != 2:
        raise ValueError(f"targets must be an [N, n] label matrix, got shape {list(y.shape)}.")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError("targets contains NaN or infinite values.")
    present = positive_mask(y).astype(np.int64)
    return present.T @ present, present.sum(axis=0)


def known_pair_counts(targets: Any, unknown: Any | None = None) -> np.ndarray:
    """``known[i, j]``: the images where label ``i`` is present and label ``j`` is known, ``[n, n]``.

    ``targets`` is the ``[N, n]`` label matrix; its -1 entries are unknown, and so are the True entries
    of the optional bool ``[N, n]`` ``unknown``. It is the denominator of ``P(j | i)`` with partial
    labels (module docstring).
    """
    y = _as_numpy(targets, "targets")
    missing = ~known_mask(y)
    if unknown is not None:
        marked = _as_numpy(unknown, "unknown").astype(bool)
        if marked.shape != y.shape:
            raise ValueError(f"unknown {list(marked.shape)} must have the shape of targets {list(y.shape)}.")
        if (positive_mask(y) & marked).any():
            raise ValueError(
                "An entry is both present (target > 0) and marked unknown; write -1 in the targets "
                "for an unknown entry."
            )
        missing = missing | marked
    return positive_mask(y).astype(np.int64).T @ (~missing).astype(np.int64)


def conditional_probabilities(cooccurrence: Any, counts: Any) -> np.ndarray:
    """``P[i, j] = P(j | i) = cooccurrence[i, j] / counts[i]``; rows of unseen labels are zero.

    ``counts`` is ``[n]`` (the images with label ``i``), or ``[n, n]`` per pair (partial labels:
    :func:`known_pair_counts`); where it is 0 the probability is 0.
    """
    co = _as_numpy(cooccurrence, "cooccurrence").astype(np.float64)
    cnt = _as_numpy(counts, "counts").astype(np.float64)
    if co.ndim != 2 or co.shape[0] != co.shape[1]:
        raise ValueError(f"cooccurrence must be a square [n, n] matrix, got shape {list(co.shape)}.")
    if cnt.ndim != 2:
        cnt = cnt.reshape(-1)
        if cnt.shape[0] != co.shape[0]:
            raise ValueError(
                f"counts has {cnt.shape[0]} entries but cooccurrence is {co.shape[0]}x{co.shape[1]}."
            )
        cnt = np.repeat(cnt[:, None], co.shape[1], axis=1)
    elif cnt.shape != co.shape:
        raise ValueError(
            f"counts {list(cnt.shape)} must be [n] or the shape of cooccurrence {list(co.shape)}."
        )
    if not (np.isfinite(co).all() and np.isfinite(cnt).all()):
        raise ValueError("cooccurrence and counts must be finite.")
    if (co < 0).any() or (cnt < 0).any():
        raise ValueError("cooccurrence and counts must be non-negative.")
    probabilities = np.zeros_like(co)
    seen = cnt > 0
    probabilities[seen] = co[seen] / cnt[seen]
    return probabilities


def edges_from_statistics(cooccurrence: Any, counts: Any, threshold: float = 0.4) -> np.ndarray:
    """Directed edges ``E[i, j] = P(j | i) >= threshold`` for ``i != j`` (bool ``[n, n]``; ``counts``
    as in :func:`conditional_probabilities`)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    probabilities = conditional_probabilities(cooccurrence, counts)
    edges = probabilities >= threshold
    np.fill_diagonal(edges, False)
    return edges


def label_graph_from_statistics(cooccurrence: Any, counts: Any, threshold: float = 0.4) -> torch.Tensor:
    """The GAT attention mask ``[n, n]`` (bool): ``mask[i, j] = P(i | j) >= threshold`` or ``i == j``."""
    mask = edges_from_statistics(cooccurrence, counts, threshold).T.copy()
    np.fill_diagonal(mask, True)
    return torch.from_numpy(mask)


def label_graph_from_targets(
    targets: Any, threshold: float = 0.4, unknown: Any | None = None
) -> torch.Tensor:
    """The GAT attention mask from a training label matrix ``[N, n]`` (see the module docstring).

    ``targets``: 1 present, 0 absent, -1 unknown (:mod:`msrn.targets`; e.g. a data set's ``targets``).
    Unknown entries are counted neither as present nor as absent; ``unknown``, an optional bool
    ``[N, n]``, marks further entries as unknown.
    """
    cooccurrence, counts = cooccurrence_statistics(targets)
    if unknown is not None or not known_mask(_as_numpy(targets, "targets")).all():
        counts = known_pair_counts(targets, unknown)
    return label_graph_from_statistics(cooccurrence, counts, threshold)
