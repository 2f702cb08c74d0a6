"""Keep the memory a training process frees, so that the next step reuses it without page faults."""

import ctypes
import ctypes.util
import logging
import platform
import sys

__all__ = ["keep_freed_memory", "preloaded_allocator"]

# Shared libraries that replace malloc when preloaded, by the name their file starts with.
_ALLOCATORS = {"libjemalloc": "jemalloc", "libtcmalloc": "tcmalloc", "libmimalloc": "mimalloc"}

_logger = logging.getLogger(__name__)

# mallopt() parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt() takes an int: the largest free block at the top of the heap that glibc keeps (2 GiB).
_MAX_TRIM_THRESHOLD = 2**31 - 1


def preloaded_allocator() -> str | None:
    """``"jemalloc"``, ``"tcmalloc"`` or ``"mimalloc"`` when that allocator is loaded into this
    process (as ``LD_PRELOAD`` does), else ``None``; read from ``/proc/self/maps`` (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit("/", 1)[-1]
                for prefix, allocator in _ALLOCATORS.items():
                    if name.startswith(prefix):
                        return allocator
    except OSError:
        pass
    return None


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

    ``msrn train`` (the trainer, unless ``keep_freed_memory=False``), ``msrn predict`` and ``msrn
    evaluate`` call it by default (``--no-keep-freed-memory`` opts out). The price is memory: the
    resident size stays at its peak until the process exits, and glibc's heap can fragment. Small
    tensors get carved out of the holes that large ones leave, and a large block that no longer
    fits a hole extends the heap. Training steps of fixed shapes settle after a step or two
    (benchmarks/bench_memory.py follows the resident size over hundreds of steps), but e.g. the
    literal attention formula (``SemanticGuidedAttention(memory_efficient=False)``, 1 GB
    temporaries) grew by 1-2 GB per step.

    A process that runs another allocator (jemalloc or tcmalloc through ``LD_PRELOAD``) is left
    alone: those keep freed memory in size classes of their own, and glibc's settings would not
    apply to them.

    Returns:
        ``True`` when the settings were applied, ``False`` where there is no glibc (macOS, Windows,
        musl) or another allocator serves ``malloc``, in which case nothing changes.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    other = preloaded_allocator()
    if other is not None:
        _logger.info("malloc is %s's (LD_PRELOAD): glibc's settings are left as they are.", other)
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
