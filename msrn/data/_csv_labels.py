"""How :class:`msrn.data.CSVDataset` reads label names and rows (the rules of docs/training.md,
"Partial labels"):

- names are compared in Unicode NFC: ``café`` typed as one code point or as ``e`` + accent is one
  class (:func:`normalise_name`);
- in the list layout a label starting with ``-`` or another minus sign (U+2212 minus, en dash, ...)
  is unknown for the image (:data:`MINUS_SIGNS`); ``?`` is refused there (it marks unknown only in
  the one-hot layout);
- a labels cell that splits, at spaces, commas or ``|``, into labels, or into parts one of which
  starts with a minus, was written with the wrong separator and is refused
  (:func:`refuse_other_separators`);
- an image listed on several rows: with the same labels it is used once, with a warning; with other
  labels the file is refused, naming both lines (:func:`merge_duplicate_rows`).
"""

import logging
import os
import pathlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from .._warnings import warn

__all__ = [
    "LABEL_SEPARATOR",
    "MINUS_SIGNS",
    "normalise_name",
    "split_labels",
    "refuse_other_separators",
    "merge_duplicate_rows",
]

_logger = logging.getLogger(__name__)

LABEL_SEPARATOR = ";"
# "-" and what word processors and keyboards put in its place: hyphen, non-breaking hyphen, figure
# dash, en dash, em dash, minus sign, small and full-width hyphen-minus.
MINUS_SIGNS = "-\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d"
_OTHER_SEPARATORS = re.compile(r"[\s,|]+")  # what people put between labels instead of ";"


def normalise_name(name: str) -> str:
    """``name`` stripped and in Unicode NFC, the form in which label names are compared."""
    return unicodedata.normalize("NFC", name.strip())


def split_labels(csv_file: pathlib.Path, line: int, text: str) -> tuple[list[str], list[str]]:
    """``(present, unknown)`` label names of a list-layout labels cell (``-name`` marks an unknown
    label, written with any of :data:`MINUS_SIGNS`)."""
    present, unknown = [], []
    for item in (normalise_name(item) for item in text.split(LABEL_SEPARATOR)):
        if not item:
            continue
        if item.startswith("?"):
            raise ValueError(
                f"CSV file {csv_file}, line {line}: {item!r} in the labels cell: '?' is not a label; the "
                f"list layout marks an unknown label with '-' before its name (e.g. '-cat'), and every "
                f"label not named is absent ('?' marks unknown only in the one-hot layout)."
            )
        if item[0] not in MINUS_SIGNS:
            present.append(item)
            continue
        name = normalise_name(item[1:])
        if not name:
            raise ValueError(
                f"CSV file {csv_file}, line {line}: a bare '-' in the labels cell; write '-name' to mark the "
                f"label name unknown."
            )
        unknown.append(name)
    both = sorted(set(present) & set(unknown))
    if both:
        raise ValueError(
            f"CSV file {csv_file}, line {line}: label {both[0]!r} is both present and unknown "
            f"({both[0]};-{both[0]}); keep one of the two."
        )
    return present, unknown


def refuse_other_separators(
    csv_file: pathlib.Path,
    lines: Sequence[int],
    label_lists: list[list[str]],
    index: dict,
    explicit: bool,
    prefix: str = "",
) -> None:
    """A label that splits, at spaces / commas / pipes, into other labels (``person dog``), or into
    parts one of which starts with a minus (``person|-dog``, ``-person -dog``), is a labels cell
    written with the wrong separator: refuse it, showing the right one, unless it is one of the
    classes given explicitly (e.g. COCO's 'hot dog'). ``prefix``: how the names were marked in the
    cell (``-`` for unknown labels)."""
    for line, names in zip(lines, label_lists, strict=True):
        for name in names:
            if explicit and name in index:
                continue
            parts = [part for part in _OTHER_SEPARATORS.split(name) if part]
            if len(parts) < 2:
                continue
            marked = [len(part) > 1 and part[0] in MINUS_SIGNS for part in parts]
            bare = [part[1:] if mark else part for part, mark in zip(parts, marked, strict=True)]
            if any(marked) or all(part in index for part in bare):
                fixed = LABEL_SEPARATOR.join(
                    ("-" if mark else prefix) + part for part, mark in zip(bare, marked, strict=True)
                )
                shown = prefix + name
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: the labels cell {shown!r} looks like several labels "
                    f"separated by {_separator_shown(name)}; separate labels with '{LABEL_SEPARATOR}', e.g. "
                    f"{fixed!r} (or, if {name!r} really is one class, pass the class list explicitly)."
                )


def _separator_shown(text: str) -> str:
    for mark, shown in ((",", "commas"), ("|", "'|'")):
        if mark in text:
            return shown
    return "spaces"


def _cell(classes: Sequence[str], targets: np.ndarray, unknown: np.ndarray) -> str:
    """A row's labels as a list-layout cell: ``dog;-cat``."""
    names = [name for name, t, u in zip(classes, targets, unknown, strict=True) if t and not u]
    names += [f"-{name}" for name, u in zip(classes, unknown, strict=True) if u]
    return LABEL_SEPARATOR.join(names) or "no label"


def merge_duplicate_rows(
    csv_file: pathlib.Path,
    root: pathlib.Path,
    lines: Sequence[int],
    paths: list[str],
    targets: np.ndarray,
    unknown: np.ndarray,
    classes: Sequence[str],
) -> np.ndarray:
    """Indices of the rows to keep: an image listed again with the same labels is used once (with a
    warning); listed again with other labels, the file is refused naming both lines. Paths are the
    same image when they name the same file from ``root`` (``img/a.jpg`` and ``./img/a.jpg``)."""
    first_row: dict[str, int] = {}
    repeated: list[tuple[int, int]] = []
    for row, path in enumerate(paths):
        key = os.path.normpath(os.path.join(root, path))
        if key not in first_row:
            first_row[key] = row
            continue
        earlier = first_row[key]
        if (targets[row] != targets[earlier]).any() or (unknown[row] != unknown[earlier]).any():
            raise ValueError(
                f"CSV file {csv_file}, lines {lines[earlier]} and {lines[row]} give the image {path} other "
                f"labels ({_cell(classes, targets[earlier], unknown[earlier])} / "
                f"{_cell(classes, targets[row], unknown[row])}); keep one of the two rows."
            )
        repeated.append((earlier, row))
    if repeated:
        earlier, row = repeated[0]
        warn(
            _logger,
            f"CSV file {csv_file}: {len(repeated)} row(s) repeat an earlier row's image with the same labels "
            f"(first: {paths[row]}, lines {lines[earlier]} and {lines[row]}); each image is used once",
        )
    return np.array(sorted(first_row.values()), dtype=np.int64)
