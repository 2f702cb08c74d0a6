"""Reading an Open Images image-level label file (``ImageID,Source,LabelName,Confidence``) into sparse
per-image label lists, fast and lean enough for the train file (about 9 M images, tens of millions of
rows; :func:`read_image_labels`).

The file is read in blocks of bytes. In a block without a ``"``, lines and fields are found with NumPy
on the raw bytes (:mod:`msrn.data._byte_csv`; the official files never quote); a block with a ``"``
goes through Python's ``csv`` module. Each row becomes one int64 key ``((image * n + label) << 1) |
confidence``; sorted, the keys group each image's labels, and the CSR arrays come from them. Nothing of
size ``images x labels`` is ever built.
"""

import csv
import io
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._byte_csv import WORD, WordLookup, byte_window, field_words, read_blocks, split_lines, words_of_bytes

__all__ = ["ImageLabels", "read_image_labels"]

_logger = logging.getLogger(__name__)

_COLUMNS = ("ImageID", "LabelName", "Confidence")
_BLOCK_BYTES = 32 << 20
_STEP = 1 << 22  # elements per step of the passes over all keys (bounds their temporaries)


class ImageLabels(NamedTuple):
    """The labels of one file as CSR rows: image ``s`` (``image_ids[s]``) has the labels
    ``indices[indptr[s]:indptr[s + 1]]`` (sorted), each with its ``states`` entry (1 positive, 0
    verified negative)."""

    image_ids: np.ndarray  # [N] bytes ("S"), sorted
    indptr: np.ndarray  # [N + 1] int64
    indices: np.ndarray  # [nnz] int32
    states: np.ndarray  # [nnz] int8
    rows: int  # data rows read
    other_rows: int  # rows whose label is not in the list (left out; their image is kept)
    conflicts: int  # (image, label) pairs listed both with confidence 1 and 0 (left out: unknown)


class _Rows(NamedTuple):
    lines: np.ndarray  # [m] line numbers in the file
    ids: np.ndarray  # [m, k] uint64 words of the ImageIDs
    labels: np.ndarray  # [m] label numbers, -1 for a label not listed
    states: np.ndarray  # [m] int64 0 / 1


def _as_bytes(words: np.ndarray) -> np.ndarray:
    """The ``S`` array of ``[m, k]`` uint64 words (inverse of :func:`words_of_bytes`)."""
    return np.ascontiguousarray(words).view(f"S{words.shape[1] * WORD}").reshape(len(words))


def _rows_fast(buf, size, columns, count, line, lookup: WordLookup, where) -> tuple[_Rows | None, int]:
    """The rows of a block found on its bytes (``None`` for a block with quotes), and its line count."""
    split = split_lines(buf, size, count, line, where)
    if split is None:
        return None, 0
    starts, ends, lines, commas, total = split
    field_starts = [starts] + [commas[:, k] + 1 for k in range(count - 1)]
    field_ends = [commas[:, k] for k in range(count - 1)] + [ends]
    window = byte_window(buf)
    (id_starts, name_starts, confidence_starts) = (field_starts[k] for k in columns)
    id_lengths, name_lengths, confidence_lengths = (field_ends[k] - field_starts[k] for k in columns)
    empty = np.flatnonzero(id_lengths == 0)
    if empty.size:
        raise ValueError(f"{where}, line {int(lines[empty[0]])}: the ImageID is empty.")
    ids = field_words(window, id_starts, id_lengths, -(-int(id_lengths.max(initial=1)) // WORD))
    labels = lookup(field_words(window, name_starts, name_lengths, lookup.words), name_lengths)
    states = buf[confidence_starts].astype(np.int64) - ord("0")
    odd = np.flatnonzero((confidence_lengths != 1) | (states < 0) | (states > 1))
    if odd.size:
        values = np.array([buf[confidence_starts[i] : field_ends[columns[2]][i]].tobytes() for i in odd])
        states[odd] = _confidence_states(values, lines[odd], where)
    return _Rows(lines, ids, labels, states), total


def _rows_csv(text: str, columns, count: int, first_line: int, lookup: WordLookup, where: str) -> _Rows:
    """As :func:`_rows_fast`, through the ``csv`` module (a block with quoted fields)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    lines, ids, names, confidences = [], [], [], []
    line = first_line
    for cells in reader:
        if any(cells):
            if len(cells) != count:
                raise ValueError(f"{where}, line {line}: expected {count} comma-separated columns.")
            if not cells[columns[0]]:
                raise ValueError(f"{where}, line {line}: the ImageID is empty.")
            lines.append(line)
            ids.append(cells[columns[0]].encode("utf-8"))
            names.append(cells[columns[1]].encode("utf-8"))
            confidences.append(cells[columns[2]].encode("utf-8"))
        line = first_line + reader.line_num
    lines = np.array(lines, dtype=np.int64)
    ids, names = np.array(ids, dtype=bytes), np.array(names, dtype=bytes)
    return _Rows(
        lines,
        words_of_bytes(ids, -(-ids.dtype.itemsize // WORD)),
        lookup(words_of_bytes(names, lookup.words), np.char.str_len(names)),
        _confidence_states(np.array(confidences, dtype=bytes), lines, where),
    )


def _confidence_states(confidences: np.ndarray, lines: np.ndarray, where: str) -> np.ndarray:
    """0 / 1 (int64) from Confidence values; "1.0" and "0.0" are fine, any other value is refused."""
    states = np.empty(len(confidences), dtype=np.int64)
    for value in np.unique(confidences):
        try:
            number = float(value.decode("utf-8", errors="replace"))
        except ValueError:
            number = None
        chosen = confidences == value
        if number not in (0.0, 1.0):
            raise ValueError(
                f"{where}, line {int(lines[np.flatnonzero(chosen)[0]])}: the Confidence column must be 0 "
                f"(verified absent) or 1 (present), got {value.decode('utf-8', errors='replace')!r}; a "
                f"machine-generated label file (scores between 0 and 1) is not read."
            )
        states[chosen] = int(number)
    return states


def _header_columns(header: str, where: str) -> tuple[tuple[int, int, int], int]:
    names = [cell.strip().strip('"') for cell in header.split(",")]
    if any(name not in names for name in _COLUMNS):
        raise ValueError(
            f"{where}: the first line must be the header ImageID,Source,LabelName,Confidence (an Open "
            f"Images image-level label file); got {header.strip()[:200]!r}."
        )
    return tuple(names.index(name) for name in _COLUMNS), len(names)


class _Keys:
    """The growing array of row keys, sorted as it grows when the file is sorted by ImageID: each
    block's keys are sorted but for those of its last image, which wait for the next block."""

    def __init__(self, capacity: int) -> None:
        self.array = np.empty(max(capacity, 1024), dtype=np.int64)
        self.size = 0
        self.waiting = np.zeros(0, dtype=np.int64)

    def add(self, keys: np.ndarray, last_image_first_key: int) -> None:
        keys = np.concatenate([self.waiting, keys]) if len(self.waiting) else keys
        later = keys >= last_image_first_key
        self.waiting = keys[later]
        self._append(np.sort(keys[~later]))

    def _append(self, keys: np.ndarray) -> None:
        if self.size + len(keys) > len(self.array):
            grown = np.empty(max(int(len(self.array) * 1.25), self.size + len(keys)), dtype=np.int64)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        self.array[self.size : self.size + len(keys)] = keys
        self.size += len(keys)

    def finish(self) -> np.ndarray:
        self._append(np.sort(self.waiting))
        return self.array[: self.size]


def read_image_labels(
    path: "os.PathLike[str] | str", labels: Sequence[str], block_bytes: int = _BLOCK_BYTES
) -> ImageLabels:
    """The rows of the label file ``path`` for ``labels`` (label names; a row of another label is left
    out, but its image is kept), as sparse per-image lists.

    An (image, label) pair listed more than once counts once; listed with both confidences, it is
    left out (unknown) and counted in ``conflicts``.

    Raises:
        ValueError: a wrong header, a row with another number of columns, an empty ImageID or a
            Confidence other than 0 / 1, naming the file and line.
    """
    where = f"Open Images label file {path}"
    lookup = WordLookup(labels)
    n = len(labels)
    run_ids, keys = [], None
    last_id, runs, rows, other_rows = None, 0, 0, 0
    with open(path, "rb") as handle:
        header = handle.readline()
        columns, count = _header_columns(header.decode("utf-8-sig", errors="replace"), where)
        line = 2
        for buf, size in read_blocks(handle, block_bytes):
            block, total = _rows_fast(buf, size, columns, count, line, lookup, where)
            if block is None:
                text = buf[:size].tobytes().decode("utf-8", errors="replace")
                block, total = _rows_csv(text, columns, count, line, lookup, where), text.count("\n")
            line += total
            if not len(block.lines):
                continue
            ids = block.ids
            new = np.empty(len(ids), dtype=bool)
            new[1:] = ids[1:, 0] != ids[:-1, 0]
            for column in range(1, ids.shape[1]):
                new[1:] |= ids[1:, column] != ids[:-1, column]
            new[0] = last_id is None or _as_bytes(ids[:1])[0] != last_id
            run = runs + np.cumsum(new) - 1
            run_ids.append(_as_bytes(ids[new]))
            runs += len(run_ids[-1])
            last_id = _as_bytes(ids[-1:])[0]
            known = block.labels >= 0
            if keys is None:  # room for the rows the file holds at this block's bytes per kept row
                keys = _Keys(int(os.path.getsize(path) / size * int(known.sum()) * 1.05))
            rows += len(ids)
            other_rows += int(len(ids) - known.sum())
            keys.add(
                ((run[known] * n + block.labels[known]) << 1) | block.states[known], ((runs - 1) * n) << 1
            )
    if not rows:
        raise ValueError(f"{where} has a header but no label rows.")
    keys = keys.finish()
    run_ids = np.concatenate(run_ids)
    if runs > 1 and not (run_ids[1:] > run_ids[:-1]).all():  # not sorted by ImageID: merge the runs
        image_ids, image_of_run = np.unique(run_ids, return_inverse=True)
        for begin in range(0, len(keys), _STEP):
            part = keys[begin : begin + _STEP]
            pair = part >> 1
            part[:] = ((image_of_run[pair // n] * n + pair % n) << 1) | (part & 1)
        keys.sort()
    else:
        image_ids = run_ids
    del run_ids
    keys, conflicts = _drop_repeats(keys)
    indptr, indices, states = _csr(keys, len(image_ids), n)
    if other_rows:
        _logger.info(
            "%s: %d of %d rows name labels outside the label list (left out)", where, other_rows, rows
        )
    if conflicts:
        _logger.warning(
            "%s: %d (image, label) pairs are listed both as present and absent; they are left out (unknown)",
            where,
            conflicts,
        )
    return ImageLabels(image_ids, indptr, indices, states, rows, other_rows, conflicts)


def _drop_repeats(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted ``keys`` with each (image, label) pair once; pairs listed with both states dropped."""
    repeat = np.empty(max(len(keys) - 1, 0), dtype=bool)
    for begin in range(0, len(repeat), _STEP):
        end = min(begin + _STEP, len(repeat))
        repeat[begin:end] = (keys[begin + 1 : end + 1] >> 1) == (keys[begin:end] >> 1)
    if not repeat.any():
        return keys, 0
    first = np.ones(len(keys), dtype=bool)
    first[1:] = ~repeat
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = ~repeat
    # Sorted keys put state 0 before state 1 within a pair: a pair is in conflict when its first and
    # last entries differ in state.
    conflict = (keys[first] & 1) != (keys[last] & 1)
    keep = first
    keep[np.flatnonzero(first)[conflict]] = False
    return keys[keep], int(conflict.sum())


def _csr(keys: np.ndarray, num_images: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, states)`` of sorted ``keys``."""
    indptr = np.searchsorted(keys, (np.arange(num_images + 1, dtype=np.int64) * n) << 1)
    indices = np.empty(len(keys), dtype=np.int32)
    states = np.empty(len(keys), dtype=np.int8)
    for begin in range(0, len(keys), _STEP):
        part = keys[begin : begin + _STEP]
        indices[begin : begin + len(part)] = (part >> 1) % n
        states[begin : begin + len(part)] = part & 1
    return indptr.astype(np.int64, copy=False), indices, states
