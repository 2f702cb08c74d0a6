"""Optimizer parameter groups for fine-tuning MSRN (backbone at a lower learning rate)."""

from typing import Any

import torch.nn as nn

__all__ = ["param_groups"]


def param_groups(
    model: nn.Module, lr: float, backbone_lr_scale: float = 0.1, weight_decay: float = 1e-4
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into the pretrained trunk and the layers MSRN adds.

    The trunk trains at ``lr * backbone_lr_scale`` (the paper's recipe: 0.1x), the rest at ``lr``.
    Every group gets ``weight_decay``; parameters named by ``model.no_weight_decay()`` get none.

    Returns:
        A list of dicts ready for ``torch.optim.SGD(groups, ...)``; each carries a ``name``.
    """
    skip_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_trunk = name.startswith("backbone.trunk.")
        decay = 0.0 if name in skip_decay else weight_decay
        key = f"{'backbone' if in_trunk else 'msrn'}{'' if decay else '_no_decay'}"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "weight_decay": decay,
                "lr": lr * backbone_lr_scale if in_trunk else lr,
                "lr_scale": backbone_lr_scale if in_trunk else 1.0,
            },
        )
        group["params"].append(param)
    return list(groups.values())
