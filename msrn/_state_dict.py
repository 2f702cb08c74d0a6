"""Messages about weights that do not fit a model: counts and the first few names, never the whole
list (a ResNet-101 alone has over 300 tensors). Shared by the loaders, the converter and the trainer."""

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["NAMES_SHOWN", "summarize_names", "key_mismatch", "shorten"]

# How many names a message lists before it only counts.
NAMES_SHOWN = 3


def summarize_names(names: Iterable[str], noun: str = "tensor", limit: int = NAMES_SHOWN) -> str:
    """``"2 tensors (a, b)"`` or ``"120 tensors (first: a, b, c)"``: a count and the first ``limit``
    names (only the count when ``limit`` is 0), so that a message stays short however many there are."""
    names = list(names)
    counted = f"{len(names)} {noun}{'' if len(names) == 1 else 's'}"
    if len(names) <= limit:
        return f"{counted} ({', '.join(names)})"
    return f"{counted} (first: {', '.join(names[:limit])})" if limit > 0 else counted


def key_mismatch(
    expected: Mapping[str, Any],
    given: Mapping[str, Any],
    shapes: bool = True,
    source: str = "the file",
    target: str = "the model",
) -> str:
    """How the tensors ``given`` (e.g. a file's state dict) differ from those ``expected`` (e.g.
    ``model.state_dict()``): missing names, extra names and, with ``shapes``, other shapes, each as
    a count and the first few (:func:`summarize_names`; the shapes only as a count when names differ
    too, as then the weights are of another architecture); ``""`` when they fit."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = (
        [
            f"{key}: {source.removeprefix('the ')} {list(given[key].shape)}, "
            f"{target.removeprefix('the ')} {list(expected[key].shape)}"
            for key in sorted(set(given) & set(expected))
            if tuple(given[key].shape) != tuple(expected[key].shape)
        ]
        if shapes
        else []
    )
    problems = []
    if missing:
        problems.append(f"missing from {source}: {summarize_names(missing)}")
    if unexpected:
        problems.append(f"not in {target}: {summarize_names(unexpected)}")
    if mismatched:
        limit = 0 if missing or unexpected else 2
        problems.append(f"shape mismatches: {summarize_names(mismatched, limit=limit)}")
    return "; ".join(problems)


def shorten(text: str, lines: int = 2, width: int = 300) -> str:
    """The first ``lines`` lines of ``text`` on one line, cut at ``width`` characters (a library's
    error message that may list every tensor, e.g. ``load_state_dict``'s)."""
    all_lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    short = " ".join(all_lines[:lines])
    if len(short) > width:
        short = short[:width].rstrip() + " ..."
    if len(all_lines) > lines:
        short += f" (+{len(all_lines) - lines} more lines)"
    return short
