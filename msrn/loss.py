"""Training objective of MSRN: ``L1 + lambda * L2`` (paper eq. 1 and 6), with a choice of ``L1``."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .targets import known_mask

__all__ = ["MSRNLoss", "LOSSES"]

LOSSES = ("bce", "asl", "focal")


class MSRNLoss(nn.Module):
    r"""A multi-label classification loss on the logits plus the model's weighted compactness loss.

    .. math::
        \mathcal{L} = \frac{1}{|K|}\sum_{(s,i) \in K} \ell(\hat y_{s,i}, y_{s,i}) + \lambda\, \mathcal{L}_2,
        \qquad K = \{(s, i) : y_{s,i} \ge 0 \text{ and not } \mathrm{ignore}_{s,i}\}

    The first term is the mean of the element-wise loss ``l`` over the kept entries ``K`` of the
    ``[N, n]`` batch (image ``s``, label ``i``): one sum over all kept entries divided by their count,
    so an image with more known labels weighs more. Targets follow :mod:`msrn.targets`: 1 present,
    0 absent, -1 unknown; unknown entries (any target < 0) are left out by themselves, so
    ``criterion(logits, targets)`` is right for every ``msrn.data`` data set. ``ignore`` can leave
    out more entries. When every entry is known and ``loss="bce"``, this is the paper's eq. 1
    averaged as ``nn.MultiLabelSoftMarginLoss`` does (mean over labels, then over the batch). When
    every entry is left out the first term is 0 (and carries no gradient: left-out entries never
    get one). ``lambda * L2`` comes from :meth:`msrn.models.MSRN.compactness_loss`, with
    the model's ``compactness_weight`` unless ``compactness_weight`` is given here; it is added
    whatever ``loss`` is.

    The element-wise losses, with ``p = sigmoid(logit)`` and a known target ``y`` in ``{0, 1}``:

    - ``"bce"`` (the paper): ``-y log p - (1 - y) log(1 - p)``.
    - ``"asl"``, asymmetric loss (Ridnik et al., ICCV 2021): ``-y (1 - p)^gamma_pos log p
      - (1 - y) p_m^gamma_neg log(1 - p_m)`` with the shifted probability
      ``p_m = max(p - clip, 0)``: easy negatives are down-weighted more than positives, and
      negatives with ``p <= clip`` are dropped. timm's ``AsymmetricLossMultiLabel`` computes the same
      elements (it sums them instead of averaging and has no ``ignore``).
    - ``"focal"`` (Lin et al., ICCV 2017): ``-alpha_t (1 - p_t)^gamma log p_t`` with ``p_t = p`` for
      ``y = 1`` and ``1 - p`` for ``y = 0``; ``alpha_t = alpha`` for positives and ``1 - alpha`` for
      negatives, or 1 when ``focal_alpha`` is None (``torchvision.ops.sigmoid_focal_loss``'s
      elements).

    ``log p`` and ``log(1 - p)`` are computed as log-sigmoids in float32 (half-precision logits are
    upcast), so large logits give neither ``log 0`` nor NaN. Gradients flow through the focusing
    weights too, as in timm and torchvision.

    Args:
        model: the MSRN model whose compactness loss is added (``None``: the classification loss only).
        compactness_weight: overrides the model's lambda.
        loss: ``"bce"`` (default, the paper), ``"asl"`` or ``"focal"``.
        asl_gamma_neg: ASL's focusing exponent of negatives (4).
        asl_gamma_pos: ASL's focusing exponent of positives (1).
        asl_clip: ASL's probability margin of negatives, in ``[0, 1)`` (0.05; 0 turns it off).
        focal_gamma: the focal loss's exponent (2).
        focal_alpha: the focal loss's weight of positives, in ``[0, 1]`` (None: no weighting; Lin et al.
            use 0.25 for detection).

    Shapes:
        - logits: ``[N, n]`` (any float dtype: bf16 / fp16 logits are upcast to float32)
        - targets: ``[N, n]`` with values in ``{1, 0, -1}`` (floats or ints or bools; -1: unknown,
          left out)
        - ignore: optional bool ``[N, n]``, True for further entries to leave out (targets < 0
          are left out without it)
        - output: scalar
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        compactness_weight: float | None = None,
        loss: str = "bce",
        asl_gamma_neg: float = 4.0,
        asl_gamma_pos: float = 1.0,
        asl_clip: float = 0.05,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}.")
        if asl_gamma_neg < 0 or asl_gamma_pos < 0 or focal_gamma < 0:
            raise ValueError(
                f"the focusing exponents must be >= 0, got asl_gamma_neg={asl_gamma_neg}, "
                f"asl_gamma_pos={asl_gamma_pos}, focal_gamma={focal_gamma}."
            )
        if not 0.0 <= asl_clip < 1.0:
            raise ValueError(f"asl_clip must be in [0, 1) (0 turns the clipping off), got {asl_clip}.")
        if focal_alpha is not None and not 0.0 <= focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1] or None (no weighting), got {focal_alpha}.")
        # Not registered as a submodule: the loss must not appear in (or duplicate) the model's state.
        self._model = [model] if model is not None else []
        self.compactness_weight = compactness_weight
        self.loss = loss
        self.asl_gamma_neg, self.asl_gamma_pos, self.asl_clip = asl_gamma_neg, asl_gamma_pos, asl_clip
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha

    @property
    def model(self) -> nn.Module | None:
        return self._model[0] if self._model else None

    def extra_repr(self) -> str:
        if self.loss == "asl":
            gammas = f"gamma_neg={self.asl_gamma_neg}, gamma_pos={self.asl_gamma_pos}"
            return f"loss=asl, {gammas}, clip={self.asl_clip}"
        if self.loss == "focal":
            return f"loss=focal, gamma={self.focal_gamma}, alpha={self.focal_alpha}"
        return "loss=bce"

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The classification loss of each entry, float32 ``[N, n]`` (see the class docstring); an
        unknown target (< 0) is computed as 0 here (:meth:`forward` leaves it out)."""
        x, y = logits.float(), targets.float().clamp(min=0)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(x, y, reduction="none")
        log_p, log_not_p = F.logsigmoid(x), F.logsigmoid(-x)
        p = torch.sigmoid(x)
        if self.loss == "asl":
            if self.asl_clip > 0:
                p_negative = (p - self.asl_clip).clamp(min=0)
                log_not_p = torch.log1p(-p_negative)  # 1 - p_negative >= clip > 0
            else:
                p_negative = p
            positive = (1 - p).pow(self.asl_gamma_pos) * log_p
            negative = p_negative.pow(self.asl_gamma_neg) * log_not_p
            return -(y * positive + (1 - y) * negative)
        p_true = y * p + (1 - y) * (1 - p)
        loss = -(y * log_p + (1 - y) * log_not_p) * (1 - p_true).pow(self.focal_gamma)
        if self.focal_alpha is not None:
            loss = (y * self.focal_alpha + (1 - y) * (1 - self.focal_alpha)) * loss
        return loss

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.shape != targets.shape:
            raise ValueError(
                f"MSRNLoss: targets {list(targets.shape)} must have the logits' shape {list(logits.shape)} "
                f"([batch, num_classes], 1 = label present, 0 = absent, -1 = unknown)."
            )
        elements = self.elementwise(logits, targets)
        keep = known_mask(targets.to(elements.device))
        if ignore is not None:
            if ignore.shape != logits.shape:
                raise ValueError(
                    f"MSRNLoss: ignore {list(ignore.shape)} must have the logits' shape "
                    f"{list(logits.shape)} (True = leave the entry out of the loss)."
                )
            keep = keep & ~ignore.to(device=elements.device, dtype=torch.bool)
        # where(), not a product: an inf at a left-out entry must not turn the sum into NaN
        kept = torch.where(keep, elements, torch.zeros((), dtype=elements.dtype, device=elements.device))
        loss = kept.sum() / keep.sum().clamp(min=1)
        model = self.model
        if model is None:
            return loss
        if self.compactness_weight is None:
            return loss + model.compactness_loss(weighted=True).to(loss.dtype)
        return loss + self.compactness_weight * model.compactness_loss(weighted=False).to(loss.dtype)
