r"""Label-wise head: each label reads its own representation out of a bounded set of attention rows
and is scored on its own (docs/variants.md, "The label-wise head").

The paper's head (:class:`~msrn.layers.SemanticHead`) flattens one attention row per label into one
``fc1``, so each label costs ``B * d * hidden_dim`` weights (3.1 M for ResNet-101) and one row of the
semantic guided attention. Here the attention runs over ``R`` rows that do not grow with the labels
(``K`` query groups and the ``m`` DiffPool groups), and label ``i`` gets its representation by
attending from its own label embedding over those rows:

.. math::
    T &= \tanh(M) \in \mathbb{R}^{N \times R \times B d}
        && \text{(the rows, as the paper's head sees them)} \\
    q_i &= E_l[i]\, W_q, \quad k_r = T_r W_k \in \mathbb{R}^{a}, \qquad v_r = T_r W_v \in \mathbb{R}^{w} \\
    \beta^{(t)}_{ir} &= \operatorname{softmax}_r\big(q^{(t)}_i \cdot k^{(t)}_r / \sqrt{a / H}\big)
        && \text{head } t = 1..H \text{ on the slices } (t) \text{ of } q, k \text{ and } v \\
    z_i &= \big\Vert_t \textstyle\sum_r \beta^{(t)}_{ir} v^{(t)}_r \in \mathbb{R}^{w}
        && \text{(the pre-logits of label } i) \\
    y_i &= u_i \cdot z_i + c_i
        = \textstyle\sum_t \sum_r \beta^{(t)}_{ir}\, \big(u^{(t)}_i \cdot v^{(t)}_r\big) + c_i
        && \text{one weight vector } u_i \text{ and bias } c_i \text{ per label}

``W_q``, ``W_k``, ``W_v`` (with biases) are shared by all labels; the only per-label weights are
``u_i`` and ``c_i`` (``w + 1`` numbers). The queries ``q_i`` do not depend on the image. The logits are
computed by the right-hand form, whose largest tensors are ``[N, H, n, R]``: the ``[N, n, w]``
pre-logits exist only when asked for. Per image the head costs about ``n * R * (a + w)``
multiply-adds, linear in ``n`` with a small constant; nothing in it is ``n^2`` or ``n * B * d * w``.
"""

import math

import torch
import torch.nn as nn

__all__ = ["LabelWiseHead", "LabelWiseLinear"]


class LabelWiseLinear(nn.Module):
    r"""``y_i = u_i . z_i + c_i``: one weight vector and one bias per label, applied to that label's
    own representation.

    Args:
        in_features: width ``w`` of a label's representation.
        num_classes: number of labels ``n``.

    Shapes:
        - input: ``[N, n, w]``
        - output: ``[N, n]``
        - weight: ``[n, w]``, bias: ``[n]`` (initialised as ``nn.Linear(w, n)`` would be)
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != self.weight.shape:
            raise ValueError(
                f"LabelWiseLinear expects [N, {self.num_classes}, {self.in_features}], got {list(x.shape)}."
            )
        return (x * self.weight).sum(dim=-1) + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"


class LabelWiseHead(nn.Module):
    r"""Label-wise read-out and scoring (module docstring for the formulas).

    Args:
        row_dim: width of a row of ``M`` (``B * d``).
        label_dim: width of the label embeddings ``E_l`` (``d``).
        num_classes: number of labels ``n``; 0 builds the read-out without the per-label classifier
            (:meth:`forward` then returns the pre-logits).
        dim: width ``w`` of the label representations (MSRN uses ``hidden_dim``).
        attention_dim: width ``a`` of the read-out's queries and keys (MSRN uses ``d``).
        num_heads: attention heads ``H`` of the read-out; must divide ``dim`` and ``attention_dim``.
        drop_rate: dropout on the values ``v_r``.

    Shapes:
        - rows: ``[N, R, row_dim]`` (``M`` before the tanh)
        - label_embeddings: ``[n, label_dim]``
        - output: ``[N, n]`` logits, or ``[N, n, dim]`` pre-logits with ``pre_logits=True``
    """

    def __init__(
        self,
        row_dim: int,
        label_dim: int,
        num_classes: int,
        dim: int,
        attention_dim: int | None = None,
        num_heads: int = 8,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        attention_dim = attention_dim or dim
        if num_heads < 1 or dim % num_heads or attention_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must be >= 1 and divide dim={dim} and attention_dim={attention_dim}."
            )
        self.row_dim = row_dim
        self.label_dim = label_dim
        self.dim = dim
        self.attention_dim = attention_dim
        self.num_heads = num_heads
        self.query = nn.Linear(label_dim, attention_dim)
        self.key = nn.Linear(row_dim, attention_dim)
        self.value = nn.Linear(row_dim, dim)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = LabelWiseLinear(dim, num_classes) if num_classes > 0 else None

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes if self.classifier is not None else 0

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh per-label classifier for ``num_classes`` labels (0: none); the shared read-out keeps
        its weights."""
        reference = self.query.weight
        self.classifier = (
            LabelWiseLinear(self.dim, num_classes).to(device=reference.device, dtype=reference.dtype)
            if num_classes > 0
            else None
        )

    def read_out_weights(self, rows: torch.Tensor, label_embeddings: torch.Tensor) -> torch.Tensor:
        """``beta``: ``[N, H, n, R]``, each label's attention over the rows (sums to one over ``R``)."""
        self._check(rows, label_embeddings)
        return self._read_out_weights(torch.tanh(rows), label_embeddings.to(rows.dtype))

    def _read_out_weights(self, rows: torch.Tensor, label_embeddings: torch.Tensor) -> torch.Tensor:
        n, r = label_embeddings.shape[0], rows.shape[1]
        head_dim = self.attention_dim // self.num_heads
        queries = self.query(label_embeddings).view(n, self.num_heads, head_dim).transpose(0, 1)
        keys = self.key(rows).view(-1, r, self.num_heads, head_dim).permute(0, 2, 3, 1)
        scores = torch.matmul(queries.unsqueeze(0), keys) * (1.0 / math.sqrt(head_dim))  # [N, H, n, R]
        return torch.softmax(scores, dim=-1)

    def _check(self, rows: torch.Tensor, label_embeddings: torch.Tensor) -> None:
        if rows.dim() != 3 or rows.shape[2] != self.row_dim:
            raise ValueError(f"LabelWiseHead expects rows [N, R, {self.row_dim}], got {list(rows.shape)}.")
        if label_embeddings.dim() != 2 or label_embeddings.shape[1] != self.label_dim:
            raise ValueError(
                f"LabelWiseHead expects label embeddings [n, {self.label_dim}], got "
                f"{list(label_embeddings.shape)}."
            )
        if self.classifier is not None and label_embeddings.shape[0] != self.classifier.num_classes:
            raise ValueError(
                f"LabelWiseHead has a classifier for {self.classifier.num_classes} labels but got "
                f"{label_embeddings.shape[0]} label embeddings."
            )

    def forward(
        self, rows: torch.Tensor, label_embeddings: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        self._check(rows, label_embeddings)
        batch, r = rows.shape[:2]
        n = label_embeddings.shape[0]
        value_dim = self.dim // self.num_heads
        rows = torch.tanh(rows)
        weights = self._read_out_weights(rows, label_embeddings.to(rows.dtype))  # [N, H, n, R]
        values = self.drop(self.value(rows)).view(batch, r, self.num_heads, value_dim).transpose(1, 2)
        if pre_logits or self.classifier is None:
            return torch.matmul(weights, values).transpose(1, 2).reshape(batch, n, self.dim)
        # y_i = sum_t sum_r beta_ir (u_i . v_r) + c_i: [N, H, n, R] products instead of [N, n, w].
        u = self.classifier.weight.view(n, self.num_heads, value_dim).transpose(0, 1)  # [H, n, w / H]
        scores = torch.matmul(u.unsqueeze(0), values.transpose(-1, -2))  # [N, H, n, R]
        return (weights * scores).sum(dim=(1, 3)) + self.classifier.bias

    def extra_repr(self) -> str:
        return (
            f"row_dim={self.row_dim}, label_dim={self.label_dim}, dim={self.dim}, "
            f"attention_dim={self.attention_dim}, num_heads={self.num_heads}"
        )
