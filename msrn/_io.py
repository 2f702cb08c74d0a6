"""File writing shared by the hub, the trainer and the converter, JSON that other programs can read, and
JSON files read with a bound on their size."""

import json
import math
import os
import pathlib
import secrets
import shutil
import stat
from collections.abc import Callable
from typing import Any, Union

__all__ = [
    "atomic_write",
    "replace_folder",
    "remove_partial_writes",
    "to_json",
    "finite_or_none",
    "read_json_file",
]

PathLike = Union[str, "os.PathLike[str]"]

# Suffixes of what a killed write leaves behind: a temporary file of atomic_write, a folder being
# written by replace_folder, and the previous folder during its swap.
_TEMPORARY_SUFFIX = ".tmp"
_OLD_SUFFIX = ".old"


def _temporary_name(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}")


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk and move it onto ``path`` in one ``os.replace``.

    A crash in the middle leaves the previous file (or no file) under ``path``, never a truncated one.
    The parent folder is created when missing. The file gets the permissions of any new file (``0666``
    less the umask, usually ``0644``), not the ``0600`` of :func:`tempfile.mkstemp`. An ``OSError``
    while writing (a full disk, no permission) is raised again as an ``OSError`` whose message names
    ``path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = stat.S_IMODE(os.stat(temporary).st_mode)  # 0666 less the umask
    try:
        write(str(temporary))
        os.chmod(temporary, mode)  # a writer that re-creates the file (safetensors does) may narrow it
        with open(temporary, "rb") as flushed:
            os.fsync(flushed.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            reason = error.strerror or str(error)
            raise OSError(
                error.errno,
                f"Cannot write {path}: {reason} (nothing was replaced; free some "
                f"space or choose another folder)",
            ) from error
        raise


def replace_folder(path: PathLike, write: Callable[[pathlib.Path], None]) -> None:
    """Fill a new folder with ``write(folder)``, then put it in place of ``path`` as a whole.

    The new folder is written next to ``path`` under a hidden temporary name; only when ``write``
    has returned is the old ``path`` renamed aside, the new one renamed to ``path``, and the old one
    deleted. A reader therefore never sees a mix of old and new files; a crash leaves either the old
    folder or the new one (or, between the two renames, the old one under ``.NAME.old``, which
    :func:`remove_partial_writes` puts back).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    os.mkdir(temporary)
    try:
        write(temporary)
        old = path.with_name(f".{path.name}{_OLD_SUFFIX}")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.rename(path, old)
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_partial_writes(folder: PathLike) -> list[str]:
    """Undo what a killed :func:`atomic_write` or :func:`replace_folder` left in ``folder``.

    Temporary files and half-written folders are deleted; a folder caught between the two renames of
    :func:`replace_folder` gets its previous version back. Returns the names that were removed or
    restored.
    """
    folder = pathlib.Path(folder)
    cleaned = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = entry.name
        if not name.startswith("."):
            continue
        if name.endswith(_TEMPORARY_SUFFIX):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            cleaned.append(name)
        elif name.endswith(_OLD_SUFFIX) and entry.is_dir():
            target = folder / name[1 : -len(_OLD_SUFFIX)]
            if target.exists():
                shutil.rmtree(entry)
            else:
                os.rename(entry, target)
            cleaned.append(name)
    return cleaned


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def to_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes ``null`` for NaN and infinities (which strict JSON readers reject)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def read_json_file(path: PathLike, limit: int, advice: str = "") -> Any:
    """The parsed contents of the JSON file ``path``, read bounded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, a device, FIFO or socket, a file over ``limit`` bytes, text that is not
            UTF-8 JSON, or JSON nested too deeply to parse; ``advice`` (what to do about the file)
            ends the message.
    """
    try:
        return _read_json_file(str(path), limit)
    except ValueError as error:
        if not advice:
            raise
        raise ValueError(f"{str(error).rstrip('.')}; {advice}.") from error


def _read_json_file(path: str, limit: int) -> Any:
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a JSON file.")
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused just below).
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(
                f"{path} is not a regular file (a device, FIFO or socket, or a link to one); give the "
                f"JSON file itself."
            )
        if info.st_size > limit:
            raise ValueError(
                f"{path} is {info.st_size} bytes, more than the {limit} this JSON file may hold; is it the "
                f"right file?"
            )
        data = handle.read(limit + 1)  # bounded even if the file grows meanwhile
    if len(data) > limit:
        raise ValueError(f"{path} holds more than the {limit} bytes this JSON file may hold.")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    except RecursionError:
        raise ValueError(
            f"{path} is not a usable JSON file: its lists or objects are nested too deeply to read."
        ) from None
