"""Classifier over the concatenated semantic representations (paper section 3.3, last paragraph)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SemanticHead"]


class SemanticHead(nn.Module):
    r"""``y = fc_2(LeakyReLU(fc_1(tanh(M))))`` over the flattened semantic representations.

    ``M = [O || Q]`` has ``num_rows = n + m`` rows (labels, then groups) of width ``B * d`` (branches
    concatenated on channels, shallowest first). It is flattened row-major, so entry ``(k, b, c)`` lands
    at index ``k * B * d + b * d + c``.

    Args:
        num_rows: rows of ``M`` (``n + m``).
        row_dim: width of a row (``B * d``).
        num_classes: number of labels ``n``.
        hidden_dim: output width of ``fc_1`` (2048 in the paper).
        negative_slope: LeakyReLU slope (0.01, the authors' value).
        drop_rate: dropout before ``fc_2`` (0 in the paper).

    Shapes:
        - input: ``[N, num_rows, row_dim]``
        - output: ``[N, num_classes]`` (or ``[N, hidden_dim]`` with ``pre_logits=True``)
    """

    def __init__(
        self,
        num_rows: int,
        row_dim: int,
        num_classes: int,
        hidden_dim: int = 2048,
        negative_slope: float = 0.01,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_rows = num_rows
        self.row_dim = row_dim
        self.negative_slope = negative_slope
        self.fc1 = nn.Linear(num_rows * row_dim, hidden_dim)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, representations: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.tanh(representations).flatten(1)
        x = F.leaky_relu(self.fc1(x), self.negative_slope)
        x = self.drop(x)
        return x if pre_logits else self.fc2(x)
