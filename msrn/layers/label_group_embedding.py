"""LGE module: label embeddings from stacked GATs and group embeddings from DiffPool (paper 3.2)."""

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .diffpool import DiffPool
from .gat import GATLayer

__all__ = ["LabelGroupEmbedding"]


class LabelGroupEmbedding(nn.Module):
    r"""Label-Group Embedding (LGE) module (paper section 3.2, eq. 2-6).

    .. math::
        E_l &= \mathrm{GAT}_T(\cdots \mathrm{GAT}_1(\mathrm{In}(V), A) \cdots, A)   && \text{(eq. 4)} \\
        E_g, S &= \mathrm{DiffPool}(\mathrm{ReLU}(E_l), A)                           && \text{(eq. 5)}

    ``In`` is an optional linear input projection (the authors' code uses ``Linear(300 -> 256)``; the
    paper has none). ``E_l`` is returned as the last GAT produced it (ELU output, can be negative);
    only DiffPool sees its ReLU.

    Args:
        in_dim: label feature width ``F`` (300 for GloVe).
        gat_dims: output widths of the stacked GATs; the last one is the embedding width ``d``
            (paper: ``(300, 512)``).
        num_groups: number of groups ``m``; ``0`` disables DiffPool (label embeddings only).
        input_proj_dim: width of the linear input projection, or ``None`` for none (paper).
        group_pooling: DiffPool's ``pooling``, ``"sum"`` (eq. 5) or ``"mean"`` (see
            :class:`~msrn.layers.DiffPool`).

    Shapes:
        - features: ``[n, in_dim]``; graph: ``[n, n]`` bool mask or ``[2, E]`` integer edge list (see
          :class:`~msrn.layers.GATLayer`; the edge list keeps every step linear in ``n`` and ``E``)
        - output: ``(E_l [n, d], E_g [m, d] or None, S [n, m] or None)``
    """

    def __init__(
        self,
        in_dim: int,
        gat_dims: Sequence[int] = (300, 512),
        num_groups: int = 4,
        input_proj_dim: int | None = None,
        group_pooling: str = "sum",
    ) -> None:
        super().__init__()
        if len(gat_dims) < 1:
            raise ValueError("LabelGroupEmbedding needs at least one GAT layer (gat_dims is empty).")
        if num_groups < 0:
            raise ValueError(f"num_groups must be >= 0, got {num_groups}.")
        self.input_proj = nn.Linear(in_dim, input_proj_dim) if input_proj_dim else nn.Identity()
        widths = [input_proj_dim or in_dim, *gat_dims]
        self.gats = nn.ModuleList([GATLayer(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.embed_dim = widths[-1]
        self.num_groups = num_groups
        self.diffpool = (
            DiffPool(self.embed_dim, num_groups, pooling=group_pooling) if num_groups > 0 else None
        )

    def forward(
        self, features: torch.Tensor, graph: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = self.input_proj(features)
        for gat in self.gats:
            x = gat(x, graph)
        label_embeddings = x
        if self.diffpool is None:
            return label_embeddings, None, None
        group_embeddings, assignment = self.diffpool(F.relu(label_embeddings), graph)
        return label_embeddings, group_embeddings, assignment
