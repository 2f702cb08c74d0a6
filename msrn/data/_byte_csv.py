"""Splitting large, simple CSV files with NumPy on the raw bytes: blocks of whole lines, the fields of
each line, fields as uint64 words, and a hash table from words to numbers.

It serves files of short unquoted fields (ids, codes, numbers) with millions of lines, such as Open
Images' label files, where Python's ``csv`` module spends about a microsecond per row. A block that
holds a quote is left to the caller (:func:`split_lines` returns ``None``), which reads it with ``csv``.
"""

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["WORD", "read_blocks", "split_lines", "byte_window", "field_words", "words_of_bytes", "WordLookup"]

WORD = 8  # bytes of a field are handled as little-endian uint64 words
_PAD = 2 * WORD  # zero bytes after a block, so that a word read near its end stays inside the buffer
_MASKS = np.array([(1 << (8 * size)) - 1 for size in range(WORD + 1)], dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_NEWLINE, _COMMA, _QUOTE, _RETURN = 10, 44, 34, 13


def read_blocks(handle, block_bytes: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(buf, size)`` blocks of whole lines of the binary file ``handle``: ``buf[:size]`` ends with a
    line end (one is added to a last line without it) and is followed by zero bytes."""
    carry = np.zeros(0, dtype=np.uint8)
    while True:
        buf = np.zeros(len(carry) + block_bytes + _PAD, dtype=np.uint8)
        buf[: len(carry)] = carry
        got = handle.readinto(memoryview(buf)[len(carry) : len(carry) + block_bytes])
        size = len(carry) + got
        if not got:
            if size:
                if buf[size - 1] != _NEWLINE:
                    buf[size] = _NEWLINE
                    size += 1
                yield buf, size
            return
        tail = max(size - (1 << 16), 0)
        ends = np.flatnonzero(buf[tail:size] == _NEWLINE)
        if not ends.size and tail:
            tail, ends = 0, np.flatnonzero(buf[:size] == _NEWLINE)
        cut = tail + int(ends[-1]) + 1 if ends.size else 0
        carry = buf[cut:size].copy()
        if cut:
            buf[cut : cut + _PAD] = 0
            yield buf, cut


def split_lines(buf: np.ndarray, size: int, count: int, first_line: int, where: str):
    """The lines of ``buf[:size]`` that are not blank: ``(starts, ends, line numbers, commas [m, count -
    1], lines in the block)``, ``ends`` without a ``\\r`` before the line end. ``None`` when the block
    holds a quote (read it with the ``csv`` module instead).

    Raises:
        ValueError: a line with another number of commas, naming the file (``where``) and line.
    """
    candidates = np.flatnonzero(buf[:size] <= _COMMA)  # line ends, commas, and a few rarer bytes
    kinds = buf[candidates]
    if (kinds == _QUOTE).any():
        return None
    separators = candidates
    if not ((kinds == _NEWLINE) | (kinds == _COMMA)).all():  # \r, spaces, tabs...
        separators = candidates[(kinds == _NEWLINE) | (kinds == _COMMA)]
        kinds = buf[separators]
    newline = kinds == _NEWLINE
    total = int(newline.sum())
    grid = separators.reshape(-1, count) if len(separators) == total * count else None
    if grid is not None and newline[count - 1 :: count].all() and total == len(grid):
        ends = grid[:, -1]
        starts = np.concatenate([[0], ends[:-1] + 1])
        lines = np.arange(first_line, first_line + total)
        commas = grid[:, :-1]
    else:
        ends, commas = separators[newline], separators[~newline]
        starts = np.concatenate([[0], ends[:-1] + 1])
        lines = np.arange(first_line, first_line + total)
        blank = (ends == starts) | ((ends == starts + 1) & (buf[np.maximum(ends - 1, 0)] == _RETURN))
        starts, ends, lines = starts[~blank], ends[~blank], lines[~blank]
        first = np.searchsorted(commas, starts)
        wrong = np.flatnonzero(np.searchsorted(commas, ends) - first != count - 1)
        if wrong.size:
            raise ValueError(
                f"{where}, line {int(lines[wrong[0]])}: expected {count} comma-separated columns."
            )
        commas = commas[first[:, None] + np.arange(count - 1)]
    ends = ends - (buf[np.maximum(ends - 1, 0)] == _RETURN)
    return starts, ends, lines, commas, total


def byte_window(buf: np.ndarray) -> np.ndarray:
    """``window[p]``: the little-endian uint64 of the 8 bytes at ``buf[p]`` (a view, no copy)."""
    rows = np.lib.stride_tricks.as_strided(buf, shape=(len(buf) - WORD + 1, WORD), strides=(1, 1))
    return rows.view("<u8")[:, 0]


def field_words(window: np.ndarray, starts: np.ndarray, lengths: np.ndarray, words: int) -> np.ndarray:
    """``[m, words]`` uint64: the bytes ``[starts, starts + lengths)`` of each field, cut to
    ``words * 8`` bytes and zero-padded (equal fields give equal words)."""
    out = np.empty((len(starts), words), dtype=np.uint64)
    shortest = int(lengths.min(initial=0))
    for column in range(words):
        out[:, column] = window[starts + column * WORD]
        if shortest < (column + 1) * WORD:
            out[:, column] &= _MASKS[np.clip(lengths - column * WORD, 0, WORD)]
    return out


def words_of_bytes(values: np.ndarray, words: int) -> np.ndarray:
    """``[m, words]`` uint64 of an ``S`` array (cut or zero-padded to ``words * 8`` bytes), as
    :func:`field_words` gives them."""
    return np.ascontiguousarray(values.astype(f"S{words * WORD}")).view("<u8").reshape(len(values), words)


def _hash(words: np.ndarray) -> np.ndarray:
    result = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        result *= _MIX
        result += words[:, column]
    return result * _MIX


class WordLookup:
    """Name -> its number in ``names`` for whole arrays of names given as words: an open-addressing hash
    table (a probe or two per name, where a binary search takes 14 for 10,000 names)."""

    def __init__(self, names: Sequence[str]) -> None:
        encoded = np.array([name.encode("utf-8") for name in names], dtype=bytes)
        self.width = max(encoded.dtype.itemsize, 1)  # bytes of the longest name
        self.words = -(-self.width // WORD)
        self.table = words_of_bytes(encoded, self.words)
        bits = max(4, int(np.ceil(np.log2(4 * max(len(names), 1)))))
        self._shift, self._mask = np.uint64(64 - bits), (1 << bits) - 1
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        self._numbers = np.full(1 << bits, -1, dtype=np.int64)
        keys, slots = self._hash_and_slot(self.table)
        if len(np.unique(keys)) != len(np.unique(encoded)):
            raise ValueError("Two of the names hash alike; please report this with the list of names.")
        for number, (key, slot) in enumerate(zip(keys, slots, strict=True)):
            slot = int(slot)
            while (
                self._numbers[slot] >= 0 and not (self.table[self._numbers[slot]] == self.table[number]).all()
            ):
                slot = (slot + 1) & self._mask
            if self._numbers[slot] < 0:  # a repeated name keeps its first number
                self._keys[slot], self._numbers[slot] = key, number

    def _hash_and_slot(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = _hash(words)
        return key, (key >> self._shift).astype(np.int64)

    def __call__(self, words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The number of each name (``[m, self.words]`` words, byte lengths), -1 for a name not listed."""
        result = np.full(len(words), -1, dtype=np.int64)
        key, slot = self._hash_and_slot(words)
        pending = np.arange(len(words))
        while len(pending):
            number = self._numbers[slot]
            hit = (self._keys[slot] == key) & (number >= 0)
            result[pending[hit]] = number[hit]
            probe = ~hit & (number >= 0)  # the slot holds another name: try the next one
            pending, key, slot = pending[probe], key[probe], (slot[probe] + 1) & self._mask
        found = np.flatnonzero(result >= 0)
        same = lengths[found] <= self.width
        for column in range(self.words):  # a hash match is a match only when the words are the same
            same &= self.table[result[found], column] == words[found, column]
        result[found[~same]] = -1
        return result
