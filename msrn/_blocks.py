"""A large ``[N, n]`` array a block at a time, so that the temporaries of a computation over it stay
at a few MB instead of the array's size (Open Images' test split: 1.2 G entries)."""

from collections.abc import Iterator

BLOCK_ELEMENTS = 2**22


def index_blocks(count: int, item_size: int, elements: int = BLOCK_ELEMENTS) -> Iterator[slice]:
    """Consecutive slices covering ``range(count)``, each of as many items (rows, or columns) of
    ``item_size`` entries as fit in ``elements`` entries, at least one."""
    per_block = max(1, elements // max(1, item_size))
    for start in range(0, count, per_block):
        yield slice(start, start + per_block)
