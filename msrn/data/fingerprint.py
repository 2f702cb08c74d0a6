"""The identity of a data split, so that a run's figures can be tied to the data they were made on.

:func:`split_fingerprint` digests what decides a split's scores: its image files (names relative to
their common folder, sizes and modification times) and its labels. :func:`fingerprint_changes` says,
in words, what differs between two fingerprints. The files are not read, only listed (``os.stat``):
a fingerprint of COCO's 40,000 test images takes about a second.
"""

import hashlib
import os
from typing import Any

import numpy as np

__all__ = ["split_fingerprint", "fingerprint_changes"]


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def split_fingerprint(dataset: Any) -> dict[str, Any]:
    """``{"images", "names", "labels", "sizes", "times"}`` of a data set with ``image_paths``,
    ``classes``, ``targets`` and (optionally) ``difficult``, or instead of the last two the sparse rows
    of :class:`msrn.data.OpenImagesDataset` (``label_indptr``, ``label_indices``, ``label_states``:
    what its files say, whether unknown labels are scored as -1 or 0): the number of images and a
    SHA-256 of each of the other parts (strict JSON)."""
    paths = [os.path.abspath(path) for path in dataset.image_paths]
    root = os.path.commonpath([os.path.dirname(path) for path in paths]) if paths else ""
    stats = [os.stat(path) for path in paths]
    labels = ["\n".join(dataset.classes).encode()]
    if hasattr(dataset, "label_indptr"):  # labels kept sparse (Open Images): the rows of its files
        for array in (dataset.label_indptr, dataset.label_indices, dataset.label_states):
            labels.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    else:
        labels.append(np.ascontiguousarray(dataset.targets, dtype=np.int64).tobytes())
        difficult = getattr(dataset, "difficult", None)
        if difficult is not None:
            labels.append(np.ascontiguousarray(difficult, dtype=bool).tobytes())
    return {
        "images": len(paths),
        "names": _digest("\n".join(os.path.relpath(path, root) for path in paths).encode()),
        "labels": _digest(*labels),
        "sizes": _digest(np.array([s.st_size for s in stats], dtype=np.int64).tobytes()),
        "times": _digest(np.array([s.st_mtime_ns for s in stats], dtype=np.int64).tobytes()),
    }


_CHANGES = (
    ("names", "other image files"),
    ("labels", "other labels"),
    ("sizes", "image files of other sizes"),
    ("times", "image files written since (other file times)"),
)


def fingerprint_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs from ``recorded`` in ``current``, in words (empty when nothing does). A part
    missing from ``recorded`` is not compared."""
    if recorded.get("images") is not None and recorded["images"] != current["images"]:
        return [f"it had {recorded['images']} images, {current['images']} now"]
    return [words for key, words in _CHANGES if key in recorded and recorded[key] != current.get(key)]
