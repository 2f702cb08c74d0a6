"""Graph attention layer of the LGE module (paper eq. 2-4)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GATLayer"]


class GATLayer(nn.Module):
    r"""Single-head graph attention layer with a residual self term (paper eq. 2-3).

    For node features :math:`X \in \mathbb{R}^{n \times F_{in}}` and a boolean neighbourhood mask
    :math:`M \in \{0,1\}^{n \times n}`:

    .. math::
        h_i &= x_i U \\
        e_{ij} &= \mathrm{LeakyReLU}_{0.2}\big(p_{self} \cdot h_i + p_{nbr} \cdot h_j\big) \\
        \alpha_{ij} &= \operatorname{softmax}_{j \in \mathcal{N}_i}(e_{ij})
            \qquad \mathcal{N}_i = \{i\} \cup \{j : M_{ij}\}                         && \text{(eq. 2)} \\
        x'_i &= \mathrm{ELU}\Big(\sum_{j \in \mathcal{N}_i} \alpha_{ij} h_j + h_i\Big)  && \text{(eq. 3)}

    ``p = [p_self; p_nbr]`` is the paper's :math:`P \in \mathbb{R}^{1 \times 2w}`: its first half scores
    the attending node ``i``, its second half the neighbour ``j``. Stacking layers gives eq. 4.
    One head, no bias, no dropout (the reference implementation's choices).

    Args:
        in_dim: input width :math:`F_{in}`.
        out_dim: output width :math:`w`.
        negative_slope: slope of the LeakyReLU in eq. 2 (0.2 in the paper).

    Shapes:
        - x: ``[n, in_dim]``
        - mask: ``[n, n]`` bool, ``mask[i, j]`` means node ``i`` attends to node ``j``; the diagonal is
          always treated as ``True`` (self-loops are always on).
        - output: ``[n, out_dim]``
    """

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"GATLayer needs positive widths, got in_dim={in_dim}, out_dim={out_dim}.")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.negative_slope = negative_slope
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))  # U, stored as nn.Linear does
        self.att_self = nn.Parameter(torch.empty(out_dim))  # first half of P
        self.att_neighbor = nn.Parameter(torch.empty(out_dim))  # second half of P
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform with gain 1.414 on U and on P taken as a (2w x 1) matrix, as the authors do.
        gain = 1.414
        nn.init.xavier_uniform_(self.weight, gain=gain)
        bound = gain * math.sqrt(6.0 / (2 * self.out_dim + 1))
        nn.init.uniform_(self.att_self, -bound, bound)
        nn.init.uniform_(self.att_neighbor, -bound, bound)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` of eq. 2, ``[n, n]`` (row ``i`` sums to one over ``N_i``)."""
        return self._attention(F.linear(x, self.weight), mask)

    def _attention(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        if mask.shape != (n, n):
            raise ValueError(f"GATLayer mask must be [{n}, {n}] for {n} nodes, got {list(mask.shape)}.")
        scores = (h @ self.att_self).unsqueeze(1) + (h @ self.att_neighbor).unsqueeze(0)
        scores = F.leaky_relu(scores, self.negative_slope)
        eye = torch.eye(n, dtype=torch.bool, device=mask.device)
        neighbourhood = mask.to(torch.bool) | eye
        scores = scores.masked_fill(~neighbourhood, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"GATLayer expects node features [n, {self.in_dim}], got {list(x.shape)}.")
        h = F.linear(x, self.weight)
        alpha = self._attention(h, mask)
        return F.elu(alpha.to(h.dtype) @ h + h)

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, negative_slope={self.negative_slope}"
