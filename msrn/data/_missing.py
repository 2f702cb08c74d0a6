"""Images that a data set's lists name but that are not on disk: count, report, leave out or refuse."""

import logging
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["drop_missing_images", "report_missing_images"]

_logger = logging.getLogger(__name__)


def drop_missing_images(
    paths: Sequence[str], targets: np.ndarray, skip: bool, what: str, hint: str = ""
) -> tuple[list[str], np.ndarray, list[str]]:
    """``(kept paths, their targets, missing paths)``.

    Missing images are always counted in a log warning. Unless ``skip``, any missing image is a
    ``FileNotFoundError`` naming how many, the first one and how to leave them out.
    ``what`` names the list in messages (e.g. ``"NUS-WIDE train"``); ``hint`` is appended to the error.
    """
    present = np.fromiter((os.path.isfile(path) for path in paths), dtype=bool, count=len(paths))
    missing = [path for path, found in zip(paths, present, strict=True) if not found]
    if not missing:
        return list(paths), targets, []
    report_missing_images(what, len(missing), len(paths), missing[0], skip, hint)
    return [path for path, found in zip(paths, present, strict=True) if found], targets[present], missing


def report_missing_images(
    what: str, missing: int, total: int, first: str, skip: bool, hint: str = ""
) -> None:
    """Log that ``missing`` of ``total`` listed images (the first: ``first``) are not on disk, and
    unless ``skip`` raise the ``FileNotFoundError`` of :func:`drop_missing_images`."""
    _logger.warning(
        "%s: %d of %d listed images are not on disk%s (first: %s)",
        what,
        missing,
        total,
        "; leaving them out" if skip else "",
        first,
    )
    if not skip:
        raise FileNotFoundError(
            f"{what}: {missing} of {total} listed images are not on disk "
            f"(first: {first}).{hint} Pass skip_missing_images=True (--skip-missing-images) "
            f"to leave them out."
        )
