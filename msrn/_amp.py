"""Mixed precision (``amp``) modes shared by training, evaluation and the inference backends."""

import contextlib

import torch

__all__ = ["AMP_MODES", "check_amp", "autocast_context"]

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("none", *_AMP_DTYPES)


def check_amp(amp: str | None, device: torch.device | None = None) -> None:
    """Refuse an unknown ``amp`` mode, and fp16 on a ``device`` other than CUDA."""
    if amp is not None and amp not in AMP_MODES:
        raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {amp!r}.")
    if amp == "fp16" and device is not None and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use --amp bf16 on CPU.")


def autocast_context(device: torch.device, amp: str | None):
    """``torch.autocast`` for ``amp`` in ``{None, "none", "bf16", "fp16"}`` (fp16 only on CUDA)."""
    check_amp(amp, device)
    if amp in (None, "none"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])
