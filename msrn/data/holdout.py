"""A validation split held out of the training images: by fraction (:func:`stratified_holdout`) or
by a file listing the images (:func:`read_holdout_file`).

The held-out images are then taken out of the training set with
:meth:`msrn.data.MultiLabelDataset.subset`: they are not trained on, do not count in the label graph,
and are read with the evaluation transform.
"""

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from ._base import read_utf8_text

__all__ = ["stratified_holdout", "read_holdout_file"]


def stratified_holdout(
    targets: np.ndarray, fraction: float, seed: int = 0, ignore: np.ndarray | None = None
) -> np.ndarray:
    """Sorted indices of about ``fraction`` of the images, stratified over the labels.

    Iterative stratification (Sechidis et al., 2011): labels are served from the rarest up; each image
    of the label being served goes to the part (validation or training) that still wants the most
    images of that label, ties to the part that wants the most images in all, then by the seeded
    order. A label with ``k`` positives thus gets about ``fraction * k`` of them held out, and a rare
    label is not left without any in either part by chance. Images without a positive label fill the
    parts last. The result depends only on ``targets``, ``ignore``, ``fraction`` and ``seed``.

    Args:
        targets: ``[N, n]`` training labels, 1 / 0 / -1 (:mod:`msrn.targets`); only the 1 entries
            count as positives.
        fraction: in ``(0, 1)``; ``round(fraction * N)`` images are held out (at least 1, at most N - 1).
        seed: seed of the order among equal choices.
        ignore: optional ``[N, n]`` bool of further entries that do not count as positives (e.g. a VOC
            training set's ``difficult``, positive there but unknown once held out for validation).
    """
    targets = np.asarray(targets) > 0
    if targets.ndim != 2:
        raise ValueError(f"targets must be an [N, n] matrix, got shape {list(targets.shape)}.")
    if ignore is not None:
        targets = targets & ~np.asarray(ignore, dtype=bool)
    num_images = len(targets)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The validation fraction must be between 0 and 1 (exclusive), got {fraction}.")
    if num_images < 2:
        raise ValueError(f"A validation split needs at least 2 training images, got {num_images}.")
    size = min(max(round(fraction * num_images), 1), num_images - 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_images)  # the seeded order: who goes first among equal choices
    wanted = np.array([size, num_images - size], dtype=np.float64)  # images each part still wants
    share = np.array([size / num_images, 1 - size / num_images])
    wanted_per_label = share[:, None] * targets.sum(axis=0)[None, :].astype(np.float64)  # [2, n]
    part = np.full(num_images, -1)
    remaining = targets[order].copy()  # positives of the images not yet placed, in the seeded order
    while remaining.any():
        counts = remaining.sum(axis=0)
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for position in np.nonzero(remaining[:, label])[0]:
            image = order[position]
            choice = _choose_part(wanted_per_label[:, label], wanted)
            part[image] = choice
            wanted[choice] -= 1
            wanted_per_label[choice] -= targets[image]
            remaining[position] = False
    unplaced = order[part[order] < 0]
    held = int(max(wanted[0], 0))
    part[unplaced[:held]] = 0
    part[unplaced[held:]] = 1
    return np.sort(np.nonzero(part == 0)[0])


def _choose_part(wanted_of_label: np.ndarray, wanted: np.ndarray) -> int:
    """0 (validation) or 1 (training): the part that wants the label more, then more images in all."""
    if wanted[0] <= 0:
        return 1
    if wanted[1] <= 0:
        return 0
    if wanted_of_label[0] != wanted_of_label[1]:
        return int(np.argmax(wanted_of_label))
    return 0 if wanted[0] > wanted[1] else 1


def read_holdout_file(path: "os.PathLike[str] | str", image_paths: Sequence[str]) -> np.ndarray:
    """Sorted indices into ``image_paths`` of the images listed in the validation-split file ``path``.

    The file is UTF-8 text with one image per line, named as the training set lists it: its path, any
    trailing part of it (``JPEGImages/000005.jpg``, ``000005.jpg``), or its file name without the
    extension (a VOC or COCO image id such as ``000005``). Blank lines and lines starting with ``#`` are
    skipped. An absolute path must be the image's own path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file and line, for an entry that matches no training image, one that
            matches several, an image listed twice, a file without entries, or one that lists every
            training image.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Validation split file {path} not found: give a text file with one training image per line."
        )
    lookup = _image_keys(image_paths)
    chosen: dict[int, int] = {}
    for line_number, line in enumerate(read_utf8_text(path).splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        key = os.path.abspath(entry) if os.path.isabs(entry) else _normalise(entry)
        matches = lookup.get(key, [])
        if not matches:
            raise ValueError(
                f"Validation split file {path}, line {line_number}: {entry!r} is not an image of the "
                f"training split (give its path, file name or id as the training data lists it, e.g. "
                f"{pathlib.PurePath(image_paths[0]).name!r})."
            )
        if len(matches) > 1:
            names = ", ".join(image_paths[index] for index in matches[:2])
            raise ValueError(
                f"Validation split file {path}, line {line_number}: {entry!r} matches {len(matches)} "
                f"training images ({names}, ...); give more of its path."
            )
        if matches[0] in chosen:
            raise ValueError(
                f"Validation split file {path}, line {line_number}: {entry!r} names the image already "
                f"listed on line {chosen[matches[0]]}; list each image once."
            )
        chosen[matches[0]] = line_number
    if not chosen:
        raise ValueError(f"Validation split file {path} lists no image (one image path or id per line).")
    if len(chosen) == len(image_paths):
        raise ValueError(
            f"Validation split file {path} lists all {len(image_paths)} training images: nothing would be "
            f"left to train on."
        )
    return np.array(sorted(chosen), dtype=np.int64)


def _normalise(name: str) -> str:
    return pathlib.PurePath(os.path.normpath(name.replace("\\", "/"))).as_posix()


def _image_keys(image_paths: Sequence[str]) -> dict[str, list[int]]:
    """Every name an entry may use for each image: absolute path, trailing parts, file stem."""
    lookup: dict[str, list[int]] = {}
    for index, image_path in enumerate(image_paths):
        parts = pathlib.PurePath(_normalise(str(image_path))).parts
        keys = {os.path.abspath(image_path), pathlib.PurePath(parts[-1]).stem}
        keys.update(pathlib.PurePath(*parts[start:]).as_posix() for start in range(len(parts)))
        for key in keys:
            lookup.setdefault(key, []).append(index)
    return lookup
