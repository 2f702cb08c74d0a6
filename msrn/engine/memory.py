"""Keep the memory a training process frees, so that the next step reuses it without page faults."""

import ctypes
import ctypes.util
import logging
import platform
import sys

__all__ = ["keep_freed_memory"]

_logger = logging.getLogger(__name__)

# mallopt() parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt() takes an int: the largest free block at the top of the heap that glibc keeps (2 GiB).
_MAX_TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in the process instead of returning it to the kernel.

    PyTorch takes every CPU tensor from ``malloc``. glibc serves each block above 32 MiB with a fresh
    ``mmap`` and unmaps it on ``free``, so a training step page-faults all of its large activations
    and gradients in again, page by page, every step (at 448 px and batch 8: about 0.7 M faults per
    step for ResNet-101, and another 1 GB for the gradient of MSRN's ``fc1``). In a virtual machine a
    page fault costs microseconds; together they were 6-28% of the CPU time of a step here.

    This sets ``M_MMAP_MAX = 0`` (every block comes from the heap) and raises ``M_TRIM_THRESHOLD``
    to 2 GiB (the heap is not shrunk after every step), for the whole process and for processes it
    forks afterwards (data-loading workers). Results do not change.

    The price is memory, and it is why this is opt-in: the resident size stays at its peak until
    the process exits, and glibc's heap can fragment. Small tensors get carved out of the holes
    that large ones leave, and a large block that no longer fits a hole extends the heap. Training
    steps of fixed shapes settle after a step or two, but e.g. the literal attention formula
    (``SemanticGuidedAttention(memory_efficient=False)``, 1 GB temporaries) grew by 1-2 GB per step.
    Watch the resident size of the first steps when you turn it on.

    Returns:
        ``True`` when the settings were applied, ``False`` where there is no glibc (macOS, Windows,
        musl), in which case nothing changes.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _MAX_TRIM_THRESHOLD))
    if not applied:
        _logger.warning(
            "malloc refused the settings of keep_freed_memory(); freed memory is returned as usual."
        )
    return applied
