"""Warnings that change what the user gets (a label graph without edges, learnable label features
instead of word vectors, ``best/`` chosen on the test split, saved thresholds not applied, what the
data and split checks find): each goes to the log and through Python's ``warnings`` as an
:class:`MSRNWarning`, pointing at the user's line.

``msrn`` commands show the log line and leave the Python warning out (it says the same).
"""

import logging
import os
import sys
import warnings

import timm
import torch

__all__ = ["MSRNWarning", "warn"]


class MSRNWarning(UserWarning):
    """msrn did something other than what was asked for or what the paper does, and says so.

    Silence it with ``warnings.filterwarnings("ignore", category=msrn.MSRNWarning)``, or turn it into
    an error with ``"error"``. The same message also goes to the ``msrn`` logger at WARNING level.
    """


# Frames in these folders are library code: the warning points at the first frame outside them.
_LIBRARY_FOLDERS = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep
    for module in (sys.modules[__name__.rpartition(".")[0]], timm, torch)
)


def _user_stacklevel() -> int:
    """``stacklevel`` of the first caller of :func:`warn`'s caller outside msrn, timm and torch."""
    frame = sys._getframe(2)  # the caller of warn()
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY_FOLDERS):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 2


def warn(logger: logging.Logger, message: str) -> None:
    """Log ``message`` at WARNING on ``logger`` and issue it as an :class:`MSRNWarning` at the user's line."""
    logger.warning(message)
    warnings.warn(message, MSRNWarning, stacklevel=_user_stacklevel())
