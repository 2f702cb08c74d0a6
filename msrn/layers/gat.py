"""Graph attention layer of the LGE module (paper eq. 2-4), on a dense mask or on an edge list."""

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["GATLayer", "edge_index_from_mask", "is_edge_index"]


def is_edge_index(graph: torch.Tensor) -> bool:
    """Whether ``graph`` is an edge list ``[2, E]`` (integer dtype) rather than a ``[n, n]`` mask
    (bool or floating dtype)."""
    return not (graph.dtype == torch.bool or torch.is_floating_point(graph))


def edge_index_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """The edge list ``[2, E]`` (int64) of a ``[n, n]`` neighbourhood mask, self-loops added.

    Column ``e`` is ``(i, j)``: node ``i`` attends to node ``j``. Columns are sorted by ``i``, then
    ``j``, so that ``edge_index_from_mask(mask)`` equals ``(mask | eye).nonzero().t()``.
    """
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"a neighbourhood mask must be [n, n], got {list(mask.shape)}.")
    n = mask.shape[0]
    full = mask.to(torch.bool) | torch.eye(n, dtype=torch.bool, device=mask.device)
    return full.nonzero().t().contiguous()


def _csr(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """An ``[n, n]`` CSR matrix of edges sorted by row."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n), dim=0, out=crow[1:])
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": used as documented
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, columns, values, (n, n), check_invariants=False)


class _EdgeSum(torch.autograd.Function):
    r"""``out[i] = sum_e alpha_e h[source_e]`` over the edges ``e`` into ``i`` (eq. 3's sum), as a sparse
    matrix product ``A h`` with ``A[target_e, source_e] = alpha_e``; nothing of size ``E x w`` exists.

    Backward: ``dL/dh = A^T g`` and ``dL/dalpha_e = g[target_e] . h[source_e]``, the product ``g h^T``
    sampled at the edges (``torch.sparse.sampled_addmm``). The edges must be sorted by target.
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, h: torch.Tensor, target: torch.Tensor, source: torch.Tensor):
        n = h.shape[0]
        ctx.save_for_backward(alpha, h, target, source)
        return _csr(target, source, alpha, n) @ h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        alpha, h, target, source = ctx.saved_tensors
        n = h.shape[0]
        grad_alpha = grad_h = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(target, source, torch.ones_like(alpha), n)
            grad_alpha = torch.sparse.sampled_addmm(pattern, grad.contiguous(), h.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            order = torch.argsort(source * n + target)
            grad_h = _csr(source[order], target[order], alpha[order], n) @ grad
        return grad_alpha, grad_h, None, None


class GATLayer(nn.Module):
    r"""Single-head graph attention layer with a residual self term (paper eq. 2-3).

    For node features :math:`X \in \mathbb{R}^{n \times F_{in}}` and neighbourhoods
    :math:`\mathcal{N}_i`:

    .. math::
        h_i &= x_i U \\
        e_{ij} &= \mathrm{LeakyReLU}_{0.2}\big(p_{self} \cdot h_i + p_{nbr} \cdot h_j\big) \\
        \alpha_{ij} &= \operatorname{softmax}_{j \in \mathcal{N}_i}(e_{ij})
            \qquad \mathcal{N}_i = \{i\} \cup \{j : M_{ij}\}                         && \text{(eq. 2)} \\
        x'_i &= \mathrm{ELU}\Big(\sum_{j \in \mathcal{N}_i} \alpha_{ij} h_j + h_i\Big)  && \text{(eq. 3)}

    ``p = [p_self; p_nbr]`` is the paper's :math:`P \in \mathbb{R}^{1 \times 2w}`: its first half scores
    the attending node ``i``, its second half the neighbour ``j``. Stacking layers gives eq. 4.
    One head, no bias, no dropout (the reference implementation's choices).

    The neighbourhoods come in one of two forms, with the same result (to rounding):

    - a dense ``[n, n]`` bool mask ``M`` (``mask[i, j]``: node ``i`` attends to node ``j``): the scores
      are an ``[n, n]`` matrix, masked, with a softmax per row. Memory grows with ``n^2``.
    - an edge list ``edge_index [2, E]`` (integer dtype; column ``(i, j)``: ``i`` attends to ``j``):
      the scores exist for the ``E`` edges only, and the softmax per node is a scatter (per-node
      maximum, exponentials, per-node sums with ``index_add``). Memory grows with ``E``, which is
      what makes thousands of labels possible. Self-loops are added when missing; duplicate edges
      are not allowed (each would count twice in the softmax).

    Args:
        in_dim: input width :math:`F_{in}`.
        out_dim: output width :math:`w`.
        negative_slope: slope of the LeakyReLU in eq. 2 (0.2 in the paper).

    Shapes:
        - x: ``[n, in_dim]``
        - graph: ``[n, n]`` bool mask (the diagonal is always treated as ``True``) or ``[2, E]``
          integer edge list
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

    def attention(self, x: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` of eq. 2: ``[n, n]`` for a mask (row ``i`` sums to one over
        ``N_i``), ``[E]`` for an edge list (one per edge of :meth:`with_self_loops` ``(graph)``)."""
        h = F.linear(x, self.weight)
        if is_edge_index(graph):
            edges = self.with_self_loops(graph, h.shape[0])
            return self._edge_attention(h, edges)
        return self._attention(h, graph)

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

    @staticmethod
    def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """``edge_index`` as int64 with the missing self-loops added, sorted by the attending node then
        the neighbour (checked: ``[2, E]``, nodes in ``[0, num_nodes)``)."""
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"GATLayer edge_index must be [2, E], got {list(edge_index.shape)}.")
        edges = edge_index.long()
        if edges.numel() and (edges.min() < 0 or edges.max() >= num_nodes):
            raise ValueError(f"GATLayer edge_index holds nodes outside [0, {num_nodes}).")
        has_loop = torch.zeros(num_nodes, dtype=torch.bool, device=edges.device)
        has_loop[edges[0][edges[0] == edges[1]]] = True
        if not bool(has_loop.all()):
            missing = (~has_loop).nonzero().flatten()
            edges = torch.cat([edges, missing.unsqueeze(0).expand(2, -1)], dim=1)
        keys = edges[0] * num_nodes + edges[1]
        if bool((keys[1:] < keys[:-1]).any()):
            edges = edges[:, torch.argsort(keys)]
        return edges

    def _edge_attention(self, h: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Eq. 2 per edge: a softmax over each target's edges, as scatter operations (``[E]``)."""
        target, source = edges[0], edges[1]
        scores = (h @ self.att_self).index_select(0, target) + (h @ self.att_neighbor).index_select(0, source)
        scores = F.leaky_relu(scores, self.negative_slope)
        # Shifting each node's scores by their maximum leaves the softmax unchanged; the shift is a
        # constant for autograd.
        peak = torch.full((h.shape[0],), float("-inf"), dtype=scores.dtype, device=scores.device)
        peak = peak.scatter_reduce(0, target, scores.detach(), reduce="amax", include_self=True)
        weights = torch.exp(scores - peak.index_select(0, target))
        totals = weights.new_zeros(h.shape[0]).index_add(0, target, weights)
        return weights / totals.index_select(0, target)

    def forward(self, x: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"GATLayer expects node features [n, {self.in_dim}], got {list(x.shape)}.")
        h = F.linear(x, self.weight)
        if is_edge_index(graph):
            edges = self.with_self_loops(graph, h.shape[0])
            alpha = self._edge_attention(h, edges)
            # In float32 (CPU sparse products do not take half precision), as a sparse product.
            aggregated = _EdgeSum.apply(alpha.float(), h.float(), edges[0], edges[1]).to(h.dtype)
            return F.elu(aggregated + h)
        alpha = self._attention(h, graph)
        return F.elu(alpha.to(h.dtype) @ h + h)

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, negative_slope={self.negative_slope}"
