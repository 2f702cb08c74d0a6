"""Process-group set-up for ``torchrun`` and the gathering of evaluation results.

Training uses ``torch.utils.data.DistributedSampler`` (it pads the last batch by repeating images,
harmless for training). Evaluation must score every image exactly once, so it uses
:class:`EvalShardSampler` (rank ``r`` takes images ``r, r + K, r + 2K, ...``, no padding) and
:func:`gather_predictions` reassembles the shards in dataset order.
"""

import datetime
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "init_distributed",
    "resolve_device",
    "EvalShardSampler",
    "gather_predictions",
    "leave_process_group",
]

_logger = logging.getLogger(__name__)


@dataclass
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every process.

        DistributedDataParallel broadcasts buffers at the start of each forward, but the forward then
        updates them locally, so after the last training step the ranks disagree. Evaluation and the
        saved checkpoint must use one model: rank 0's.
        """
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a picklable object; ``value`` itself when not distributed)."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def all_reduce_max(self, value: float) -> float:
        """The largest ``value`` over all processes (the value itself when not distributed)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def all_reduce_sum(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())


def resolve_device(device: str | None = None) -> torch.device:
    """The torch device named by ``device``; ``None`` is CUDA when a GPU is visible, else the CPU.

    Raises:
        ValueError: ``device`` is not a device name, or names a GPU that is not there (CUDA without a
            visible GPU, a GPU index beyond the visible ones, MPS where it is unavailable).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {device!r} is not a torch device ({error}); use e.g. cpu or cuda:0."
        ) from None
    if resolved.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible == 0:
            raise ValueError(
                f"device {device!r} was requested but no CUDA GPU is visible "
                f"(torch.cuda.is_available() is False); use --device cpu."
            )
        if resolved.index is not None and resolved.index >= visible:
            raise ValueError(
                f"device {device!r} was requested but only {visible} CUDA GPU(s) are visible "
                f"(cuda:0 to cuda:{visible - 1})."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was requested but MPS is not available here; use --device cpu.")
    return resolved


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistributedContext:
    """Read ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the group.

    Without those variables this is a single process. ``device``: ``"cpu"``, ``"cuda"`` or ``None``
    (CUDA when available). The backend is ``nccl`` on CUDA and ``gloo`` on CPU; on CUDA each process
    takes GPU ``LOCAL_RANK``.
    """
    device_type = resolve_device(device).type
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device_type)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        _logger.info("Joined a %s process group: rank %d of %d", backend, rank, world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def leave_process_group() -> None:
    """Destroy the default process group, if one was joined.

    The GIL is released for a moment first. With torch 2.4's gloo backend, a worker thread may still
    be freeing the tensors of the last collective, which needs the GIL, while the group's destructor
    holds the GIL and waits for that thread: both processes of a refused ``torchrun`` start hung
    there in 2 of 8 tries.
    """
    if dist.is_initialized():
        time.sleep(0.05)
        dist.destroy_process_group()


class EvalShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world_size, ...`` of a data set of ``length``: every index goes to
    exactly one process, none is repeated (shards may differ in length by one)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def gather_predictions(
    context: DistributedContext,
    indices: np.ndarray,
    scores: np.ndarray,
    targets: np.ndarray,
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Collect every process's ``(indices [k], scores [k, n], targets [k, n])`` and return the full
    ``(scores, targets)`` in dataset order (on every process).

    Raises ``RuntimeError`` if an index of ``range(length)`` is missing or appears twice.
    """
    shards = [(indices, scores, targets)]
    if context.distributed:
        shards = [None] * context.world_size
        dist.all_gather_object(shards, (indices, scores, targets))
    all_indices = np.concatenate([s[0] for s in shards])
    counts = np.bincount(all_indices, minlength=length)
    if len(counts) != length or not (counts == 1).all():
        raise RuntimeError(
            f"Evaluation shards do not cover the {length} images exactly once: "
            f"{int((counts == 0).sum())} missing, {int((counts > 1).sum())} repeated."
        )
    if len(shards) == 1 and (all_indices == np.arange(length)).all():
        return scores, targets  # one process, in dataset order already: no copy
    gathered = []
    for part in (1, 2):
        whole = np.empty((length, *shards[0][part].shape[1:]), shards[0][part].dtype)
        for shard in shards:
            whole[shard[0]] = shard[part]
        gathered.append(whole)
    return tuple(gathered)
