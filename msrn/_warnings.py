"""Warnings that change what the user gets: raised through Python's ``warnings`` and logged.

``msrn`` commands show the log line and leave the Python warning out (it says the same).
"""

import logging
import warnings

__all__ = ["MSRNWarning", "warn"]


class MSRNWarning(UserWarning):
    """A warning of msrn about its inputs (data, splits, settings); also in the log."""


def warn(logger: logging.Logger, message: str) -> None:
    """Log ``message`` at WARNING on ``logger`` and raise it as an :class:`MSRNWarning`."""
    logger.warning(message)
    warnings.warn(message, MSRNWarning, stacklevel=3)
