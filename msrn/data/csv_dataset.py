"""Multi-label data described by a CSV file (NUS-WIDE, Apparel, or a user's own images).

Two layouts, told apart by the header:

- list layout, header ``image,labels``: the labels of an image separated by ``;``; a label
  written ``-name`` is unknown for that image (partial labels); every other class is absent::

      image,labels
      img/0001.jpg,person;dog
      img/0002.jpg,            <- no label (an all-negative sample)
      img/0003.jpg,dog;-cat    <- dog present, cat unknown, person absent

- one-hot layout, header ``image,<class 1>,...,<class n>``, one column per class holding ``1``
  (present), ``0`` (absent), or ``?`` or nothing (unknown)::

      image,person,dog,cat
      img/0001.jpg,1,1,0
      img/0003.jpg,0,1,?

Unknown entries have target -1 (:data:`msrn.targets.UNKNOWN`): the loss and the metrics leave them
out, and the label graph counts only known entries (:mod:`msrn.targets`,
:func:`msrn.graph.label_graph_from_targets`). A label
both present and unknown in one row (``dog;-dog``), an unknown label that is not a class, a bare ``-``
and, in the list layout, class names starting with ``-`` are refused. A one-hot cell of ``-1`` is
refused with the way to convert the 1 / -1 / 0 (present / absent / unknown) convention. Names are
compared in Unicode NFC; in the list layout another minus sign (U+2212, an en dash) marks unknown like
``-``, ``?`` is refused, and an image on several rows is used once (same labels, with a warning) or
refused naming both lines (other labels): :mod:`msrn.data._csv_labels`.

Image paths are relative to ``root`` (default: the CSV file's folder) unless absolute.
The class list comes from ``classes=`` when given; otherwise from the header (one-hot layout) or the
sorted set of labels found in the file (list layout).

The file must be UTF-8 (Excel's "CSV UTF-8" with its byte-order mark is fine; a UTF-16 or Latin-1 file
is refused with the way to re-save it); Windows line ends are fine, and error messages give the
file's own line numbers. A labels cell that reads like several labels joined by spaces, commas or
``|`` (``person dog`` where ``person`` and ``dog`` are labels) is refused unless it is one of the
classes given explicitly. Labels are case-sensitive; classes that differ only in case are kept
apart, with a warning.
"""

import collections
import csv
import io
import logging
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from ..targets import UNKNOWN
from ._base import MultiLabelDataset, read_utf8_text
from ._csv_labels import (
    LABEL_SEPARATOR,
    MINUS_SIGNS,
    merge_duplicate_rows,
    normalise_name,
    refuse_other_separators,
    split_labels,
)
from .image import not_a_file

__all__ = ["CSVDataset"]

_logger = logging.getLogger(__name__)

UNKNOWN_CELLS = ("?", "")  # one-hot layout; the list layout writes "-cat" (_csv_labels.MINUS_SIGNS)

_Row = tuple[int, list[str]]  # (physical line number where the record starts, cells)


class CSVDataset(MultiLabelDataset):
    """A multi-label set from a CSV file (see the module docstring for the two layouts).

    Args:
        csv_file: the CSV file.
        root: folder that relative image paths start from (default: the CSV file's folder).
        classes: label names in target order; by default taken from the file.
        transform: applied to the RGB PIL image.
        skip_bad_images: leave out missing or undecodable images instead of raising.
    """

    def __init__(
        self,
        csv_file: "os.PathLike[str] | str",
        root: "os.PathLike[str] | str | None" = None,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        csv_file = pathlib.Path(csv_file).expanduser()
        if not csv_file.is_file():
            raise FileNotFoundError(not_a_file(csv_file, "CSV file"))
        if classes is not None:
            classes = [normalise_name(name) for name in classes]
            if len(set(classes)) != len(classes):
                raise ValueError(f"The given classes repeat a name (compared in Unicode NFC): {classes}.")
        self.root = pathlib.Path(root).expanduser() if root is not None else csv_file.parent
        rows = _read_rows(csv_file)
        if not rows:
            raise ValueError(
                f"CSV file {csv_file} is empty: expected a header 'image,labels' or "
                f"'image,<class 1>,...' and one row per image."
            )
        header_line, header = rows[0]
        header = [normalise_name(cell) for cell in header]
        body = rows[1:]
        if len(header) == 1 and any(mark in header[0] for mark in ";\t"):
            delimiter = ";" if ";" in header[0] else "tab"
            raise ValueError(
                f"CSV file {csv_file}, line {header_line}: the columns are separated by {delimiter!r}, not "
                f"by commas; save it with commas between columns (header 'image,labels' or "
                f"'image,<class 1>,...')."
            )
        if len(header) < 2 or header[0].lower() != "image":
            raise ValueError(
                f"CSV file {csv_file}, line {header_line}: the header must start with 'image', followed by "
                f"'labels' or by one column per class; got {header}."
            )
        if not body:
            raise ValueError(f"CSV file {csv_file} has a header but no image rows.")
        if len(header) == 2 and header[1].lower() == "labels":
            paths, targets, unknown, classes = self._parse_list(csv_file, body, classes)
        else:
            paths, targets, unknown, classes = self._parse_one_hot(csv_file, header, body, classes)
        _warn_case_duplicates(csv_file, classes)
        lines = [line for line, _ in body]
        kept = merge_duplicate_rows(csv_file, self.root, lines, paths, targets, unknown, classes)
        paths, targets, unknown = [paths[row] for row in kept], targets[kept], unknown[kept]
        if unknown.any():
            _logger.info(
                "CSV file %s: %d unknown label entries in %d of %d images (left out of the loss and metrics)",
                csv_file,
                int(unknown.sum()),
                int(unknown.any(axis=1).sum()),
                len(paths),
            )
        paths = [p if os.path.isabs(p) else str(self.root / p) for p in paths]
        targets = np.where(unknown, UNKNOWN, targets)
        super().__init__(paths, targets, classes, transform=transform, skip_bad_images=skip_bad_images)

    @staticmethod
    def _parse_list(csv_file: pathlib.Path, body: list[_Row], classes: Sequence[str] | None):
        paths, label_lists, unknown_lists = [], [], []
        for line, row in body:
            if len(row) > 2:
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: expected 2 columns (image, labels), got {len(row)}; "
                    f"separate labels with '{LABEL_SEPARATOR}' and quote fields that contain commas."
                )
            paths.append(row[0].strip())
            text = row[1] if len(row) > 1 else ""
            present, unknown = split_labels(csv_file, line, text)
            label_lists.append(present)
            unknown_lists.append(unknown)
        explicit = classes is not None
        if classes is None:
            classes = sorted({name for names in label_lists + unknown_lists for name in names})
            if not classes:
                raise ValueError(
                    f"CSV file {csv_file} names no label at all; pass the class list explicitly."
                )
        marked = [name for name in classes if name[:1] in set(MINUS_SIGNS)]
        if marked:
            raise ValueError(
                f"CSV file {csv_file}: class name {marked[0]!r} starts with '{marked[0][0]}', which the "
                f"labels column uses to mark an unknown label ('-cat' = cat unknown); "
                f"rename the class, or use the one-hot layout (one column per class)."
            )
        index = {name: i for i, name in enumerate(classes)}
        lines = [line for line, _ in body]
        refuse_other_separators(csv_file, lines, label_lists, index, explicit)
        refuse_other_separators(csv_file, lines, unknown_lists, index, explicit, "-")
        targets = np.zeros((len(paths), len(classes)), dtype=np.int64)
        unknown = np.zeros((len(paths), len(classes)), dtype=bool)
        for marks, lists in ((targets, label_lists), (unknown, unknown_lists)):
            for row, (names, (line, _)) in enumerate(zip(lists, body, strict=True)):
                for name in names:
                    if name not in index:
                        raise ValueError(
                            f"CSV file {csv_file}, line {line}: label {name!r} is not one of the classes: "
                            f"{', '.join(classes)}."
                        )
                    marks[row, index[name]] = 1
        return paths, targets, unknown, list(classes)

    @staticmethod
    def _parse_one_hot(
        csv_file: pathlib.Path, header: list[str], body: list[_Row], classes: Sequence[str] | None
    ):
        columns = header[1:]
        if len(set(columns)) != len(columns):
            raise ValueError(f"CSV file {csv_file}: the header repeats a class name: {columns}.")
        if classes is None:
            classes = columns
        elif set(classes) != set(columns):
            raise ValueError(
                f"CSV file {csv_file}: its class columns {sorted(columns)} differ from the given classes "
                f"{sorted(classes)}."
            )
        order = [columns.index(name) for name in classes]
        paths, targets = [], np.zeros((len(body), len(classes)), dtype=np.int64)
        unknown = np.zeros((len(body), len(classes)), dtype=bool)
        for row, (line, values) in enumerate(body):
            if len(values) != len(header):
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: expected {len(header)} columns, got {len(values)}."
                )
            cells = [values[1 + i].strip() for i in order]
            if "-1" in cells:
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: -1 is not a class value here; class columns hold "
                    f"1 (present), 0 (absent), or ? or nothing (unknown). A file in the 1 / -1 / 0 "
                    f"(present / absent / unknown) convention needs -1 written as 0 and 0 as ?."
                )
            if any(cell not in ("0", "1", *UNKNOWN_CELLS) for cell in cells):
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: class columns must hold 0 or 1 (absent / present), "
                    f"or ? or nothing (unknown), got {values[1:]}."
                )
            paths.append(values[0].strip())
            targets[row] = [cell == "1" for cell in cells]
            unknown[row] = [cell in UNKNOWN_CELLS for cell in cells]
        return paths, targets, unknown, list(classes)


def _read_rows(csv_file: pathlib.Path) -> list[_Row]:
    """The non-blank records of the file with the physical line each starts on (BOM and CRLF are fine)."""
    reader = csv.reader(io.StringIO(read_utf8_text(csv_file), newline=""))
    rows: list[_Row] = []
    line = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as error:
        raise ValueError(f"CSV file {csv_file}, line {line}: {error}.") from None
    return rows


def _warn_case_duplicates(csv_file: pathlib.Path, classes: Sequence[str]) -> None:
    spellings = collections.defaultdict(list)
    for name in classes:
        spellings[name.casefold()].append(name)
    clashes = [names for names in spellings.values() if len(names) > 1]
    if clashes:
        _logger.warning(
            "CSV file %s: classes that differ only in case are kept apart: %s. Check that this "
            "is meant (labels are case-sensitive).",
            csv_file,
            "; ".join(" / ".join(repr(n) for n in names) for names in clashes),
        )
