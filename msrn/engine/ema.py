"""An exponential moving average of the weights during training (``--ema DECAY``), with timm's
:class:`timm.utils.ModelEmaV3`.

- Updated after every optimizer step (with gradient accumulation: once per ``K`` micro-batches).
- Everything floating in the state dict is averaged: parameters and the BatchNorm running statistics
  (timm's default), so the averaged weights are evaluated with statistics that followed them; integer
  buffers (``num_batches_tracked``) and the bool label graph are copied.
- The first update copies the weights. Warm-up (on by default, timm's ``use_warmup``): update
  ``t >= 2`` uses the decay ``min(DECAY, 1 - t ** (-2/3))`` (0.37 at the second update, 0.99 at the
  1000th), so the average follows the fast-changing early weights instead of keeping the first ones
  for thousands of steps; without warm-up every later update uses ``DECAY``.
- Its state (the averaged weights and the number of updates) is saved in ``train_state.pt``, so a
  resumed run continues it exactly.
"""

from typing import Any

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving average of ``model``'s weights with ``decay`` (see the module docstring).

    ``model`` must be the bare model (not a DDP or ``torch.compile`` wrapper); :attr:`module` is the
    averaged copy, always in eval mode, on the model's device.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"The EMA decay must be between 0 and 1 (exclusive, e.g. 0.9997), got {decay}.")
        self.decay, self.warmup = decay, warmup
        self._ema = ModelEmaV3(model, decay=decay, use_warmup=warmup)
        self.updates = 0

    @property
    def module(self) -> nn.Module:
        return self._ema.module

    def current_decay(self) -> float:
        """The decay the next update would use."""
        return self._ema.get_decay(self.updates + 1)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights (after an optimizer step)."""
        self.updates += 1
        self._ema.update(model, step=self.updates)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
