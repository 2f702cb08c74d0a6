"""One training epoch and one evaluation pass (single process or ``torchrun``)."""

import contextlib
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from .._amp import AMP_MODES, autocast_context, check_amp
from ..targets import check_targets
from .distributed import DistributedContext, gather_predictions

__all__ = ["NonFiniteLossError", "AMP_MODES", "check_amp", "autocast_context", "train_one_epoch", "predict"]

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    context: DistributedContext,
    epoch: int,
    amp: str | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    accum_steps: int = 1,
    on_optimizer_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; returns ``{"loss", "images_per_s", "time_s", "steps"}``.

    Each optimizer step accumulates the gradients of ``accum_steps`` batches, each batch's loss
    divided by ``accum_steps`` (the last, shorter window of the epoch divides by its own length, so
    that it makes a whole step, as a last smaller batch would). Under DDP the batches that do not
    step skip the gradient all-reduce (``no_sync``). ``steps`` and ``max_steps`` count optimizer steps.
    ``on_optimizer_step()`` is called after each optimizer step (e.g. to update an EMA of the weights).

    ``loss`` is the mean over batches and processes. A NaN or infinite loss on any process raises
    :class:`NonFiniteLossError` on every process before the weights are touched.

    The loader yields ``(images, targets)`` pairs with targets of 1 / 0 / -1 (:mod:`msrn.targets`);
    ``criterion`` is called as ``criterion(logits, targets)`` and leaves the unknown (-1) entries out
    (:class:`msrn.MSRNLoss` does). A VOC training set has its "difficult" labels as 1, so they are
    trained as positives.
    """
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}.")
    model.train()
    total_loss, steps, images, batches = 0.0, 0, 0, 0
    # Batches this epoch trains on (the length is needed only to find its last, shorter window).
    num_batches = len(loader) if accum_steps > 1 else math.inf
    if max_steps is not None:
        num_batches = min(num_batches, max_steps * accum_steps)
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        disable=not (progress and context.is_main),
        leave=False,
        dynamic_ncols=True,
    )
    for images_batch, targets in bar:
        if batches >= num_batches:
            break
        window_start = batches - batches % accum_steps
        window = min(accum_steps, num_batches - window_start)
        steps_now = batches + 1 == window_start + window
        images_batch = images_batch.to(context.device, non_blocking=True)
        if channels_last:
            images_batch = images_batch.contiguous(memory_format=torch.channels_last)
        targets = targets.to(context.device, non_blocking=True)
        # A forward under DDP's no_sync skips the gradient all-reduce of its backward pass: only the
        # window's last batch, which makes the step, all-reduces the summed gradients.
        sync = contextlib.nullcontext() if steps_now or not hasattr(model, "no_sync") else model.no_sync()
        with sync, autocast_context(context.device, amp):
            logits = model(images_batch)
            loss = criterion(logits.float(), targets)
        value = float(loss.detach())
        if context.all_reduce_max(0.0 if math.isfinite(value) else 1.0) > 0:
            raise NonFiniteLossError(
                f"The training loss became non-finite ({value} on rank {context.rank}) at epoch {epoch}, "
                f"step {steps}. The weights were not updated by this step."
            )
        if batches == window_start:
            optimizer.zero_grad(set_to_none=True)
        if window > 1:
            loss = loss / window
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if steps_now:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            steps += 1
            if on_optimizer_step is not None:
                on_optimizer_step()
        total_loss += value
        batches += 1
        images += images_batch.shape[0]
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{total_loss / batches:.4f}", img_s=f"{images * context.world_size / elapsed:.1f}"
        )
    bar.close()
    elapsed = time.perf_counter() - start
    mean_loss = context.all_reduce_sum(total_loss) / max(1, context.all_reduce_sum(batches))
    return {
        "loss": mean_loss,
        "images_per_s": images * context.world_size / max(elapsed, 1e-9),
        "time_s": elapsed,
        "steps": steps,
    }


@torch.no_grad()
def predict(
    model: "nn.Module | Callable[[torch.Tensor], torch.Tensor]",
    loader: torch.utils.data.DataLoader,
    context: DistributedContext,
    length: int,
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (float32) and targets (int8: 1 / 0 / -1) ``[length, n]`` of the whole evaluation
    set, written into arrays of their final size as the batches come (at Open Images' test size,
    125,436 x 9,605, the two take 6 GB).

    ``loader`` must iterate a sampler that yields this process's share of ``range(length)`` without
    repeats (:class:`msrn.engine.EvalShardSampler`); the shards are gathered on every process and
    checked to cover each image exactly once. ``model`` may also be an inference backend of
    :mod:`msrn.backends` (any callable from images to logits).

    Raises:
        ValueError: a target value other than 1, 0 and -1 (:func:`msrn.targets.check_targets`).
        RuntimeError: the loader yields more or fewer images than its sampler has indices.
    """
    if isinstance(model, nn.Module):
        model.eval()
    indices = np.asarray(list(iter(loader.sampler)), dtype=np.int64)
    num_classes = loader.dataset.num_classes if hasattr(loader.dataset, "num_classes") else 0
    scores = targets = None
    filled = 0
    for images_batch, target in tqdm(
        loader, desc="eval", disable=not (progress and context.is_main), leave=False, dynamic_ncols=True
    ):
        images_batch = images_batch.to(context.device, non_blocking=True)
        if channels_last:
            images_batch = images_batch.contiguous(memory_format=torch.channels_last)
        with autocast_context(context.device, amp):
            logits = model(images_batch)
        if scores is None:
            num_classes = logits.shape[1]
            scores = np.empty((len(indices), num_classes), np.float32)
            targets = np.empty((len(indices), num_classes), np.int8)
        end = filled + len(logits)
        if end > len(indices):
            raise RuntimeError(
                f"The evaluation loader yielded more images than the {len(indices)} indices of its "
                f"sampler; give it a sampler that yields each index once (msrn.engine.EvalShardSampler)."
            )
        scores[filled:end] = torch.sigmoid(logits.float()).cpu().numpy()
        targets[filled:end] = check_targets(target.numpy())
        filled = end
    if filled != len(indices):
        raise RuntimeError(
            f"The evaluation loader yielded {filled} images for {len(indices)} indices; use drop_last=False."
        )
    if scores is None:
        scores, targets = np.zeros((0, num_classes), np.float32), np.zeros((0, num_classes), np.int8)
    return gather_predictions(context, indices, scores, targets, length=length)
