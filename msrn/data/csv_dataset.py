"""Multi-label data described by a CSV file (NUS-WIDE, Apparel, or a user's own images).

Two layouts, told apart by the header:

- list layout, header ``image,labels``: the labels of an image separated by ``;``::

      image,labels
      img/0001.jpg,person;dog
      img/0002.jpg,            <- no label (an all-negative sample)

- one-hot layout, header ``image,<class 1>,...,<class n>``, one 0/1 column per class::

      image,person,dog,cat
      img/0001.jpg,1,1,0

Image paths are relative to ``root`` (default: the CSV file's folder) unless absolute.
The class list comes from ``classes=`` when given; otherwise from the header (one-hot layout) or the
sorted set of labels found in the file (list layout).
"""
import csv
import os
import pathlib
from typing import Callable, List, Optional, Sequence

import numpy as np

from ._base import MultiLabelDataset

__all__ = ["CSVDataset"]

LABEL_SEPARATOR = ";"


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
        root: "Optional[os.PathLike[str] | str]" = None,
        classes: Optional[Sequence[str]] = None,
        transform: Optional[Callable] = None,
        skip_bad_images: bool = False,
    ) -> None:
        csv_file = pathlib.Path(csv_file).expanduser()
        if not csv_file.is_file():
            raise FileNotFoundError(f"CSV file not found: {csv_file}")
        self.root = pathlib.Path(root).expanduser() if root is not None else csv_file.parent
        with open(csv_file, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
        if not rows:
            raise ValueError(f"CSV file {csv_file} is empty: expected a header 'image,labels' or "
                             f"'image,<class 1>,...' and one row per image.")
        header = [cell.strip() for cell in rows[0]]
        body = rows[1:]
        if not body:
            raise ValueError(f"CSV file {csv_file} has a header but no image rows.")
        if len(header) < 2 or header[0].lower() != "image":
            raise ValueError(
                f"CSV file {csv_file}: the header must start with 'image', followed by 'labels' or by one "
                f"column per class; got {header}."
            )
        if len(header) == 2 and header[1].lower() == "labels":
            paths, targets, classes = self._parse_list(csv_file, body, classes)
        else:
            paths, targets, classes = self._parse_one_hot(csv_file, header, body, classes)
        paths = [p if os.path.isabs(p) else str(self.root / p) for p in paths]
        super().__init__(paths, targets, None, classes, transform=transform, skip_bad_images=skip_bad_images)

    @staticmethod
    def _parse_list(csv_file: pathlib.Path, body: List[List[str]], classes: Optional[Sequence[str]]):
        paths, label_lists = [], []
        for line, row in enumerate(body, start=2):
            if len(row) > 2:
                raise ValueError(
                    f"CSV file {csv_file}, line {line}: expected 2 columns (image, labels), got {len(row)}; separate "
                    f"labels with '{LABEL_SEPARATOR}' and quote fields that contain commas."
                )
            paths.append(row[0].strip())
            text = row[1] if len(row) > 1 else ""
            label_lists.append([name.strip() for name in text.split(LABEL_SEPARATOR) if name.strip()])
        if classes is None:
            classes = sorted({name for names in label_lists for name in names})
            if not classes:
                raise ValueError(f"CSV file {csv_file} names no label at all; pass the class list explicitly.")
        index = {name: i for i, name in enumerate(classes)}
        targets = np.zeros((len(paths), len(classes)), dtype=np.int64)
        for row, (names, line) in enumerate(zip(label_lists, range(2, len(paths) + 2))):
            for name in names:
                if name not in index:
                    raise ValueError(
                        f"CSV file {csv_file}, line {line}: unknown label {name!r}; known classes: {', '.join(classes)}."
                    )
                targets[row, index[name]] = 1
        return paths, targets, list(classes)

    @staticmethod
    def _parse_one_hot(csv_file: pathlib.Path, header: List[str], body: List[List[str]],
                       classes: Optional[Sequence[str]]):
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
        for row, values in enumerate(body):
            line = row + 2
            if len(values) != len(header):
                raise ValueError(f"CSV file {csv_file}, line {line}: expected {len(header)} columns, got {len(values)}.")
            cells = [cell.strip() for cell in values[1:]]
            if any(cell not in ("0", "1") for cell in cells):
                raise ValueError(f"CSV file {csv_file}, line {line}: class columns must hold 0 or 1, got {cells}.")
            paths.append(values[0].strip())
            targets[row] = np.array([int(cells[i]) for i in order])
        return paths, targets, list(classes)
