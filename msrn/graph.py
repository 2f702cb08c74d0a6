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

Large label sets. The functions above take a dense ``[N, n]`` label matrix and return ``[n, n]``
arrays. For thousands of labels and millions of images (Open Images: 9,605 labels, 9 M images),
:func:`cooccurrence_from_label_lists` counts from per-image label lists (CSR rows of the present
labels, optionally of the known absent ones) and keeps only the pairs seen together, and
:func:`label_edges_from_label_lists` turns them into the ``[2, E]`` edge list MSRN's graph attention
runs on, the same graph as the dense path gives.
"""

from typing import Any, NamedTuple

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
    "SparseCooccurrence",
    "cooccurrence_from_label_lists",
    "label_edges_from_label_lists",
    "count_label_edges",
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


def count_label_edges(graph: torch.Tensor) -> int:
    """Edges between distinct labels in a label graph, self-loops not counted.

    Args:
        graph: a ``[n, n]`` mask (bool, or numbers with non-zero = edge), or a ``[2, E]`` integer edge
            list (column ``(i, j)``), the two forms ``MSRN.label_graph`` takes.
    """
    is_mask_type = graph.dtype == torch.bool or graph.is_floating_point()
    if graph.dim() == 2 and graph.shape[0] == 2 and not is_mask_type:
        return int((graph[0] != graph[1]).sum())
    if graph.dim() != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(
            f"A label graph is a [n, n] mask or a [2, E] edge list, got shape {list(graph.shape)}."
        )
    mask = graph != 0
    return int(mask.sum()) - int(mask.diagonal().sum())


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


# ------------------------------------------------------------------------------- sparse label lists
# Sparse counting enumerates the label pairs of a chunk of images at once; this bounds the pairs held
# (8 bytes each, a few times over while they are sorted).
_PAIRS_PER_CHUNK = 1 << 24


class SparseCooccurrence(NamedTuple):
    """Co-occurrence statistics of per-image label lists, kept sparse (:func:`cooccurrence_from_label_lists`).

    ``pairs[:, p] = (i, j)`` (``i != j``) lists every ordered pair of labels seen together at least once,
    sorted by ``i`` then ``j``; ``cooccurrence[p]`` is ``co[i, j]`` and ``known[p]`` the denominator of
    ``P(j | i)``: ``count[i]``, or with known negatives ``known[i, j]`` (module docstring). ``counts[i]``
    is the number of images with label ``i``.
    """

    pairs: np.ndarray  # [2, P] int64
    cooccurrence: np.ndarray  # [P] int64
    known: np.ndarray  # [P] int64
    counts: np.ndarray  # [n] int64


def _label_lists(lists: Any, num_labels: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` checked, with each image's labels sorted and made unique."""
    if not isinstance(lists, (tuple, list)) or len(lists) != 2:
        raise ValueError(
            f"{name} must be a pair (indptr, indices) of 1-D integer arrays (CSR rows: the labels of image "
            f"s are indices[indptr[s]:indptr[s + 1]])."
        )
    indptr, indices = lists
    indptr = _as_numpy(indptr, f"{name} indptr")
    indices = _as_numpy(indices, f"{name} indices")
    for array, part in ((indptr, "indptr"), (indices, "indices")):
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(
                f"{name} {part} must be a 1-D integer array, got {array.dtype} {list(array.shape)}."
            )
    indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
    if indptr.size == 0 or indptr[0] != 0 or indptr[-1] != indices.size or (np.diff(indptr) < 0).any():
        raise ValueError(
            f"{name} indptr must start at 0, never decrease and end at len(indices) = {indices.size}."
        )
    if indices.size and (indices.min() < 0 or indices.max() >= num_labels):
        raise ValueError(f"{name} indices must be label numbers in [0, {num_labels}).")
    images = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    keys = np.unique(images * num_labels + indices)  # sorted, one entry per (image, label)
    unique_indptr = np.zeros(indptr.size, dtype=np.int64)
    np.cumsum(np.bincount(keys // num_labels, minlength=indptr.size - 1), out=unique_indptr[1:])
    return unique_indptr, keys % num_labels


def _pair_counts(
    left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray], num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, counts)``: for every pair ``(i, j)``, ``i != j``, with ``i`` in an image's ``left`` list and
    ``j`` in its ``right`` list, the key ``i * n + j`` (sorted, unique) and the number of such images."""
    (left_ptr, left_idx), (right_ptr, right_idx) = left, right
    left_len, right_len = np.diff(left_ptr), np.diff(right_ptr)
    per_image = left_len * right_len
    ends = np.cumsum(per_image)
    keys_parts, count_parts = [], []
    first = 0
    while first < per_image.size:
        # Images [first, last): as many as fit in one chunk of pairs (at least one).
        budget = (ends[first - 1] if first else 0) + _PAIRS_PER_CHUNK
        last = max(first + 1, int(np.searchsorted(ends, budget, side="right")))
        sizes = per_image[first:last]
        total = int(sizes.sum())
        if total:
            image = np.repeat(np.arange(first, last, dtype=np.int64), sizes)
            offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            width = right_len[image]
            i = left_idx[left_ptr[image] + offset // width]
            j = right_idx[right_ptr[image] + offset % width]
            keep = i != j
            chunk_keys, chunk_counts = np.unique(i[keep] * num_labels + j[keep], return_counts=True)
            keys_parts.append(chunk_keys)
            count_parts.append(chunk_counts)
        first = last
    if not keys_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys, inverse = np.unique(np.concatenate(keys_parts), return_inverse=True)
    counts = np.zeros(keys.size, dtype=np.int64)
    np.add.at(counts, inverse, np.concatenate(count_parts))
    return keys, counts


def cooccurrence_from_label_lists(
    positives: Any, num_labels: int, negatives: Any | None = None
) -> SparseCooccurrence:
    """Co-occurrence statistics of per-image label lists, without any dense ``images x labels`` or
    ``labels x labels`` array: memory grows with the label pairs seen together.

    Args:
        positives: ``(indptr, indices)``, CSR rows of the present labels: image ``s`` has the labels
            ``indices[indptr[s]:indptr[s + 1]]`` (repeats count once).
        num_labels: the number of labels ``n``.
        negatives: ``None`` when every label not listed as present is absent (fully labelled data);
            else ``(indptr, indices)`` of each image's *known* absent labels, and every label in
            neither list is unknown (partial labels, e.g. Open Images' verified negatives): it counts
            neither as present nor as absent (module docstring).

    Returns:
        A :class:`SparseCooccurrence`; at every pair, ``P(j | i) = cooccurrence / known``.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}.")
    num_labels = int(num_labels)
    present = _label_lists(positives, num_labels, "positives")
    counts = np.bincount(present[1], minlength=num_labels).astype(np.int64)
    keys, cooccurrence = _pair_counts(present, present, num_labels)
    known = counts[keys // num_labels]
    if negatives is not None:
        absent = _label_lists(negatives, num_labels, "negatives")
        if absent[0].size != present[0].size:
            raise ValueError(
                f"positives and negatives must list the same images: {present[0].size - 1} vs "
                f"{absent[0].size - 1} rows."
            )
        rows = np.arange(present[0].size - 1, dtype=np.int64)
        both = np.intersect1d(
            np.repeat(rows, np.diff(present[0])) * num_labels + present[1],
            np.repeat(rows, np.diff(absent[0])) * num_labels + absent[1],
            assume_unique=True,
        )
        if both.size:
            image, label = divmod(int(both[0]), num_labels)
            raise ValueError(
                f"{both.size} (image, label) entries are listed both as present and as absent (first: image "
                f"{image}, label {label}); resolve them before counting."
            )
        negative_keys, negative_counts = _pair_counts(present, absent, num_labels)
        # known[i, j] = images with i present and j present or known absent: co + (i present, j absent).
        where = np.searchsorted(negative_keys, keys)
        found = where < negative_keys.size
        found[found] = negative_keys[where[found]] == keys[found]
        known = cooccurrence.copy()
        known[found] += negative_counts[where[found]]
    pairs = np.stack([keys // num_labels, keys % num_labels])
    return SparseCooccurrence(pairs, cooccurrence, known, counts)


def label_edges_from_label_lists(
    positives: Any, num_labels: int, threshold: float = 0.4, negatives: Any | None = None
) -> torch.Tensor:
    """The GAT's neighbourhoods as an edge list ``[2, E]`` (int64) from per-image label lists: column
    ``(i, j)`` means label ``i`` attends to ``j``, i.e. ``P(i | j) >= threshold``, self-loops included,
    sorted by ``i`` then ``j``.

    The same graph as ``label_graph_from_targets(...).nonzero().t()`` on the equivalent dense label
    matrix, without building it (arguments as in :func:`cooccurrence_from_label_lists`). Pass it to
    the model as ``label_graph=``: MSRN keeps large label graphs as edge lists.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    statistics = cooccurrence_from_label_lists(positives, num_labels, negatives)
    n = int(statistics.counts.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        probability = np.where(statistics.known > 0, statistics.cooccurrence / statistics.known, 0.0)
    source, target = statistics.pairs[:, probability >= threshold]  # P(target | source) >= t
    # label `target` attends to `source`; plus self-loops; sorted as mask.nonzero() would be.
    keys = np.sort(np.concatenate([target * n + source, np.arange(n, dtype=np.int64) * (n + 1)]))
    return torch.from_numpy(np.stack([keys // n, keys % n]))
