"""Training objective of MSRN: ``L1 + lambda * L2`` (paper eq. 1 and 6)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MSRNLoss"]


class MSRNLoss(nn.Module):
    r"""Multi-label BCE on the logits plus the model's weighted compactness loss.

    .. math::
        \mathcal{L} = \frac{1}{Nn}\sum_{s,i} \mathrm{BCE}\big(\sigma(\hat y_{s,i}), y_{s,i}\big)
            + \lambda\, \mathcal{L}_2

    The first term is eq. 1 averaged like ``nn.MultiLabelSoftMarginLoss`` (mean over labels, then
    over the batch); ``lambda * L2`` comes from :meth:`msrn.models.MSRN.compactness_loss`, with the
    model's ``compactness_weight`` unless ``compactness_weight`` is given here.

    Args:
        model: the MSRN model whose compactness loss is added (``None``: BCE only).
        compactness_weight: overrides the model's lambda.

    Shapes:
        - logits: ``[N, n]``; targets: ``[N, n]`` with values in ``{0, 1}`` (floats or ints or bools)
        - output: scalar
    """

    def __init__(self, model: nn.Module | None = None, compactness_weight: float | None = None) -> None:
        super().__init__()
        # Not registered as a submodule: the loss must not appear in (or duplicate) the model's state.
        self._model = [model] if model is not None else []
        self.compactness_weight = compactness_weight

    @property
    def model(self) -> nn.Module | None:
        return self._model[0] if self._model else None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape != targets.shape:
            raise ValueError(
                f"MSRNLoss: targets {list(targets.shape)} must have the logits' shape {list(logits.shape)} "
                f"([batch, num_classes], 1 = label present, 0 = absent)."
            )
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        model = self.model
        if model is None:
            return loss
        if self.compactness_weight is None:
            return loss + model.compactness_loss(weighted=True).to(loss.dtype)
        return loss + self.compactness_weight * model.compactness_loss(weighted=False).to(loss.dtype)
