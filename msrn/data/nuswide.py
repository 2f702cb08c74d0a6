"""NUS-WIDE (81 concepts) read from its official download layout or from the authors' CSV.

Official layout (the split the paper follows: 161,789 training and 107,859 test images)::

    <root>/ImageList/TrainImagelist.txt        one image per line, e.g. actor\\0001_2124494179.jpg
                                                (a C:\\ImageData\\Flickr\\ prefix is dropped)
    <root>/ImageList/TestImagelist.txt
    <root>/Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt   one 0/1 per line, aligned with
    <root>/Groundtruth/TrainTestLabels/Labels_<concept>_Test.txt    the image list
    <root>/Concepts81.txt                       optional (also looked for in ConceptsList/)
    <root>/Flickr/<folder>/<image>.jpg          the images (``image_dir=`` elsewhere)

The authors' CSV (``csv_file=``): one row per image with the image path, a Python-style list of its
label names and a split name::

    image,labels,split
    0001_2124494179.jpg,"['clouds', 'sky']",train

A header row and a leading index column (as pandas writes one) are allowed.

Labels are matched by name, so the targets follow the label order of the built-in ``nuswide``
label set (:func:`msrn.labels.load`) whatever the order of the files. Many of the Flickr images can
no longer be downloaded: missing images are counted and logged, and are an error unless
``skip_missing_images=True`` leaves them out (``missing_images`` lists them).
"""

import ast
import csv
import io
import os
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from .. import labels as label_sets
from ._base import MultiLabelDataset, read_utf8_text
from ._missing import drop_missing_images

__all__ = ["NUSWIDEDataset"]

_SPLIT_FILES = {"train": "Train", "test": "Test"}
_LABEL_FILE = re.compile(r"^Labels_(.+)_(Train|Test)\.txt$")
_MISSING_HINT = " Many NUS-WIDE Flickr images can no longer be downloaded."


def _read_lines(path: pathlib.Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]


def _read_binary_column(path: pathlib.Path, expected: int) -> np.ndarray:
    """The 0/1 values of a ``Labels_<concept>_<Split>.txt`` file (one per line)."""
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    digits = (raw == ord("0")) | (raw == ord("1"))
    blank = np.isin(raw, np.frombuffer(b" \t\r\n", dtype=np.uint8))
    if not (digits | blank).all() or digits.sum() != expected:
        raise ValueError(
            f"Label file {path} must hold one 0 or 1 per line for each of the {expected} images of its "
            f"image list; it holds {len(_read_lines(path))} lines."
        )
    return (raw[digits] - ord("0")).astype(np.int64)


def _official_concepts(root: pathlib.Path, label_dir: pathlib.Path, suffix: str) -> list[str]:
    for candidate in (root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt"):
        if candidate.is_file():
            return _read_lines(candidate)
    found = sorted(
        match.group(1)
        for match in map(_LABEL_FILE.match, os.listdir(label_dir))
        if match and match.group(2) == suffix
    )
    if not found:
        raise FileNotFoundError(f"No Labels_<concept>_{suffix}.txt files in {label_dir}.")
    return found


def _read_official(
    root: pathlib.Path, split: str, classes: Sequence[str], image_dir: pathlib.Path
) -> tuple[list[str], np.ndarray]:
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test' for the official NUS-WIDE layout, got {split!r}.")
    suffix = _SPLIT_FILES[split]
    image_list = root / "ImageList" / f"{suffix}Imagelist.txt"
    label_dir = root / "Groundtruth" / "TrainTestLabels"
    if not image_list.is_file() or not label_dir.is_dir():
        raise FileNotFoundError(
            f"No NUS-WIDE tree under {root}: expected {image_list} and "
            f"{label_dir}/Labels_<concept>_{suffix}.txt (pass the folder that holds ImageList/ and "
            f"Groundtruth/, or csv_file= for the authors' CSV)."
        )
    entries = _read_lines(image_list)
    concepts = _official_concepts(root, label_dir, suffix)
    unknown = [name for name in classes if name not in concepts]
    if unknown:
        raise ValueError(
            f"{root}: no NUS-WIDE concept named {unknown} (its concepts: {', '.join(concepts)})."
        )
    targets = np.zeros((len(entries), len(classes)), dtype=np.int64)
    for column, name in enumerate(classes):
        label_file = label_dir / f"Labels_{name}_{suffix}.txt"
        if not label_file.is_file():
            raise FileNotFoundError(f"Label file not found: {label_file} (concept {name!r}).")
        targets[:, column] = _read_binary_column(label_file, len(entries))
    return [str(image_dir / _relative_image_path(entry)) for entry in entries], targets


def _relative_image_path(entry: str) -> str:
    """``actor\\0001_2124494179.jpg`` (or with a ``C:\\ImageData\\Flickr\\`` prefix) -> ``actor/0001_...``."""
    parts = [part for part in entry.replace("\\", "/").split("/") if part]
    if "Flickr" in parts:
        parts = parts[len(parts) - parts[::-1].index("Flickr") :]
    return "/".join(parts)


def _parse_label_list(text: str, where: str) -> list[str]:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ValueError(
            f"{where}: the labels must be a Python-style list of names like ['clouds', 'sky'], got {text!r}."
        )
    return list(value)


def _read_authors_csv(
    csv_file: pathlib.Path, split: str, classes: Sequence[str], image_dir: pathlib.Path
) -> tuple[list[str], np.ndarray]:
    if not csv_file.is_file():
        raise FileNotFoundError(f"CSV file not found: {csv_file}")
    with io.StringIO(read_utf8_text(csv_file), newline="") as handle:
        rows = [
            (line, row) for line, row in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in row)
        ]
    if rows and len(rows[0][1]) >= 2 and not rows[0][1][-2].strip().startswith(("[", "(")):
        rows = rows[1:]  # a header row
    index = {name: i for i, name in enumerate(classes)}
    paths, label_rows, splits_seen = [], [], set()
    for line, row in rows:
        where = f"CSV file {csv_file}, line {line}"
        if len(row) < 3:
            raise ValueError(f"{where}: expected the columns image, labels, split; got {len(row)} column(s).")
        image, label_text, row_split = (cell.strip() for cell in row[-3:])
        splits_seen.add(row_split)
        if row_split != split:
            continue
        names = _parse_label_list(label_text, where)
        unknown = [name for name in names if name not in index]
        if unknown:
            raise ValueError(f"{where}: unknown label(s) {unknown}; known: {', '.join(classes)}.")
        paths.append(image if os.path.isabs(image) else str(image_dir / image))
        label_rows.append([index[name] for name in names])
    if not paths:
        raise ValueError(
            f"CSV file {csv_file} has no row of split {split!r}; its splits: {sorted(splits_seen)}."
        )
    targets = np.zeros((len(paths), len(classes)), dtype=np.int64)
    for row, columns in enumerate(label_rows):
        targets[row, columns] = 1
    return paths, targets


class NUSWIDEDataset(MultiLabelDataset):
    """NUS-WIDE as a multi-label classification set (see the module docstring for the layouts).

    Args:
        root: the NUS-WIDE folder (holding ``ImageList/`` and ``Groundtruth/``); with ``csv_file``,
            the folder that the CSV's relative image paths start from.
        split: ``"train"`` or ``"test"`` (official layout); with ``csv_file``, a value of its split column.
        transform: applied to the RGB PIL image.
        classes: label names in target order (default: the built-in ``nuswide`` order).
        csv_file: read the authors' CSV instead of the official layout.
        image_dir: folder of the images (default ``<root>/Flickr``; with ``csv_file``, ``root``).
        skip_missing_images: leave out listed images that are not on disk (always counted in the log).
        skip_bad_images: also decode every image and leave out unreadable ones (implies
            ``skip_missing_images``).

    Attributes:
        missing_images: paths of listed images that were not on disk (left out).
    """

    def __init__(
        self,
        root: "os.PathLike[str] | str",
        split: str = "train",
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
        csv_file: "os.PathLike[str] | str | None" = None,
        image_dir: "os.PathLike[str] | str | None" = None,
        skip_missing_images: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        self.root = pathlib.Path(root).expanduser()
        self.split = split
        classes = list(classes) if classes is not None else list(label_sets.load("nuswide").names)
        if csv_file is not None:
            images = pathlib.Path(image_dir).expanduser() if image_dir is not None else self.root
            paths, targets = _read_authors_csv(pathlib.Path(csv_file).expanduser(), split, classes, images)
        else:
            images = pathlib.Path(image_dir).expanduser() if image_dir is not None else self.root / "Flickr"
            paths, targets = _read_official(self.root, split, classes, images)
        paths, targets, self.missing_images = drop_missing_images(
            paths, targets, skip_missing_images or skip_bad_images, f"NUS-WIDE {split}", _MISSING_HINT
        )
        super().__init__(paths, targets, classes, transform=transform, skip_bad_images=skip_bad_images)
