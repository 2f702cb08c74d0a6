"""The learning-rate schedule of the trainer, by epoch, and how it is rebuilt when a run is lengthened."""

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["LRSchedule"]


class LRSchedule:
    """Multiplier of the base learning rates at an epoch (0-based): linear warm-up over ``warmup``
    epochs, then a step decay (x ``gamma`` at each epoch of ``steps``) or a cosine decay.

    The cosine part runs from ``anchor = (epoch, multiplier)`` (by default ``(warmup, 1.0)``) down to
    zero at ``epochs``. :meth:`lengthened` moves the anchor to the last finished epoch, so a run whose
    ``epochs`` changes continues its decay from where it is: no epoch at lr 0, no rise.
    """

    def __init__(
        self,
        epochs: int,
        schedule: str,
        steps: Sequence[int] = (),
        gamma: float = 0.1,
        warmup: int = 0,
        anchor: Sequence[float] | None = None,
    ) -> None:
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}.")
        self.epochs, self.schedule, self.steps = epochs, schedule, list(steps)
        self.gamma, self.warmup = gamma, warmup
        self.anchor = (int(anchor[0]), float(anchor[1])) if anchor is not None else (warmup, 1.0)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        if self.schedule == "step":
            return self.gamma ** sum(epoch >= step for step in self.steps)
        start, value = self.anchor
        span = max(1, self.epochs - start)
        return value * 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / span))

    def lengthened(self, epochs: int, finished: int) -> "LRSchedule":
        """The schedule for a new total of ``epochs`` after ``finished`` epochs were trained with this one.

        Step decay goes on as it was. A cosine decay past its warm-up restarts its curve at the last
        finished epoch's multiplier and reaches zero at the new end (the new schedule describes the
        epochs from the last finished one on).
        """
        anchor = self.anchor
        if self.schedule == "cosine" and finished - 1 >= self.warmup:
            anchor = (finished - 1, self(finished - 1))
        return LRSchedule(epochs, self.schedule, self.steps, self.gamma, self.warmup, anchor)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "anchor": list(self.anchor)}
