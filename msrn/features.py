"""Label features and label statistics from files (docs/design.md sections 1 and 8).

Three file formats are read:

* a GloVe text file (``word v1 ... vD`` per line, e.g. ``glove.6B.300d.txt`` or
  ``glove.840B.300d.txt``, optionally gzip-compressed; a word2vec ``count dim`` header is skipped):
  streamed line by line, only the vectors of the label words are kept, so even the 5.6 GB Common
  Crawl file costs a few megabytes of memory;
* our ``.npz`` layout (``names``, ``label_counts``, ``cooccurrence``, ``glove``), as in
  ``shared/data/official/*_label_graph.npz``; read with ``allow_pickle=False``;
* the authors' pickles: ``*_glove_word2vec.pkl`` (a numpy array ``[n, 300]``) and ``*_adj.pkl``
  (a dict ``{'adj': co-occurrence [n, n], 'nums': counts [n]}``). A pickle can run arbitrary code
  when loaded, so they go through a restricted unpickler that rebuilds numpy arrays and plain
  containers only and refuses anything else (:func:`load_official_pickle`).

Label names to GloVe words (the rule of :func:`label_features_from_glove`):

1. A name is split into words at spaces, underscores, hyphens and slashes
   (``"dining table"``, ``"dining_table"`` -> ``dining``, ``table``).
2. A word is looked up as written, then in lower case.
3. A word that is not in the file is split into the fewest pieces (each at least two characters)
   that all are in the file, preferring the longest first piece on ties
   (``"diningtable"`` -> ``dining`` + ``table``, ``"tvmonitor"`` -> ``tv`` + ``monitor``).
   A word that is in the file is never split (``"motorbike"`` stays one word).
4. The feature of a name is the mean of its words' vectors.

A word that can be neither found nor split is an error naming the word and its label; pass
``aliases={"label": "replacement words"}`` to spell such a label differently.
"""

import _compat_pickle
import gzip
import io
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

__all__ = [
    "label_features_from_glove",
    "glove_words",
    "load_label_graph_npz",
    "load_official_pickle",
    "load_label_features",
    "load_label_statistics",
    "UnsafePickleError",
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_WORD_SEPARATORS = re.compile(r"[\s_\-/]+")
_MIN_PIECE = 2
_MAX_PIECES = 3
_NPZ_KEYS = ("names", "label_counts", "cooccurrence", "glove")


# ------------------------------------------------------------------------------------- GloVe
def _name_words(name: str) -> list[str]:
    words = [w for w in _WORD_SEPARATORS.split(str(name).strip()) if w]
    if not words:
        raise ValueError(f"Label name {name!r} has no words to look up in GloVe.")
    return words


def _forms(word: str) -> list[str]:
    return [word] if word == word.lower() else [word, word.lower()]


def _candidate_tokens(word: str) -> set[str]:
    """Every token the rule may look up for ``word``: its forms and all their substrings long
    enough to be a piece (a few hundred at most for a label word)."""
    tokens: set[str] = set()
    for form in _forms(word):
        tokens.add(form)
        for start in range(len(form)):
            for stop in range(start + _MIN_PIECE, len(form) + 1):
                tokens.add(form[start:stop])
    return tokens


def _split_into_known(word: str, known: set[str]) -> list[str] | None:
    """The fewest pieces (>= 2 characters each, at most ``_MAX_PIECES``) of ``word`` that are all in
    ``known``; among splits into as many pieces, the longest first piece (then second) wins.
    ``None`` when there is no such split."""

    def split(rest: str, count: int) -> list[str] | None:
        if count == 1:
            return [rest] if len(rest) >= _MIN_PIECE and rest in known else None
        for stop in range(len(rest) - _MIN_PIECE * (count - 1), _MIN_PIECE - 1, -1):
            if rest[:stop] in known:
                tail = split(rest[stop:], count - 1)
                if tail:
                    return [rest[:stop], *tail]
        return None

    for count in range(2, _MAX_PIECES + 1):
        pieces = split(word, count)
        if pieces:
            return pieces
    return None


def _open_text(path: PathLike) -> io.TextIOBase:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GloVe file {path!r} does not exist.")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _read_glove_vectors(
    path: PathLike, wanted: set[str], sufficient: set[str]
) -> tuple[dict[str, np.ndarray], int]:
    """Stream ``path`` once and keep the vectors of the tokens in ``wanted`` (first occurrence).
    Reading stops early once every token of ``sufficient`` is found (nothing later can change the
    result then)."""
    vectors: dict[str, np.ndarray] = {}
    pending = set(sufficient)
    dim = 0
    with _open_text(path) as lines:
        for line_number, line in enumerate(lines, start=1):
            head, _, _ = line.partition(" ")
            if not dim:
                fields = line.split()
                if len(fields) == 2 and all(field.isdigit() for field in fields):
                    dim = int(fields[1])  # word2vec text format: a "count dim" header line
                    continue
                dim = len(line.rstrip().split(" ")) - 1
                if dim < 1:
                    raise ValueError(f"{os.fspath(path)!r} line 1 is not 'word v1 ... vD': not GloVe text.")
            if head not in wanted or head in vectors:
                # glove.840B has a few tokens with spaces in them; their first field is never a
                # label word on its own, so this shortcut skips them as it should.
                continue
            parts = line.rstrip().split(" ")
            if len(parts) - 1 != dim:
                word = " ".join(parts[:-dim])
                if word not in wanted or word in vectors:
                    continue
                parts = [word] + parts[-dim:]
            try:
                vectors[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
            except ValueError as error:
                raise ValueError(
                    f"{os.fspath(path)!r} line {line_number}: the vector of {parts[0]!r} is not "
                    f"{dim} numbers ({error}); is this a GloVe text file?"
                ) from None
            pending.discard(parts[0])
            if not pending:
                break
    if not dim:
        raise ValueError(f"GloVe file {os.fspath(path)!r} is empty.")
    return vectors, dim


def glove_words(
    names: Sequence[str], vocabulary: Iterable[str], aliases: Mapping[str, str] | None = None
) -> list[list[str]]:
    """The GloVe words each label name maps to under the module's rule, given the file's vocabulary
    (only membership is used). Raises ``ValueError`` naming every word that cannot be resolved."""
    known = vocabulary if isinstance(vocabulary, (set, frozenset, dict)) else set(vocabulary)
    aliases = dict(aliases or {})
    result: list[list[str]] = []
    missing: list[str] = []
    for name in names:
        words: list[str] = []
        for word in _name_words(aliases.get(name, name)):
            form = next((f for f in _forms(word) if f in known), None)
            if form is not None:
                words.append(form)
                continue
            pieces = None
            for candidate in _forms(word):
                pieces = _split_into_known(candidate, known)
                if pieces:
                    break
            if pieces:
                words.extend(pieces)
            else:
                missing.append(f"{word!r} (label {name!r})")
        result.append(words)
    if missing:
        raise ValueError(
            f"No GloVe vector for {', '.join(missing)}: the word is not in the file and cannot be split into "
            f"words that are. Spell the label differently with aliases={{'label': 'other words'}}."
        )
    return result


def label_features_from_glove(
    path: PathLike, names: Sequence[str], aliases: Mapping[str, str] | None = None
) -> torch.Tensor:
    """Label features ``[n, D]`` (float32) from a GloVe text file, one row per name.

    The file is streamed once; a multi-word or compound name is the mean of its words' vectors (the
    rule is in the module docstring). ``aliases`` maps a label name to the words to use instead.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a word is missing from the file (named in the message), or the file is not GloVe.
    """
    names = [str(name) for name in names]
    if not names:
        raise ValueError("label_features_from_glove needs at least one label name.")
    aliases = dict(aliases or {})
    wanted: set[str] = set()
    as_written: set[str] = set()  # once these are all found, rule 2 never looks further
    for name in names:
        for word in _name_words(aliases.get(name, name)):
            wanted |= _candidate_tokens(word)
            as_written.add(word)
    vectors, dim = _read_glove_vectors(path, wanted, as_written)
    words = glove_words(names, vectors, aliases)
    features = np.stack([np.mean([vectors[w] for w in ws], axis=0) for ws in words]).astype(np.float32)
    for name, ws in zip(names, words, strict=True):
        if ws != [name]:
            _logger.info("GloVe feature of %r = mean of %s", name, ws)
    return torch.from_numpy(features)


# ------------------------------------------------------------------------------- our .npz
def load_label_graph_npz(path: PathLike) -> dict[str, Any]:
    """Read our label-statistics ``.npz`` (no pickles allowed inside).

    Returns:
        ``{"names": list of n str, "label_counts": int64 [n], "cooccurrence": int64/float [n, n],
        "glove": float32 [n, F] or None}``; ``names`` and ``glove`` may be absent from the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Label statistics file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            content = {key: archive[key] for key in archive.files}
    except ValueError as error:
        raise ValueError(
            f"{path!r} is not a plain .npz archive (object arrays are refused): {error}"
        ) from None
    unknown = sorted(set(content) - set(_NPZ_KEYS))
    if unknown:
        _logger.info("%s: ignoring keys %s", path, unknown)
    result: dict[str, Any] = {"names": None, "label_counts": None, "cooccurrence": None, "glove": None}
    if "names" in content:
        result["names"] = [str(name) for name in content["names"].reshape(-1)]
    if "label_counts" in content:
        result["label_counts"] = content["label_counts"].reshape(-1)
    if "cooccurrence" in content:
        result["cooccurrence"] = content["cooccurrence"]
    if "glove" in content:
        result["glove"] = content["glove"].astype(np.float32)
    sizes = {key: _leading_size(key, value) for key, value in result.items() if value is not None}
    if not sizes:
        raise ValueError(f"{path!r} has none of the keys {list(_NPZ_KEYS)}.")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{path!r}: the arrays disagree on the number of labels: {sizes}.")
    cooccurrence = result["cooccurrence"]
    if cooccurrence is not None and cooccurrence.shape != (sizes["cooccurrence"],) * 2:
        raise ValueError(f"{path!r}: cooccurrence must be [n, n], got {list(cooccurrence.shape)}.")
    return result


def _leading_size(key: str, value: Any) -> int:
    if key == "names":
        return len(value)
    if key == "glove" and np.ndim(value) != 2:
        raise ValueError(f"glove must be a [n, F] matrix, got shape {list(np.shape(value))}.")
    return int(np.shape(value)[0])


# --------------------------------------------------------------------------- restricted pickle
class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than numpy arrays and plain containers."""


def _numpy_internals() -> dict[tuple[str, str], Any]:
    # numpy 2 moved numpy.core to numpy._core; a pickle names the module of the numpy that wrote it.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    return allowed


def _safe_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    allowed = _numpy_internals()
    allowed[("_codecs", "encode")] = _codecs.encode  # protocol-2 pickles store bytes through it
    allowed[("builtins", "set")] = set
    allowed[("builtins", "frozenset")] = frozenset
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, numpy scalars and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__, copy_reg, ...) mapped as the default unpickler maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _safe_globals().get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: this pickle asks for an object other than numpy "
                f"arrays and plain containers (loading it could run code). Convert the file to .npz "
                f"where it came from."
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids: not a plain numpy/container pickle.")


def _check_plain(value: Any, where: str = "the pickle") -> None:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise UnsafePickleError(f"{where} holds an object array; only numeric arrays are accepted.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_plain(item, where)
    elif not isinstance(value, (str, bytes, int, float, complex, bool, type(None), np.generic)):
        raise UnsafePickleError(f"{where} holds a {type(value).__name__}; only arrays and containers load.")


def load_official_pickle(path: PathLike) -> Any:
    """Load one of the authors' pickles (``*_glove_word2vec.pkl``, ``*_adj.pkl``) safely.

    Only numpy arrays (numeric dtypes), numpy scalars, and ``dict``/``list``/``tuple``/``set`` of
    numbers and strings are rebuilt; any other object (which a pickle could use to run code) raises
    :class:`UnsafePickleError` before it is created. Python 2 pickles are read with latin-1 strings.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Pickle file {path!r} does not exist.")
    with open(path, "rb") as handle:
        try:
            value = _RestrictedUnpickler(handle, encoding="latin1").load()
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise ValueError(
                f"{path!r} is not a readable pickle of numpy arrays ({type(error).__name__}: {error})."
            ) from None
    _check_plain(value, os.path.basename(path))
    return value


# ------------------------------------------------------------------------------ dispatchers
def _kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith((".pkl", ".pickle")):
        return "pickle"
    return "glove"


def _select_rows(
    array: np.ndarray, file_names: list[str] | None, names: Sequence[str] | None, path: str
) -> np.ndarray:
    if names is None:
        return array
    names = [str(name) for name in names]
    if file_names is None:
        if len(names) != array.shape[0]:
            raise ValueError(f"{path!r} has {array.shape[0]} rows but {len(names)} label names were given.")
        return array
    missing = [name for name in names if name not in file_names]
    if missing:
        raise ValueError(f"{path!r} has no labels {missing}; its labels are {file_names}.")
    return array[[file_names.index(name) for name in names]]


def load_label_features(
    path: PathLike, names: Sequence[str] | None = None, aliases: Mapping[str, str] | None = None
) -> torch.Tensor:
    """Label features ``[n, F]`` (float32) from a GloVe text file, our ``.npz`` or an authors' pickle.

    The file type is taken from the extension: ``.npz`` (the ``glove`` array; with ``names``, its rows
    are picked and ordered by name), ``.pkl``/``.pickle`` (a ``[n, F]`` array through the restricted
    unpickler; ``names`` only checks the row count), anything else a GloVe text file (``names``
    required; see :func:`label_features_from_glove`).
    """
    path = os.fspath(path)
    kind = _kind(path)
    if kind == "glove":
        if names is None:
            raise ValueError(f"Reading label features from the GloVe text file {path!r} needs label names.")
        return label_features_from_glove(path, names, aliases)
    if kind == "npz":
        content = load_label_graph_npz(path)
        if content["glove"] is None:
            raise ValueError(f"{path!r} has no 'glove' array of label features.")
        features = _select_rows(content["glove"], content["names"], names, path)
    else:
        features = load_official_pickle(path)
        if isinstance(features, dict):
            raise ValueError(
                f"{path!r} holds a dict with keys {sorted(map(str, features))}, not a [n, F] feature matrix; "
                f"is this the adjacency pickle (pass it as the graph, not the features)?"
            )
        features = np.asarray(features)
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
            raise ValueError(
                f"{path!r} must hold a numeric [n, F] matrix, got {features.dtype} {list(features.shape)}."
            )
        features = _select_rows(features, None, names, path)
    features = np.asarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"{path!r}: the label features contain NaN or infinite values.")
    return torch.from_numpy(np.ascontiguousarray(features))


def load_label_statistics(
    path: PathLike, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(cooccurrence [n, n], counts [n], names or None)`` from our ``.npz`` or an authors'
    ``*_adj.pkl`` (``{'adj': ..., 'nums': ...}``), for :func:`msrn.graph.label_graph_from_statistics`.
    With ``names`` and an ``.npz`` that has names, rows and columns are picked and ordered by name."""
    path = os.fspath(path)
    kind = _kind(path)
    if kind == "npz":
        content = load_label_graph_npz(path)
        if content["cooccurrence"] is None or content["label_counts"] is None:
            raise ValueError(f"{path!r} needs both 'cooccurrence' and 'label_counts' for a label graph.")
        cooccurrence, counts, file_names = content["cooccurrence"], content["label_counts"], content["names"]
        if names is not None and file_names is not None:
            index = [file_names.index(n) for n in _checked_names(names, file_names, path)]
            return cooccurrence[np.ix_(index, index)], counts[index], [str(n) for n in names]
    elif kind == "pickle":
        content = load_official_pickle(path)
        if not isinstance(content, dict) or not {"adj", "nums"} <= set(content):
            found = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
            raise ValueError(
                f"{path!r} must hold a dict with 'adj' and 'nums' (the authors' *_adj.pkl), got {found}."
            )
        cooccurrence, counts, file_names = np.asarray(content["adj"]), np.asarray(content["nums"]), None
    else:
        raise ValueError(f"{path!r}: label statistics come from an .npz or an authors' *_adj.pkl file.")
    counts = counts.reshape(-1)
    if cooccurrence.ndim != 2 or cooccurrence.shape != (counts.shape[0],) * 2:
        raise ValueError(
            f"{path!r}: co-occurrence {list(cooccurrence.shape)} and counts {list(counts.shape)} must be "
            f"[n, n] and [n]."
        )
    if names is not None and len(names) != counts.shape[0]:
        raise ValueError(f"{path!r} has statistics for {counts.shape[0]} labels but {len(names)} names.")
    return cooccurrence, counts, file_names


def _checked_names(names: Sequence[str], file_names: list[str], path: str) -> list[str]:
    missing = [str(n) for n in names if str(n) not in file_names]
    if missing:
        raise ValueError(f"{path!r} has no labels {missing}; its labels are {file_names}.")
    return [str(n) for n in names]
