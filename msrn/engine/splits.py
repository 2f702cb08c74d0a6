"""What a run was scored on: the fingerprints of its test and validation splits (``splits.json``).

A run records them when it starts (:func:`record_splits`). ``msrn evaluate RUN/best`` without
``--data`` scores the run's test split again only if it is still the same
(:func:`msrn.engine.evaluate_checkpoint` with ``fingerprint=``); ``--resume`` warns when a split
changed in the middle of the run (:func:`check_resumed_splits`).
"""

import logging
import os
import pathlib
from typing import Any

from .._io import atomic_write, read_json_file, to_json
from .._warnings import warn
from ..data.fingerprint import fingerprint_changes, split_fingerprint

__all__ = ["SPLITS_NAME", "record_splits", "recorded_splits", "check_resumed_splits"]

_logger = logging.getLogger(__name__)

SPLITS_NAME = "splits.json"
_MAX_SPLITS_BYTES = 2**20  # two fingerprints take about 700 bytes


def record_splits(folder: "os.PathLike[str] | str", test_set: Any, val_set: Any | None) -> None:
    """Write ``folder/splits.json``: ``{"test": fingerprint, "validation": fingerprint or null}``
    (:func:`msrn.data.fingerprint.split_fingerprint`)."""
    splits = {
        "test": split_fingerprint(test_set),
        "validation": split_fingerprint(val_set) if val_set is not None else None,
    }
    text = to_json(splits, indent=2) + "\n"
    atomic_write(pathlib.Path(folder) / SPLITS_NAME, lambda path: pathlib.Path(path).write_text(text))


def recorded_splits(folder: "os.PathLike[str] | str") -> dict[str, Any]:
    """The fingerprints a run recorded (empty for a run made before they were, or when damaged)."""
    path = pathlib.Path(folder) / SPLITS_NAME
    if not os.path.lexists(path):
        return {}
    advice = "delete it (the split is then not checked)"
    try:
        splits = read_json_file(path, limit=_MAX_SPLITS_BYTES, advice=advice)
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror or error}); {advice}.") from None
    if not isinstance(splits, dict) or not all(isinstance(v, (dict, type(None))) for v in splits.values()):
        raise ValueError(f"{path} is not a record of the run's splits; {advice}.")
    return splits


def check_resumed_splits(folder: pathlib.Path, test_set: Any, val_set: Any | None, epoch: int) -> None:
    """Warn when the test or validation split of a resumed run differs from the one it started with."""
    recorded = recorded_splits(folder)
    for name, dataset in (("test", test_set), ("validation", val_set)):
        if dataset is None or not recorded.get(name):
            continue
        changes = fingerprint_changes(recorded[name], split_fingerprint(dataset))
        if changes:
            warn(
                _logger,
                f"The {name} split differs from the one the run in {folder} started with: "
                f"{'; '.join(changes)}. Its figures up to epoch {epoch} and after are not comparable",
            )
