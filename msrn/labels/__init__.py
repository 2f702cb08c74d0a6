"""The label sets of the paper's four benchmarks, shipped with the package.

Each set holds the label names in the authors' order (the order of their checkpoints' outputs),
the GloVe 300-d vector of each name that the authors trained with, and the co-occurrence statistics
the label graph is built from::

    import msrn.labels
    voc = msrn.labels.load("voc2007")        # or "voc"; see msrn.labels.available()
    voc.names                                 # ('aeroplane', 'bicycle', ...), 20 names
    voc.features                              # float32 tensor [20, 300]
    voc.graph()                               # bool tensor [20, 20], the GAT mask at t = 0.4

========== ======= ============================================================================
name       labels  statistics behind ``graph()``
========== ======= ============================================================================
voc2007    20      the authors' counts over PASCAL VOC 2007 trainval (6 edges at t = 0.4)
coco2014   80      the authors' counts over MS-COCO 2014 train (111 edges at t = 0.4)
nuswide    81      the authors' counts over NUS-WIDE (2 edges at t = 0.4)
apparel    11      counts over the training half of the authors' Apparel split (6 edges)
========== ======= ============================================================================

Apparel: the authors' own statistics count each colour once and only colour-to-item pairs, which
makes every colour "imply" every item it was ever seen with; the statistics shipped here are
counted from the training labels instead, the way the other three sets were.
"""

import dataclasses
import importlib.resources
from collections.abc import Sequence

import numpy as np
import torch

from ..graph import edges_from_statistics, label_graph_from_statistics

__all__ = ["LabelSet", "load", "available", "find"]

_SETS: dict[str, str] = {
    "voc2007": "PASCAL VOC 2007",
    "coco2014": "MS-COCO 2014",
    "nuswide": "NUS-WIDE",
    "apparel": "Apparel",
}
_ALIASES: dict[str, str] = {"voc": "voc2007", "coco": "coco2014"}


@dataclasses.dataclass(frozen=True, eq=False)
class LabelSet:
    """One benchmark's labels: names, GloVe features and co-occurrence statistics.

    Attributes:
        name: the set's canonical name (``"voc2007"``, ...).
        title: the data set it belongs to (``"PASCAL VOC 2007"``, ...).
        names: the ``n`` label names, in the authors' (model output) order.
        features: float32 ``[n, 300]``: GloVe vector of each name (a multi-word name: mean of its
            words), as the authors trained with.
        counts: int64 ``[n]``: training images with each label.
        cooccurrence: int64 ``[n, n]``: training images with both labels (the diagonal is not used).
    """

    name: str
    title: str
    names: tuple[str, ...]
    features: torch.Tensor
    counts: np.ndarray
    cooccurrence: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def graph(self, threshold: float = 0.4) -> torch.Tensor:
        """The GAT attention mask ``[n, n]`` (bool, self-loops included) at ``threshold``, as
        :func:`msrn.graph.label_graph_from_statistics` builds it."""
        return label_graph_from_statistics(self.cooccurrence, self.counts, threshold)

    def num_edges(self, threshold: float = 0.4) -> int:
        """Directed edges ``i -> j`` with ``P(j | i) >= threshold`` (self-loops not counted)."""
        return int(edges_from_statistics(self.cooccurrence, self.counts, threshold).sum())

    def select(self, names: Sequence[str]) -> "LabelSet":
        """The same set restricted to ``names``, in that order (features, counts and co-occurrence
        follow). Raises ``ValueError`` naming any name the set does not have."""
        index = {name: i for i, name in enumerate(self.names)}
        unknown = [name for name in names if name not in index]
        if unknown:
            raise ValueError(
                f"The {self.name} label set has no label {unknown}; its labels: {', '.join(self.names)}."
            )
        rows = np.array([index[name] for name in names], dtype=np.int64)
        return dataclasses.replace(
            self,
            names=tuple(names),
            features=self.features[torch.from_numpy(rows)].clone(),
            counts=self.counts[rows],
            cooccurrence=self.cooccurrence[np.ix_(rows, rows)],
        )

    def __repr__(self) -> str:
        return (
            f"LabelSet({self.name!r}, labels={self.num_classes}, "
            f"features={list(self.features.shape)}, edges at 0.4={self.num_edges()})"
        )


def available() -> tuple[str, ...]:
    """The canonical names of the built-in label sets (``load`` also takes ``"voc"``, ``"coco"``)."""
    return tuple(_SETS)


def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _SETS:
        choices = ", ".join(
            name + "".join(f" (or {alias})" for alias, target in _ALIASES.items() if target == name)
            for name in _SETS
        )
        raise ValueError(f"Unknown label set {name!r}; the built-in label sets are: {choices}.")
    return key


def load(name: str) -> LabelSet:
    """The built-in label set ``name`` (one of :func:`available`, or the alias ``voc`` / ``coco``).

    Raises:
        ValueError: ``name`` is not a built-in set (the message lists those that are).
    """
    key = _canonical(name)
    resource = importlib.resources.files(__name__).joinpath(f"{key}.npz")
    with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
        return LabelSet(
            name=key,
            title=_SETS[key],
            names=tuple(str(label) for label in archive["names"]),
            features=torch.from_numpy(np.ascontiguousarray(archive["glove"], dtype=np.float32)),
            counts=archive["label_counts"].astype(np.int64),
            cooccurrence=archive["cooccurrence"].astype(np.int64),
        )


def find(names: Sequence[str]) -> LabelSet | None:
    """The first built-in set (in :func:`available` order) that has every one of ``names``, restricted
    to them in their order (:meth:`LabelSet.select`); ``None`` when no set has them all."""
    for key in _SETS:
        label_set = load(key)
        if set(names) <= set(label_set.names):
            return label_set.select(names)
    return None
