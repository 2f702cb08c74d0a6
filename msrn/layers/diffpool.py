"""Differentiable pooling of label embeddings into group embeddings (paper eq. 5-6)."""

import torch
import torch.nn as nn

from .gat import GATLayer

__all__ = ["DiffPool", "compactness_loss"]


def compactness_loss(
    label_embeddings: torch.Tensor,
    group_embeddings: torch.Tensor,
    assignment: torch.Tensor,
    squared: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    r"""Compactness loss of the group embeddings (paper eq. 6), unweighted.

    Each label ``i`` belongs to its most likely group :math:`g(i) = \arg\max_k S_{ik}` and

    .. math::
        \mathcal{L}_2 = \sum_{i=1}^{n} \lVert E_l^i - E_g^{g(i)} \rVert_2^{\,q},

    with ``q = 2`` when ``squared`` (the paper) and ``q = 1`` otherwise (the authors' code).
    The paper's weight :math:`\lambda` is applied by the caller. ``reduction="mean"`` divides by ``n``
    (MSRN's label-wise head: the term then keeps its weight next to a loss averaged over the labels,
    however many there are).

    Args:
        label_embeddings: ``[n, d]`` label embeddings :math:`E_l`.
        group_embeddings: ``[m, d]`` group embeddings :math:`E_g`.
        assignment: ``[n, m]`` soft assignment :math:`S` (only its arg-max is used).
        squared: squared distances (paper) or plain distances (official).
        reduction: ``"sum"`` over the labels (eq. 6) or ``"mean"``.

    Returns:
        A scalar tensor.
    """
    if label_embeddings.shape[0] != assignment.shape[0] or group_embeddings.shape[0] != assignment.shape[1]:
        raise ValueError(
            f"compactness_loss: assignment {list(assignment.shape)} must be [n, m] for label embeddings "
            f"{list(label_embeddings.shape)} and group embeddings {list(group_embeddings.shape)}."
        )
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    nearest_group = group_embeddings[assignment.argmax(dim=1)]
    squared_distance = (label_embeddings - nearest_group).pow(2).sum(dim=1)
    # sqrt's gradient is infinite at 0; clamp keeps a label sitting on its group centre harmless.
    distances = squared_distance if squared else squared_distance.clamp_min(1e-12).sqrt()
    return distances.sum() if reduction == "sum" else distances.mean()


class DiffPool(nn.Module):
    r"""One DiffPool step that pools ``n`` label nodes into ``m`` groups (paper eq. 5).

    .. math::
        Z = \mathrm{GAT}_{embed}(X, A), \qquad
        S = \operatorname{softmax}_{groups}\big(\mathrm{GAT}_{assign}(X, A)\big), \qquad
        E_g = S^\top Z

    With ``pooling="mean"`` (MSRN's label-wise head, not the paper) a group is the assignment-weighted
    *mean* of its labels, :math:`E_g[k] = \sum_i S_{ik} Z_i / \sum_i S_{ik}`: the sum of eq. 5 grows
    with the number of labels (about ``n / m`` labels per group), and at thousands of labels its
    entries reach tens of thousands, which makes the attention and the compactness loss diverge.

    Both GATs are :class:`~msrn.layers.GATLayer` (so each ends with its ELU; the softmax over groups
    comes after it). There is no auxiliary link-prediction or entropy loss; the paper's own
    regulariser is :meth:`compactness_loss` (eq. 6).

    Args:
        dim: node width ``d`` (input and output).
        num_groups: number of groups ``m``.
        pooling: ``"sum"`` (eq. 5) or ``"mean"``.

    Shapes:
        - x: ``[n, dim]`` node features (MSRN feeds ``ReLU(E_l)``)
        - graph: ``[n, n]`` bool neighbourhood mask or ``[2, E]`` edge list, as for
          :class:`~msrn.layers.GATLayer` (the edge list keeps memory linear in the edges: DiffPool
          and :func:`compactness_loss` are themselves linear in ``n``)
        - output: ``(groups [m, dim], assignment [n, m])``
    """

    def __init__(self, dim: int, num_groups: int, pooling: str = "sum") -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"DiffPool needs num_groups >= 1, got {num_groups}.")
        if pooling not in ("sum", "mean"):
            raise ValueError(f"DiffPool pooling must be 'sum' or 'mean', got {pooling!r}.")
        self.dim = dim
        self.num_groups = num_groups
        self.pooling = pooling
        self.embed = GATLayer(dim, dim)
        self.assign = GATLayer(dim, num_groups)

    def forward(self, x: torch.Tensor, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(x, graph)
        assignment = torch.softmax(self.assign(x, graph), dim=-1)
        groups = assignment.transpose(0, 1) @ z
        if self.pooling == "mean":
            groups = groups / assignment.sum(dim=0).unsqueeze(1).clamp_min(1e-12)
        return groups, assignment

    @staticmethod
    def compactness_loss(
        label_embeddings: torch.Tensor,
        group_embeddings: torch.Tensor,
        assignment: torch.Tensor,
        squared: bool = True,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """Eq. 6; see :func:`msrn.layers.compactness_loss`."""
        return compactness_loss(label_embeddings, group_embeddings, assignment, squared, reduction)

    def extra_repr(self) -> str:
        pooling = "" if self.pooling == "sum" else f", pooling={self.pooling!r}"
        return f"dim={self.dim}, num_groups={self.num_groups}{pooling}"
